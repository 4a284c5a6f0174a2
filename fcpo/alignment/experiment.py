"""One preference-alignment experiment: SFT, then DPO, S-DPO or SPRec, evaluated and written to a run folder.

Every method starts from the same SFT model; DPO/S-DPO use it as the reference, SPRec as its
first player.  The item backbone is a GRU item-softmax (:class:`fcpo.policies.sequential.SequentialPolicy`);
the LM backbone (:class:`fcpo.llm.TextPolicy`) learns one sample per user (the last train target
of a random ``max_train_users`` subset); its SFT, DPO and S-DPO prompts list the sample's
candidates (S-DPO), its SPRec iterations use the open prompt (SPRec), whose greedy or sampled
answer, grounded to the catalogue, is the self-play negative.  The LM sees every prompt through
its own chat template when it has one (``chat=None``), its candidate titles are scored in packed
batches of ``score_batch_size`` prompts, generation and trie decoding run ``gen_batch_size``
prompts at a time, on ``device`` (cpu | cuda).

Evaluation on the test split (history = ``split.test_initial``): the ``"sdpo-candidates"`` and
``"sprec-topk"`` protocols of :mod:`fcpo.evaluate.candidates`; for the LM, the free answers
(``hr1``, ``valid_ratio``) and the trie-constrained ones (``hr1_trie``, ``valid_ratio_trie``) are
reported apart, every proportion with a 95 % Wilson interval (:mod:`fcpo.alignment.evaluation`).

The run folder (through :mod:`fcpo.runs`, never over an existing one) holds ``config.yaml``
(the resolved config, with the absolute data path and the environment), ``log.jsonl`` (one
record per training step and evaluation), ``tensorboard/``, ``checkpoint.pt`` (the SFT model:
:func:`resume` restarts from it), ``metrics.json``, ``training_curves.png`` and, for the item
backbone, ``policy.pt``.
"""
from __future__ import annotations

import re
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from fcpo import runs
from fcpo.alignment.config import TrainConfig

# torch, the trainers, the data and the policies load on first use (fcpo-align --help stays fast)
if TYPE_CHECKING:
    from fcpo.alignment.data import PreferenceData
    from fcpo.data import EpisodeSplit
    from fcpo.policies.base import Policy

METHODS = ("sft", "dpo", "sdpo", "sprec")
BACKBONES = ("item", "lm")
TRAIN_STAGES = ("sft", "pref", "sprec_sft", "sprec_dpo")


