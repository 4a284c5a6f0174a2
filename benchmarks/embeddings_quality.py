"""Top-K ranking quality of the MF embeddings vs random and popularity rankers.

Protocol: ``fcpo_split`` defaults (positives = rating >= 4, 5 initial items,
80/20 temporal split of the rest); each kept user's train items are excluded;
Recall@K / Precision@K / NDCG@K against the held-out test positives.

    python benchmarks/embeddings_quality.py                    # ml-100k
    python benchmarks/embeddings_quality.py --dataset ml-1m
    python benchmarks/embeddings_quality.py --method pmf

Results are printed and merged into results/benchmarks/embeddings_quality.json
(one entry per dataset / method).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine_info  # noqa: E402

from fcpo.runs import atomic_write  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="ml-100k", choices=("ml-100k", "ml-1m", "synthetic"))
    parser.add_argument("--data-dir", default=os.environ.get("FCPO_DATA_DIR") or str(REPO.parent / "shared" / "data"),
                        help="folder holding <dataset>/ (default: $FCPO_DATA_DIR or ../shared/data)")
    parser.add_argument("--method", default="bpr", choices=("bpr", "pmf"))
    parser.add_argument("--epochs", type=int, default=None, help="override MFConfig.epochs")
    parser.add_argument("--dim", type=int, default=None, help="override MFConfig.dim")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("-k", type=int, default=10)
    parser.add_argument("--no-cache", action="store_true", help="train afresh (do not read or write the cache)")
    parser.add_argument("--out", default=str(REPO / "results" / "benchmarks" / "embeddings_quality.json"))
    args = parser.parse_args(argv)

    from fcpo.data import fcpo_split, load_dataset
    from fcpo.data.embeddings import MFConfig, compare_rankers, load_embeddings, train_mf

    data_dir = None if args.dataset == "synthetic" else Path(args.data_dir).expanduser()
    try:
        data = load_dataset(args.dataset, data_dir=data_dir, download=False)
    except FileNotFoundError as exc:
        sys.exit(f"{exc}\n(pass --data-dir or set FCPO_DATA_DIR)")
    split = fcpo_split(data)
    config = MFConfig(method=args.method, seed=args.seed)
    overrides = {k: v for k, v in (("epochs", args.epochs), ("dim", args.dim)) if v is not None}
    config = replace(config, **overrides) if overrides else config
    conditions = machine_info()  # threads and load average next to the training time
    start = time.perf_counter()
    emb = (train_mf(split, config) if args.no_cache else load_embeddings(data, split, config))
    seconds = time.perf_counter() - start
    res = compare_rankers(split, emb, k=args.k)

    print(f"\n{args.dataset}: {data.n_users} users, {data.n_items} items, {data.n_ratings} ratings; "
          f"fcpo_split kept {split.n_episode_users} users")
    print(f"MF: {config}\n    {'read from cache' if emb.cached else 'trained'} in {seconds:.1f} s "
          f"(training took {emb.stats['seconds']:.1f} s)\n")
    header = f"{'ranker':<12}{'Recall@' + str(args.k):>12}{'Precision@' + str(args.k):>15}{'NDCG@' + str(args.k):>10}"
    print(header + "\n" + "-" * len(header))
    for name in ("random", "popularity", "mf"):
        row = res[name]
        label = {"bpr": "BPR-MF", "pmf": "PMF"}[args.method] if name == "mf" else name
        print(f"{label:<12}{row['recall']:>12.4f}{row['precision']:>15.4f}{row['ndcg']:>10.4f}")
    ratio = res["mf"]["recall"] / max(res["random"]["recall"], 1e-12)
    print(f"\nMF / random Recall@{args.k}: {ratio:.1f}x; MF / popularity: "
          f"{res['mf']['recall'] / max(res['popularity']['recall'], 1e-12):.2f}x")

    entry = {
        "dataset": args.dataset, "users": data.n_users, "items": data.n_items, "ratings": data.n_ratings,
        "episode_users": split.n_episode_users, "split": {"protocol": "fcpo", "threshold": 4.0, "n_initial": 5,
                                                          "train_ratio": 0.8},
        "config": config.to_dict(), "train_seconds": emb.stats["seconds"], "k": args.k,
        # train_seconds was measured now only when the embeddings were trained by this run (not read from cache)
        "trained_now": not emb.cached, "threads": conditions["threads"], "load_avg": conditions["load_avg"],
        "results": {name: {m: res[name][m] for m in ("recall", "precision", "ndcg")} for name in res},
        "python": platform.python_version(), "torch": emb.stats.get("torch"),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        merged = json.loads(out.read_text()) if out.exists() else {}
    except (OSError, ValueError):
        merged = {}
    merged[f"{args.dataset}/{args.method}"] = entry
    atomic_write(out, json.dumps(merged, indent=2, sort_keys=True) + "\n")
    print(f"wrote {out}")
    return entry


if __name__ == "__main__":
    main()
