"""``fcpo-align``: SFT, DPO, S-DPO and SPRec for the item-softmax (GRU) or a language-model backbone.

    fcpo-align --method sdpo --negatives 3 --backbone item --dataset ml-100k --data-dir ../shared/data
    fcpo-align --method sprec --iterations 3 --sprec-negatives greedy --backbone lm --model smollm2 \\
               --max-train-users 64 --max-test-users 64

Every method starts from the same SFT model; DPO/S-DPO use it as the reference, SPRec as its
first player.  The LM backbone learns one sample per user (the last train target of a random
``--max-train-users`` subset); its SFT, DPO and S-DPO prompts list the sample's 20 candidates
(S-DPO), its SPRec iterations use the open prompt without a list (SPRec), whose greedy or
sampled answer, grounded to the catalogue, is the self-play negative.

Evaluation on the test split (history = ``split.test_initial``):

* S-DPO protocol (Chen et al. 2024): one sample per test user (the first test target) with a
  list of 20 candidates (19 random never-rated items + the target, seeded); HR@1 and
  ValidRatio -- for the LM from generated text (the metric's substring rule), and also from
  the candidate-normalised argmax (``hr1_scored``);
* SPRec protocol (Gao et al. 2025): a top-K list over the whole catalogue with the user's
  train items excluded (the LM: greedy answer to the open prompt grounded to the K nearest
  titles; an answer sharing nothing with any title, e.g. empty, recommends nothing: -1 slots,
  misses for NDCG/HR, left out of DivRatio/ORRatio/MGU); NDCG@K and HR@K against all test
  targets, DivRatio@K, ORRatio@K and MGU@K
  (genre distribution of the lists vs the prompt histories, population level).

The run folder ``runs/<name>/`` holds ``config.yaml`` (the resolved config), ``metrics.json``,
``log.jsonl`` (one record per training step and evaluation) and, for the item backbone,
``policy.pt``; files are written to a temporary name and moved into place.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from fcpo.alignment import (
    PreferenceData,
    SPRecConfig,
    TrainConfig,
    history_state,
    next_item_samples,
    run_sprec,
    train_preference,
    train_sft,
    with_candidates,
)
from fcpo.data import EpisodeSplit, fcpo_split, load_dataset
from fcpo.metrics import (
    div_ratio,
    hit_rate_at_k,
    hr_at_1,
    hr_at_1_text,
    mgu_at_k,
    ndcg_at_k,
    or_ratio,
    valid_ratio,
    valid_ratio_text,
)
from fcpo.policies.base import Policy, masked_topk

METHODS = ("sft", "dpo", "sdpo", "sprec")


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

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {', '.join(METHODS)}, got {self.method!r}")
        if self.backbone not in ("item", "lm"):
            raise ValueError(f"backbone must be 'item' or 'lm', got {self.backbone!r}")
        if self.sprec_negatives not in ("greedy", "sample"):
            raise ValueError(f"sprec_negatives must be 'greedy' or 'sample', got {self.sprec_negatives!r}")
        if not 1 <= self.negatives < self.n_candidates:
            raise ValueError(f"negatives must lie in 1..n_candidates-1={self.n_candidates - 1}, got {self.negatives}")
        self.ks = tuple(int(k) for k in self.ks)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["ks"] = list(self.ks)
        return d


# ------------------------------------------------------------------ files
def atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the file the usual permissions
    os.replace(tmp, path)


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, (np.floating, float)):
        return None if not np.isfinite(x) else float(x)
    if isinstance(x, np.integer):
        return int(x)
    return x


class RunLog:
    """Appends JSON lines to ``log.jsonl`` (one per training step / evaluation)."""

    def __init__(self, path: Path | None):
        self.path = path
        self._fh = None
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = open(path, "a")

    def __call__(self, record: dict) -> None:
        if self._fh is not None:
            self._fh.write(json.dumps(_jsonable(record)) + "\n")
            self._fh.flush()

    def close(self):
        if self._fh is not None:
            self._fh.close()


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
    if config.backbone == "item":
        from fcpo.policies.sequential import SequentialPolicy

        return SequentialPolicy(data.n_items, config.dim, seed=config.seed)
    from fcpo.llm import PromptTemplate, TextPolicy, apply_lora, build_tiny_lm, load_causal_lm

    template = PromptTemplate()
    if config.model == "tiny":
        model, tok = build_tiny_lm(data.item_titles, [template.build(["x"], ["y"]), template.build(["x"])],
                                   seed=config.seed)
    else:
        model, tok = load_causal_lm(config.model)
    if config.lora:
        model = apply_lora(model, r=config.lora_r, alpha=2 * config.lora_r)
    return TextPolicy(model, tok, data.item_titles, template)


def prepare(config: AlignConfig) -> Context:
    """Load the data, split it, build the samples and the (untrained) policy."""
    if config.threads:
        torch.set_num_threads(config.threads)
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


@torch.no_grad()
def evaluate(ctx: Context, policy: Policy, batch_size: int = 512) -> dict:
    """Both protocols on ``ctx.test`` (see the module docstring)."""
    cfg, split, test = ctx.config, ctx.split, ctx.test
    t0 = time.perf_counter()
    was_training = policy.training
    policy.eval()
    n, kmax = len(test), max(cfg.ks)
    cands = torch.as_tensor(test.candidates)
    exclude_all = split.train_items().to_mask(split.n_items, test.row)
    pred = np.empty(n, dtype=np.int64)
    top = np.empty((n, kmax), dtype=np.int64)
    out: dict = {}
    is_lm = cfg.backbone == "lm"
    texts: list[str] = []
    open_texts: list[str] = []
    for s in range(0, n, batch_size):
        idx = np.arange(s, min(s + batch_size, n))
        state = history_state(test, idx)
        c = cands[idx]
        lp = policy.item_log_probs(state, c, c, normalize=True) if hasattr(policy, "item_log_probs") else \
            torch.stack([policy.log_prob(state, c[:, j:j + 1], candidates=c) for j in range(c.shape[1])], 1)
        pred[idx] = c.gather(1, lp.argmax(1, keepdim=True))[:, 0].numpy()
        exclude = torch.as_tensor(exclude_all[idx])
        if is_lm:
            texts += policy.generate(state, c)
            gen = policy.generate(state, None)
            open_texts += gen
            top[idx] = policy.index.ground(gen, kmax, exclude.numpy(), missing=True)
        else:
            top[idx] = masked_topk(policy.scores(state), kmax, exclude).numpy()
    titles = ctx.data.item_titles
    if is_lm:
        cand_titles = [[titles[i] for i in row] for row in test.candidates]
        tgt_titles = [titles[i] for i in test.positive]
        out["hr1"] = hr_at_1_text(texts, cand_titles, tgt_titles)
        out["valid_ratio"] = valid_ratio_text(texts, cand_titles)
        out["hr1_scored"] = hr_at_1(pred, test.positive, test.candidates)
        out["examples"] = [{"prompt_history": [titles[i] for i in test.history[j]], "answer": texts[j],
                            "open_answer": open_texts[j], "target": tgt_titles[j]} for j in range(min(3, n))]
    else:
        out["hr1"] = hr_at_1(pred, test.positive, test.candidates)
        out["valid_ratio"] = valid_ratio(pred, test.candidates)
    relevant = split.test_targets.to_mask(split.n_items, test.row)
    for k in cfg.ks:
        out[f"ndcg@{k}"] = ndcg_at_k(top, relevant, k)
        out[f"hr@{k}"] = hit_rate_at_k(top, relevant, k)
        out[f"div_ratio@{k}"] = div_ratio(top, k)
        out[f"or_ratio@{k}"] = or_ratio(top, k)
        out[f"mgu@{k}"] = mgu_at_k(top, test.history, ctx.data.item_genres, k)
    out["n_test_users"] = n
    out["eval_seconds"] = time.perf_counter() - t0
    policy.train(was_training)
    return _jsonable(out)


def _stage_config(base: TrainConfig, seed: int) -> TrainConfig:
    return TrainConfig(**{**base.to_dict(), "seed": seed})


def run_sft(ctx: Context, log=None) -> dict:
    """Train ``ctx.policy`` by SFT (the LM sees the S-DPO candidate prompt); returns timing."""
    cfg = ctx.config
    data = ctx.train
    if cfg.backbone == "lm":
        data = with_candidates(data, ctx.split, cfg.n_candidates, seed=cfg.seed + 10)
    t0 = time.perf_counter()
    train_sft(ctx.policy, data, _stage_config(cfg.sft, cfg.seed), log=log)
    return {"sft_seconds": time.perf_counter() - t0, "sft_samples": len(data)}


def run_method(ctx: Context, policy: Policy, method: str, negatives: int | None = None, log=None,
               evaluate_iterations: bool = True, initial_eval: dict | None = None) -> dict:
    """Align the SFT ``policy`` in place with ``method`` (dpo | sdpo | sprec); returns its records.

    SPRec evaluates after every iteration (``evaluate_iterations``); ``initial_eval`` (the SFT
    model's evaluation, if already computed) is reused for iteration 0."""
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

        hook = hook if evaluate_iterations else None
        out["iterations"] = run_sprec(policy, ctx.train, sp_cfg, log=log, on_iteration=hook)
        out["sprec"] = sp_cfg.to_dict()
    else:
        raise ValueError(f"unknown method {method!r}")
    out["train_seconds"] = time.perf_counter() - t0
    return _jsonable(out)


def run(config: AlignConfig) -> dict:
    """One run: SFT, then ``config.method``; writes the run folder and returns metrics.json's content."""
    name = config.name or f"align-{config.method}-{config.backbone}-{config.dataset}-{time.strftime('%Y%m%d-%H%M%S')}"
    folder = Path(config.runs_dir) / name
    folder.mkdir(parents=True, exist_ok=True)
    import yaml

    atomic_write(folder / "config.yaml", yaml.safe_dump(config.to_dict(), sort_keys=False))
    log = RunLog(folder / "log.jsonl")
    t0 = time.perf_counter()
    try:
        ctx = prepare(config)
        metrics: dict = {"run": name, "dataset": config.dataset, "backbone": config.backbone,
                         "log_prob_kind": ctx.policy.log_prob_kind, "train_samples": len(ctx.train),
                         "test_users": len(ctx.test)}
        metrics.update(run_sft(ctx, log))
        metrics["after_sft"] = evaluate(ctx, ctx.policy)
        log({"stage": "eval", "after": "sft", **metrics["after_sft"]})
        metrics["method"] = run_method(ctx, ctx.policy, config.method, log=log,
                                       initial_eval=metrics["after_sft"])
        metrics["final"] = evaluate(ctx, ctx.policy)
        log({"stage": "eval", "after": config.method, **metrics["final"]})
        metrics["seconds"] = time.perf_counter() - t0
        atomic_write(folder / "metrics.json", json.dumps(_jsonable(metrics), indent=2))
        if config.backbone == "item":
            fd, tmp = tempfile.mkstemp(dir=folder, prefix=".policy.pt.", suffix=".tmp")
            os.close(fd)
            os.chmod(tmp, 0o644)
            torch.save({"config": ctx.policy.config, "state_dict": ctx.policy.state_dict()}, tmp)
            os.replace(tmp, folder / "policy.pt")
    finally:
        log.close()
    metrics["folder"] = str(folder)
    return metrics


# -------------------------------------------------------------------- CLI
def _train_args(p: argparse.ArgumentParser, prefix: str, default: TrainConfig, what: str) -> None:
    g = p.add_argument_group(f"{what} stage")
    g.add_argument(f"--{prefix}-epochs", type=float, default=default.epochs)
    g.add_argument(f"--{prefix}-lr", type=float, default=default.lr)
    g.add_argument(f"--{prefix}-batch-size", type=int, default=default.batch_size)
    g.add_argument(f"--{prefix}-max-steps", type=int, default=default.max_steps)


def _train_config(ns, prefix: str, default: TrainConfig, beta: float | None = None) -> TrainConfig:
    key = prefix.replace("-", "_")
    values = {**default.to_dict(), "epochs": getattr(ns, f"{key}_epochs"), "lr": getattr(ns, f"{key}_lr"),
              "batch_size": getattr(ns, f"{key}_batch_size"), "max_steps": getattr(ns, f"{key}_max_steps")}
    if beta is not None:
        values["beta"] = beta
    return TrainConfig(**values)


def parse_args(argv: Sequence[str] | None = None) -> AlignConfig:
    d = AlignConfig()
    p = argparse.ArgumentParser(prog="fcpo-align", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--method", choices=METHODS, default=d.method)
    p.add_argument("--backbone", choices=("item", "lm"), default=d.backbone)
    p.add_argument("--dataset", choices=("ml-100k", "ml-1m", "synthetic"), default=d.dataset)
    p.add_argument("--data-dir", default=None, help="folder with the data set (or its parent); else $FCPO_DATA_DIR")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--n-candidates", type=int, default=d.n_candidates)
    p.add_argument("--negatives", type=int, default=d.negatives, help="S-DPO negatives per sample (M)")
    p.add_argument("--beta", type=float, default=d.pref.beta)
    p.add_argument("--ks", type=int, nargs="+", default=list(d.ks))
    p.add_argument("--max-train-users", type=int, default=None)
    p.add_argument("--max-test-users", type=int, default=None)
    p.add_argument("--dim", type=int, default=d.dim, help="item backbone: embedding size")
    p.add_argument("--model", default=d.model, help="LM backbone: 'tiny', 'smollm2', a local folder or .gguf file")
    p.add_argument("--lora", action="store_true", help="LM backbone: train LoRA adapters only (peft)")
    p.add_argument("--lora-r", type=int, default=d.lora_r)
    p.add_argument("--iterations", type=int, default=d.sprec_iterations, help="SPRec iterations")
    p.add_argument("--sprec-negatives", choices=("greedy", "sample"), default=d.sprec_negatives)
    p.add_argument("--sprec-samples", type=int, default=None, help="SPRec samples per iteration (default: all)")
    _train_args(p, "sft", d.sft, "SFT")
    _train_args(p, "pref", d.pref, "DPO/S-DPO")
    _train_args(p, "sprec-sft", d.sprec_sft, "SPRec SFT")
    _train_args(p, "sprec-dpo", d.sprec_dpo, "SPRec DPO")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--name", default=None, help="run folder name (default: method-backbone-dataset-time)")
    p.add_argument("--runs-dir", default=d.runs_dir)
    ns = p.parse_args(argv)
    try:
        return AlignConfig(
            method=ns.method, backbone=ns.backbone, dataset=ns.dataset, data_dir=ns.data_dir, seed=ns.seed,
            n_candidates=ns.n_candidates, negatives=ns.negatives, ks=tuple(ns.ks),
            max_train_users=ns.max_train_users, max_test_users=ns.max_test_users, dim=ns.dim, model=ns.model,
            lora=ns.lora, lora_r=ns.lora_r, sft=_train_config(ns, "sft", d.sft),
            pref=_train_config(ns, "pref", d.pref, beta=ns.beta), sprec_iterations=ns.iterations,
            sprec_negatives=ns.sprec_negatives, sprec_samples=ns.sprec_samples,
            sprec_sft=_train_config(ns, "sprec-sft", d.sprec_sft),
            sprec_dpo=_train_config(ns, "sprec-dpo", d.sprec_dpo, beta=ns.beta), threads=ns.threads, name=ns.name,
            runs_dir=ns.runs_dir)
    except ValueError as exc:
        p.error(str(exc))


def config_from_dict(values: dict) -> AlignConfig:
    """Rebuild a config from a saved ``config.yaml`` (to repeat a run)."""
    values = dict(values)
    for key in ("sft", "pref", "sprec_sft", "sprec_dpo"):
        if isinstance(values.get(key), dict):
            values[key] = TrainConfig(**values[key])
    known = {f.name for f in fields(AlignConfig)}
    return AlignConfig(**{k: v for k, v in values.items() if k in known})


def main(argv: Sequence[str] | None = None) -> int:
    config = parse_args(argv)
    metrics = run(config)
    final = metrics["final"]
    k = max(config.ks)
    print(f"{config.method} ({config.backbone}, {config.dataset}): HR@1 {final['hr1']:.4f}  "
          f"ValidRatio {final['valid_ratio']:.4f}  NDCG@{k} {final[f'ndcg@{k}']:.4f}  HR@{k} {final[f'hr@{k}']:.4f}  "
          f"DivRatio@{k} {final[f'div_ratio@{k}']:.4f}  ORRatio@{k} {final[f'or_ratio@{k}']:.4f}  "
          f"MGU@{k} {final[f'mgu@{k}']:.4f}")
    print(f"run folder: {metrics['folder']}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