@dataclass
class AlignConfig:
    """Everything a run needs; saved as ``config.yaml`` so the run can be repeated."""

    method: str = "sdpo"
    backbone: str = "item"  # item | lm
    dataset: str = "ml-100k"
    data_dir: str | None = None
    n_initial: int = 5
    threshold: float = 4.0
    train_ratio: float = 0.8
    seed: int = 0
    n_candidates: int = 20
    negatives: int = 3  # S-DPO's M (DPO always uses 1)
    ks: tuple = (5, 10)
    max_train_users: int | None = None  # LM: one sample (the last train target) per user of a random subset
    max_test_users: int | None = None
    # item backbone
    dim: int = 64
    # language-model backbone
    model: str = "tiny"  # "tiny" | "smollm2" | a local folder / .gguf / cached model name
    lora: bool = False
    lora_r: int = 8
    chat: bool | None = None  # None: the model's chat template when its tokenizer has one (the tiny GPT-2 gets one)
    device: str = "cpu"  # LM backbone: cpu | cuda | cuda:N
    score_batch_size: int = 4  # LM: prompts per packed candidate-scoring pass
    gen_batch_size: int = 16  # LM: prompts per generation / trie-decoding batch
    trie_eval: bool = True  # LM: also evaluate trie-constrained answers (hr1_trie, valid_ratio_trie)
    eval_protocols: tuple = ("sdpo-candidates", "sprec-topk")
    # training stages
    sft: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=5, batch_size=256, lr=3e-3))
    pref: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=1, batch_size=256, lr=1e-3, beta=1.0))
    sprec_iterations: int = 3
    sprec_negatives: str = "greedy"  # greedy (authors' code) | sample (paper)
    sprec_samples: int | None = None
    sprec_sft: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=1, batch_size=256, lr=1e-4))
    sprec_dpo: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=1, batch_size=256, lr=3e-5, beta=1.0))
    threads: int | None = None
    name: str | None = None
    runs_dir: str = "runs"
    environment: dict | None = None  # versions and git commit, recorded when the run folder is created

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {', '.join(METHODS)}, got {self.method!r}")
        if self.backbone not in BACKBONES:
            raise ValueError(f"backbone must be 'item' or 'lm', got {self.backbone!r}")
        if self.sprec_negatives not in ("greedy", "sample"):
            raise ValueError(f"sprec_negatives must be 'greedy' or 'sample', got {self.sprec_negatives!r}")
        if not 1 <= self.negatives < self.n_candidates:
            raise ValueError(f"negatives must lie in 1..n_candidates-1={self.n_candidates - 1}, got {self.negatives}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be >= 1, got {self.threads}")
        self.ks = tuple(int(k) for k in self.ks)
        if not self.ks or min(self.ks) < 1:
            raise ValueError(f"ks must be positive cut-offs, got {self.ks}")
        if not re.fullmatch(r"cpu|cuda(:\d+)?", str(self.device)):
            raise ValueError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {self.device!r}")
        if self.backbone == "item" and self.device != "cpu":
            raise ValueError(f"device {self.device!r}: only the lm backbone runs on a GPU (the item backbone is "
                             f"evaluated on the CPU)")
        if self.score_batch_size < 1 or self.gen_batch_size < 1:
            raise ValueError(f"score_batch_size and gen_batch_size must be >= 1, got {self.score_batch_size}, "
                             f"{self.gen_batch_size}")
        self.eval_protocols = tuple(str(p) for p in self.eval_protocols)
        known = ("sdpo-candidates", "sprec-topk")
        if not self.eval_protocols or set(self.eval_protocols) - set(known):
            raise ValueError(f"eval_protocols must be a non-empty subset of {known}, got {self.eval_protocols}")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["ks"] = list(self.ks)
        d["eval_protocols"] = list(self.eval_protocols)
        if d["environment"] is None:
            del d["environment"]
        return d

    def default_name(self) -> str:
        return f"align-{self.method}-{self.backbone}-{self.dataset}-{time.strftime('%Y%m%d-%H%M%S')}"


def config_from_dict(values: dict, where: str = "align config") -> AlignConfig:
    """Rebuild a config from a saved ``config.yaml`` (to repeat or resume a run); unknown keys are an error."""
    if not isinstance(values, dict):
        raise ValueError(f"{where}: expected a mapping at the top level")
    values = dict(values)
    known = {f.name for f in fields(AlignConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}; valid keys: {sorted(known)}")
    try:
        for key in TRAIN_STAGES:
            if isinstance(values.get(key), dict):
                values[key] = TrainConfig(**values[key])
        return AlignConfig(**values)
    except TypeError as exc:
        raise ValueError(f"{where}: {exc}") from None


# ------------------------------------------------------------ experiment
@dataclass
class Context:
    config: AlignConfig
    data: object
    split: EpisodeSplit
    train: PreferenceData  # next-item samples (no candidates)
    test: PreferenceData  # one sample per test user, with candidate lists
    policy: Policy


def _rows_subset(n: int, limit: int | None, seed: int) -> np.ndarray | None:
    if limit is None or limit >= n:
        return None
    return np.sort(np.random.default_rng(seed).choice(n, limit, replace=False))


def build_policy(config: AlignConfig, data) -> Policy:
    """The untrained policy: the GRU item-softmax, or a :class:`fcpo.llm.TextPolicy` over the LM.

    The LM is prompted through its own chat template when its tokenizer has one (``config.chat``
    None; SmolLM2-Instruct's comes from the GGUF metadata) with the S-DPO question
    (:data:`fcpo.llm.CHAT_TEMPLATE`); the tiny GPT-2 gets :data:`fcpo.llm.TINY_CHAT_TEMPLATE` so the
    offline runs take the same path.  Candidate titles are scored by the packed (tree-attention) pass.
    """
    if config.backbone == "item":
        from fcpo.policies.sequential import SequentialPolicy

        return SequentialPolicy(data.n_items, config.dim, seed=config.seed)
    import torch

    from fcpo.llm import (CHAT_TEMPLATE, TINY_CHAT_TEMPLATE, PromptTemplate, TextPolicy, apply_lora, build_tiny_lm,
                          load_causal_lm)

    if config.device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device {config.device!r} requested but torch.cuda.is_available() is False "
                           f"(torch {torch.__version__}); use --device cpu")
    if config.model == "tiny":
        plain = PromptTemplate()
        words = [plain.build(["x"], ["y"]), plain.build(["x"]), CHAT_TEMPLATE.question_text(["x"], ["y"]),
                 CHAT_TEMPLATE.question_text(["x"]), "user: assistant: system:"]
        model, tok = build_tiny_lm(data.item_titles, words, seed=config.seed)
        if config.chat is not False:
            tok.chat_template = TINY_CHAT_TEMPLATE
    else:
        model, tok = load_causal_lm(config.model)
    if config.lora:
        model = apply_lora(model, r=config.lora_r, alpha=2 * config.lora_r)
    return TextPolicy(model, tok, data.item_titles, chat=config.chat, device=config.device,
                      score_batch_size=config.score_batch_size, gen_batch_size=config.gen_batch_size)


