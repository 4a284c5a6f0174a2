"""``fcpo-align``: SFT, DPO, S-DPO and SPRec for the item-softmax (GRU) or a language-model backbone.

    fcpo-align --method sdpo --negatives 3 --backbone item --dataset ml-100k --data-dir ../shared/data
    fcpo-align --method sprec --iterations 3 --sprec-negatives greedy --backbone lm --model smollm2 \\
               --max-train-users 64 --max-test-users 64
    fcpo-align --method sft --backbone lm --model smollm2 --lora --device cuda --max-test-users 500
    fcpo-align --resume runs/align-sprec-item-ml-100k-...      # continue from the SFT checkpoint

The LM backbone prompts through the model's own chat template (when it has one; --no-chat: plain
text), scores candidate titles in packed batches, and reports free answers (HR@1, ValidRatio by
S-DPO's rule) and trie-constrained answers (trie HR@1, ValidRatio 1 by construction) apart.

The experiment and its run folder are described in fcpo.alignment.experiment; the evaluation
protocols ("sdpo-candidates", "sprec-topk") in fcpo.evaluate.candidates.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from fcpo.cli.common import CLIError, Parser, add_data_flags, add_threads_flag, quiet_interrupt, run_cli

PROG = "fcpo-align"
STAGES = (("sft", "SFT"), ("pref", "DPO/S-DPO"), ("sprec-sft", "SPRec SFT"), ("sprec-dpo", "SPRec DPO"))


class _Formatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    pass


def build_parser() -> argparse.ArgumentParser:
    from fcpo.alignment.experiment import BACKBONES, METHODS, AlignConfig

    d = AlignConfig()
    p = Parser(prog=PROG, description=__doc__, formatter_class=_Formatter)
    p.add_argument("--method", choices=METHODS, default=d.method, help="alignment after SFT (sft: SFT only)")
    p.add_argument("--backbone", choices=BACKBONES, default=d.backbone,
                   help="item: GRU item-softmax; lm: a causal language model over item titles")
    add_data_flags(p, default=d.dataset)
    p.add_argument("--seed", type=int, default=d.seed, help="random seed of data subsets, candidates and training")
    p.add_argument("--n-candidates", type=int, default=d.n_candidates, help="candidates per S-DPO sample")
    p.add_argument("--negatives", type=int, default=d.negatives, help="S-DPO negatives per sample (M)")
    p.add_argument("--beta", type=float, default=d.pref.beta, help="DPO/S-DPO temperature β")
    p.add_argument("--ks", type=int, nargs="+", default=list(d.ks), help="cut-offs K of the top-K metrics")
    p.add_argument("--max-train-users", type=int, default=None, help="random subset of training users (all)")
    p.add_argument("--max-test-users", type=int, default=None, help="random subset of test users (all)")
    p.add_argument("--dim", type=int, default=d.dim, help="item backbone: embedding size")
    p.add_argument("--model", default=d.model, help="LM backbone: 'tiny', 'smollm2', a local folder or .gguf file")
    p.add_argument("--lora", action="store_true", help="LM backbone: train LoRA adapters only (peft)")
    p.add_argument("--lora-r", type=int, default=d.lora_r, help="LoRA rank")
    p.add_argument("--device", default=d.device, help="LM backbone: cpu | cuda | cuda:N")
    p.add_argument("--chat", dest="chat", action="store_true", default=None,
                   help="LM backbone: force the tokenizer's chat template (default: used when it has one)")
    p.add_argument("--no-chat", dest="chat", action="store_false", help="LM backbone: plain-text prompts")
    p.add_argument("--score-batch-size", type=int, default=d.score_batch_size,
                   help="LM backbone: prompts per packed candidate-scoring pass")
    p.add_argument("--gen-batch-size", type=int, default=d.gen_batch_size,
                   help="LM backbone: prompts per generation / trie-decoding batch")
    p.add_argument("--no-trie", action="store_true",
                   help="LM backbone: skip the trie-constrained evaluation (hr1_trie, valid_ratio_trie)")
    p.add_argument("--protocols", nargs="+", choices=("sdpo-candidates", "sprec-topk"), default=list(d.eval_protocols),
                   help="evaluation protocols")
    p.add_argument("--iterations", type=int, default=d.sprec_iterations, help="SPRec iterations")
    p.add_argument("--sprec-negatives", choices=("greedy", "sample"), default=d.sprec_negatives,
                   help="SPRec self-play negative: greedy answer (authors' code) or a sampled one (paper)")
    p.add_argument("--sprec-samples", type=int, default=None, help="SPRec samples per iteration (all)")
    for prefix, what in STAGES:
        default = getattr(d, prefix.replace("-", "_"))
        g = p.add_argument_group(f"{what} stage")
        g.add_argument(f"--{prefix}-epochs", type=float, default=default.epochs, help=f"{what} epochs")
        g.add_argument(f"--{prefix}-lr", type=float, default=default.lr, help=f"{what} learning rate")
        g.add_argument(f"--{prefix}-batch-size", type=int, default=default.batch_size, help=f"{what} batch size")
        g.add_argument(f"--{prefix}-max-steps", type=int, default=default.max_steps, help=f"{what} step cap")
    add_threads_flag(p)
    p.add_argument("--name", default=None, help="run folder name (default align-<method>-<backbone>-<dataset>-<time>)")
    p.add_argument("--run-dir", "--runs-dir", dest="runs_dir", default=d.runs_dir, help="parent of run folders")
    p.add_argument("--resume", default=None, metavar="RUN_DIR",
                   help="continue RUN_DIR (from its SFT checkpoint) with its own config; other flags are ignored")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def check_flags(ns) -> None:
    """Range of every numeric flag, named in the error (before any data is read or folder made)."""
    import math

    def need(ok: bool, flag: str, value, what: str) -> None:
        if not ok:
            raise CLIError(f"--{flag} must be {what}, got {value!r}")

    need(ns.seed >= 0, "seed", ns.seed, "an integer >= 0")
    need(ns.device == "cpu" or ns.device.startswith("cuda"), "device", ns.device, "cpu, cuda or cuda:N")
    need(ns.backbone == "lm" or ns.device == "cpu", "device", ns.device, "cpu for the item backbone")
    for flag in ("n_candidates", "negatives", "dim", "lora_r", "iterations", "score_batch_size", "gen_batch_size"):
        need(getattr(ns, flag) >= 1, flag.replace("_", "-"), getattr(ns, flag), "an integer >= 1")
    for flag in ("max_train_users", "max_test_users", "sprec_samples"):
        value = getattr(ns, flag)
        need(value is None or value >= 1, flag.replace("_", "-"), value, "an integer >= 1")
    need(all(k >= 1 for k in ns.ks), "ks", ns.ks, "cut-offs >= 1")
    need(math.isfinite(ns.beta) and ns.beta > 0, "beta", ns.beta, "a finite number > 0")
    for prefix, _ in STAGES:
        key = prefix.replace("-", "_")
        for field, what in (("epochs", "a finite number > 0"), ("lr", "a finite number > 0")):
            value = getattr(ns, f"{key}_{field}")
            need(math.isfinite(value) and value > 0, f"{prefix}-{field}", value, what)
        need(getattr(ns, f"{key}_batch_size") >= 1, f"{prefix}-batch-size", getattr(ns, f"{key}_batch_size"),
             "an integer >= 1")
        steps = getattr(ns, f"{key}_max_steps")
        need(steps is None or steps >= 1, f"{prefix}-max-steps", steps, "an integer >= 1")
    if ns.name is not None and (not ns.name or ns.name in (".", "..") or "/" in ns.name):
        raise CLIError(f"--name {ns.name!r}: give a plain folder name (no '/')")


def config_from_args(ns):
    from fcpo.alignment import TrainConfig
    from fcpo.alignment.experiment import AlignConfig

    d = AlignConfig()

    def stage(prefix: str, beta: float | None = None) -> TrainConfig:
        key = prefix.replace("-", "_")
        values = {**getattr(d, key).to_dict(), **{f: getattr(ns, f"{key}_{f}") for f in
                                                  ("epochs", "lr", "batch_size", "max_steps")}}
        return TrainConfig(**{**values, **({} if beta is None else {"beta": beta})})

    return AlignConfig(
        method=ns.method, backbone=ns.backbone, dataset=ns.dataset, data_dir=ns.data_dir, seed=ns.seed,
        n_candidates=ns.n_candidates, negatives=ns.negatives, ks=tuple(ns.ks), max_train_users=ns.max_train_users,
        max_test_users=ns.max_test_users, dim=ns.dim, model=ns.model, lora=ns.lora, lora_r=ns.lora_r,
        chat=ns.chat, device=ns.device, score_batch_size=ns.score_batch_size, gen_batch_size=ns.gen_batch_size,
        trie_eval=not ns.no_trie, eval_protocols=tuple(ns.protocols),
        sft=stage("sft"), pref=stage("pref", ns.beta), sprec_iterations=ns.iterations,
        sprec_negatives=ns.sprec_negatives, sprec_samples=ns.sprec_samples, sprec_sft=stage("sprec-sft"),
        sprec_dpo=stage("sprec-dpo", ns.beta), threads=ns.threads, name=ns.name, runs_dir=ns.runs_dir)


def summary_line(metrics: dict) -> str:
    """One line of the final metrics that exist (the LM adds the trie-constrained answers, the top-K
    protocol may be off)."""
    final = metrics["final"]
    parts = [f"HR@1 {final['hr1']:.4f}", f"ValidRatio {final['valid_ratio']:.4f}"] if "hr1" in final else []
    if "hr1_trie" in final:
        parts += [f"trie HR@1 {final['hr1_trie']:.4f}", f"trie ValidRatio {final['valid_ratio_trie']:.4f}"]
    ks = [int(key.split("@")[1]) for key in final if key.startswith("ndcg@")]
    if ks:
        k = max(ks)
        parts += [f"{name}@{k} {final[f'{key}@{k}']:.4f}" for name, key in
                  (("NDCG", "ndcg"), ("HR", "hr"), ("DivRatio", "div_ratio"), ("ORRatio", "or_ratio"), ("MGU", "mgu"))]
    return f"{metrics['method']['method']} ({metrics['backbone']}, {metrics['dataset']}): " + "  ".join(parts)


def _main(ns) -> int:
    from fcpo import runs
    from fcpo.alignment import experiment

    if ns.resume:
        if not (Path(ns.resume) / runs.CONFIG).is_file():
            raise FileNotFoundError(f"{Path(ns.resume) / runs.CONFIG}: not an fcpo-align run folder")
        if (Path(ns.resume) / runs.METRICS).is_file():  # refused before the lock file is made
            raise FileExistsError(f"{ns.resume} is complete ({runs.METRICS} exists); start a new run with "
                                  f"another --name")
        with runs.run_lock(ns.resume):  # one process per run folder; sweeps a crash's temp files
            metrics = experiment.resume(ns.resume, progress=not ns.no_progress)
    else:
        check_flags(ns)
        config = config_from_args(ns)
        if config.name and (Path(config.runs_dir) / config.name).exists():
            raise CLIError(f"run folder {Path(config.runs_dir) / config.name} exists; choose another --name, "
                           f"or continue it with --resume")
        metrics = experiment.run(config, progress=not ns.no_progress)
    print(summary_line(metrics))
    print(f"run folder: {metrics['folder']}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    with quiet_interrupt(PROG):
        ns = build_parser().parse_args(argv)
        return run_cli(PROG, _main, ns)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