def lm_description(policy) -> dict:
    """What the LM backbone ran with: chat template or not, scoring path, device, trainable share, one prompt."""
    trainable = sum(p.numel() for p in policy.parameters() if p.requires_grad)
    total = sum(p.numel() for p in policy.parameters())
    return {"chat": policy.chat, "scoring": policy.scoring, "device": str(policy.device),
            "score_batch_size": policy.score_batch_size, "gen_batch_size": policy.gen_batch_size,
            "trainable_parameters": trainable, "parameters": total,
            "prompt_example": policy.prompt([0, 1], [2, 3])}


def prepare(config: AlignConfig) -> Context:
    """Load the data, split it, build the samples and the (untrained) policy."""
    import torch

    from fcpo.alignment.data import next_item_samples, with_candidates
    from fcpo.data import fcpo_split, load_dataset

    runs.set_threads(config.threads)
    data = load_dataset(config.dataset, config.data_dir)
    split = fcpo_split(data, n_initial=config.n_initial, threshold=config.threshold, train_ratio=config.train_ratio)
    train_rows = _rows_subset(split.n_episode_users, config.max_train_users, config.seed)
    per_user = "last" if config.backbone == "lm" else "all"
    train = next_item_samples(split, "train", per_user=per_user, rows=train_rows)
    test_rows = _rows_subset(split.n_episode_users, config.max_test_users, config.seed + 1)
    test = next_item_samples(split, "test", per_user="first", rows=test_rows)
    test = with_candidates(test, split, config.n_candidates, seed=config.seed + 100)
    torch.manual_seed(config.seed)
    return Context(config, data, split, train, test, build_policy(config, data))


def evaluate(ctx: Context, policy) -> dict:
    """Both candidate protocols on ``ctx.test`` (and, for the LM, trie-constrained answers), with 95 %
    intervals, as JSON values (:func:`fcpo.alignment.evaluation.evaluate_alignment`)."""
    from fcpo.alignment.evaluation import evaluate_alignment

    cfg = ctx.config
    return runs.jsonable(evaluate_alignment(policy, ctx.test, ctx.split, ctx.data.item_titles, ctx.data.item_genres,
                                            ks=cfg.ks, protocols=cfg.eval_protocols,
                                            trie=cfg.trie_eval and cfg.backbone == "lm"))


def _stage_config(base: TrainConfig, seed: int) -> TrainConfig:
    return TrainConfig(**{**base.to_dict(), "seed": seed})


def run_sft(ctx: Context, log=None) -> dict:
    """Train ``ctx.policy`` by SFT (the LM sees the S-DPO candidate prompt); returns timing."""
    from fcpo.alignment.data import with_candidates
    from fcpo.alignment.trainer import train_sft

    cfg = ctx.config
    data = ctx.train
    if cfg.backbone == "lm":
        data = with_candidates(data, ctx.split, cfg.n_candidates, seed=cfg.seed + 10)
    t0 = time.perf_counter()
    train_sft(ctx.policy, data, _stage_config(cfg.sft, cfg.seed), log=log)
    return {"sft_seconds": time.perf_counter() - t0, "sft_samples": len(data)}


def run_method(ctx: Context, policy, method: str, negatives: int | None = None, log=None,
               evaluate_iterations: bool = True, initial_eval: dict | None = None) -> dict:
    """Align the SFT ``policy`` in place with ``method`` (sft | dpo | sdpo | sprec); returns its records.

    SPRec evaluates after every iteration (``evaluate_iterations``); ``initial_eval`` (the SFT
    model's evaluation, if already computed) is reused for iteration 0."""
    from fcpo.alignment.data import with_candidates
    from fcpo.alignment.sprec import SPRecConfig, run_sprec
    from fcpo.alignment.trainer import train_preference

    cfg = ctx.config
    t0 = time.perf_counter()
    out: dict = {"method": method}
    if method == "sft":
        pass
    elif method in ("dpo", "sdpo"):
        m = 1 if method == "dpo" else (negatives or cfg.negatives)
        data = with_candidates(ctx.train, ctx.split, cfg.n_candidates, m, seed=cfg.seed + 10)
        reference = policy.snapshot()
        recs = train_preference(policy, reference, data, _stage_config(cfg.pref, cfg.seed + 1), method, log=log,
                                stage=f"{method}{m}")
        out.update(negatives=m, final_loss=float(np.mean([r["loss"] for r in recs[-10:]])),
                   reward_accuracy=float(np.mean([r["reward_accuracy"] for r in recs[-10:]])))
    elif method == "sprec":
        sp_cfg = SPRecConfig(iterations=cfg.sprec_iterations, negatives=cfg.sprec_negatives,
                             samples_per_iteration=cfg.sprec_samples, seed=cfg.seed,
                             sft=_stage_config(cfg.sprec_sft, cfg.seed + 2),
                             dpo=_stage_config(cfg.sprec_dpo, cfg.seed + 3))

        def hook(t, p):
            return {"eval": initial_eval if t == 0 and initial_eval is not None else evaluate(ctx, p)}

        out["iterations"] = run_sprec(policy, ctx.train, sp_cfg, log=log,
                                      on_iteration=hook if evaluate_iterations else None)
        out["sprec"] = sp_cfg.to_dict()
    else:
        raise ValueError(f"unknown method {method!r}")
    out["train_seconds"] = time.perf_counter() - t0
    return runs.jsonable(out)


# ------------------------------------------------------------ run folder
class RunRecorder:
    """The ``log`` callback of the trainers: one ``log.jsonl`` line, TensorBoard scalars and a progress bar."""

    def __init__(self, folder: Path | None, progress: bool = False, tensorboard: bool = True):
        from tqdm import tqdm

        self.folder = folder
        self.steps: dict[str, int] = {}
        self.writer = None
        if folder is not None and tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=str(folder / "tensorboard"))
        self.bar = tqdm(desc="align", unit="step", disable=not progress, dynamic_ncols=True, file=sys.stderr)

    def __call__(self, record: dict) -> None:
        if self.folder is not None:
            runs.append_jsonl(self.folder / runs.LOG, record)
        tag = str(record.get("stage", "run")) + (f"/{record['after']}" if "after" in record else "")
        step = self.steps.get(tag, 0)
        self.steps[tag] = step + 1
        if self.writer is not None:
            for key, value in record.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool) and key != "step":
                    self.writer.add_scalar(f"{tag}/{key}", float(value), step)
        self.bar.update(1)
        self.bar.set_postfix_str(tag + (f" loss {record['loss']:.4f}" if "loss" in record else ""))

    def close(self) -> None:
        self.bar.close()
        if self.writer is not None:
            self.writer.close()


def plot_run(folder: Path, records: list[dict], k: int) -> Path | None:
    """``training_curves.png``: the loss of every training stage per step, and SPRec's metrics per iteration."""
    losses: dict[str, list[float]] = {}
    for r in records:
        if "loss" in r:
            losses.setdefault(str(r.get("stage")), []).append(r["loss"])
    sprec = [r for r in records if r.get("stage") == "sprec" and isinstance(r.get("eval"), dict)
             and f"ndcg@{k}" in r["eval"]]
    if not losses:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2 if sprec else 1, figsize=(11 if sprec else 6, 3.6), squeeze=False)
    ax = axes[0, 0]
    offset = 0
    for stage, values in losses.items():
        ax.plot(range(offset, offset + len(values)), values, label=stage)
        offset += len(values)
    ax.set(xlabel="training step (stages in order)", ylabel="loss", title="training loss")
    ax.legend(fontsize=7)
    if sprec:
        ax = axes[0, 1]
        x = [r["iteration"] for r in sprec]
        for key in (f"ndcg@{k}", f"div_ratio@{k}", f"or_ratio@{k}"):
            ax.plot(x, [r["eval"].get(key) for r in sprec], "o-", label=key)
        ax.set(xlabel="SPRec iteration (0 = SFT)", title="SPRec iterations")
        ax.legend(fontsize=7)
    fig.tight_layout()
    path = runs.save_figure(fig, folder / "training_curves.png", dpi=110)
    plt.close(fig)
    return path


def run(config: AlignConfig, progress: bool = False) -> dict:
    """A new run: SFT, then ``config.method``; writes a new run folder and returns metrics.json's content.

    The data path is resolved (to an absolute path) before the folder is created, so a missing
    data set leaves no folder behind; an existing folder is refused (:func:`resume` continues one).
    """
    from fcpo.data import resolve_data_dir

    config.data_dir = str(resolve_data_dir(config.dataset, config.data_dir).resolve())
    name = config.name or config.default_name()
    config.name = name
    folder = runs.create_run(config.runs_dir, name, config)
    return _execute(folder, config, progress)


def resume(run_dir: str | Path, progress: bool = False) -> dict:
    """Continue an interrupted run from its SFT checkpoint (or from scratch when SFT had not finished)."""
    import yaml

    folder = Path(run_dir)
    path = folder / runs.CONFIG
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not an fcpo-align run folder (no {runs.CONFIG})")
    if (folder / runs.METRICS).is_file():
        raise FileExistsError(f"{folder} is complete ({runs.METRICS} exists); start a new run with another --name")
    try:
        values = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not valid YAML ({exc})") from None
    return _execute(folder, config_from_dict(values, where=str(path)), progress)


def _execute(folder: Path, config: AlignConfig, progress: bool) -> dict:
    import torch

    t0 = time.perf_counter()
    ctx = prepare(config)
    ckpt_path = folder / runs.CHECKPOINT
    if ckpt_path.is_file():
        ckpt = runs.load_checkpoint(ckpt_path)
        ctx.policy.load_state_dict(ckpt["policy"])
        _truncate_lines(folder / runs.LOG, int(ckpt["log_lines"]))
        metrics = ckpt["metrics"]
    else:
        _truncate_lines(folder / runs.LOG, 0)
        metrics = None
    log = RunRecorder(folder, progress)
    try:
        if metrics is None:
            metrics = {"run": folder.name, "dataset": config.dataset, "data_dir": config.data_dir,
                       "backbone": config.backbone, "log_prob_kind": ctx.policy.log_prob_kind,
                       "train_samples": len(ctx.train), "test_users": len(ctx.test)}
            if config.backbone == "lm":
                metrics["lm"] = lm_description(ctx.policy)
            metrics.update(run_sft(ctx, log))
            metrics["after_sft"] = evaluate(ctx, ctx.policy)
            log({"stage": "eval", "after": "sft", **metrics["after_sft"]})
            runs.save_checkpoint(ckpt_path, {"stage": "sft", "policy": ctx.policy.state_dict(), "metrics": metrics,
                                             "log_lines": len(runs.read_jsonl(folder / runs.LOG))})
        metrics["method"] = run_method(ctx, ctx.policy, config.method, log=log, initial_eval=metrics["after_sft"])
        metrics["final"] = evaluate(ctx, ctx.policy)
        log({"stage": "eval", "after": config.method, **metrics["final"]})
    finally:
        log.close()
    metrics["seconds"] = time.perf_counter() - t0
    if config.backbone == "item":
        with runs.atomic_output(folder / "policy.pt") as tmp:
            torch.save({"config": ctx.policy.config, "state_dict": ctx.policy.state_dict()}, tmp)
    plot_run(folder, runs.read_jsonl(folder / runs.LOG), max(config.ks))
    runs.write_json(folder / runs.METRICS, metrics)  # last: its presence marks the run complete
    metrics["folder"] = str(folder)
    return metrics


def _truncate_lines(path: Path, keep: int) -> None:
    if not path.is_file():
        return
    lines = path.read_text().splitlines(keepends=True)
    if len(lines) > keep:
        runs.atomic_write(path, "".join(lines[:keep]))
