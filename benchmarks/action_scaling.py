"""Decision latency and memory of large-discrete-action policies versus catalogue size (issue #6).

For catalogues of 10^3 .. 10^6 items (synthetic clustered item embeddings, d = 32) and one
K-item slate per user (K = 5, observation = the env's layout, 6 * 32 + 1 floats):

* ``full``: a linear state encoder -> scores against every item -> masked top-K (O(|I|));
* ``wolp-exact``: Wolpertinger actor -> exact k-NN (torch) -> critic re-ranks k candidates -> top-K;
* ``wolp-faiss``: the same with a faiss IVF-Flat index (skipped when faiss-cpu is missing);
* ``tpgr-d2`` .. ``tpgr-d4``: TPGR tree policy (PCA tree), K root -> leaf walks, O(K * d * c).

Wolpertinger uses a fixed k (``--knn``, default 100): with k = 10 % of the catalogue the
critic re-ranking itself is O(|I|), so only a fixed k can scale sub-linearly.  Latency is the
median over ``--repeats`` calls, per user, for one user and for a batch of ``--batch`` users;
memory is what the method holds (parameters, buffers, index).  The fitted exponent b of
latency ~ a * |I|^b is a least-squares line in log-log space.

    python benchmarks/action_scaling.py [--sizes 1000 10000 100000 1000000] [--quick] [--threads 2]

writes results/benchmarks/action_scaling.json and .png.
"""
from __future__ import annotations

import argparse
import gc
import math
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from _common import RESULTS, machine_info, markdown_table, write_json  # noqa: E402


def synthetic_items(n: int, dim: int, seed: int = 0):
    """Clustered item embeddings (sqrt(n) Gaussian clusters), float32 [n, dim]."""
    import torch

    g = torch.Generator().manual_seed(seed)
    n_c = max(1, int(math.sqrt(n)))
    centres = torch.randn(n_c, dim, generator=g)
    assign = torch.randint(n_c, (n,), generator=g)
    return centres[assign] + 0.3 * torch.randn(n, dim, generator=g)


def _time(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _nbytes(module) -> int:
    return sum(t.numel() * t.element_size() for t in list(module.parameters()) + list(module.buffers()))


def build_methods(items, args):
    """Yield (name, build_seconds, act(state, k) callable, memory bytes, extra dict)."""
    import torch

    from fcpo.agents.wolpertinger import Actor, Critic, WolpertingerPolicy
    from fcpo.policies.knn import KNNIndex, faiss_available
    from fcpo.policies.tree import TreePolicy, build_balanced_tree

    n, dim = items.shape
    obs_dim = 6 * dim + 1
    torch.manual_seed(0)
    # full scoring: encoder obs -> query in item space, scores over all items, top-K
    enc = torch.nn.Sequential(torch.nn.Linear(obs_dim, 256), torch.nn.ReLU(), torch.nn.Linear(256, dim))

    def full(state, k):
        return torch.topk(enc(state.obs) @ items.T, k, dim=1).indices

    yield "full", 0.0, full, _nbytes(enc) + items.numel() * 4, {}
    bound = items.abs().amax(0)
    for backend in ("exact", "faiss"):
        if backend == "faiss" and not faiss_available():
            print("faiss-cpu not installed: skipping wolp-faiss", flush=True)
            continue
        t0 = time.perf_counter()
        index = KNNIndex(items, "l2", backend, nprobe=args.nprobe)
        build = time.perf_counter() - t0
        pol = WolpertingerPolicy(Actor(obs_dim, dim, (256, 256), bound), Critic(obs_dim, dim, (256, 256)), items,
                                 index, min(args.knn, n))
        pol.eval()
        extra = {"k_nn": min(args.knn, n)}
        if backend == "faiss":
            extra["recall_vs_exact"] = recall_vs_exact(index, items, min(args.knn, n))
        yield f"wolp-{backend}", build, (lambda state, k, p=pol: p.act(state, k)), \
            _nbytes(pol) - items.numel() * 4 + index.memory_bytes(), extra
        del pol, index
    for depth in args.depths:
        t0 = time.perf_counter()
        tree = build_balanced_tree(items, depth=depth, method="pca")
        build = time.perf_counter() - t0
        pol = TreePolicy(tree, obs_dim, hidden=args.hidden)
        for w in pol.weights:  # non-trivial heads (zero heads would make every walk identical)
            torch.nn.init.normal_(w, std=0.1)
        pol.eval()
        yield f"tpgr-d{depth}", build, (lambda state, k, p=pol: p.act(state, k, "greedy")), _nbytes(pol), \
            {"branching": tree.branching}
        del pol, tree


def recall_vs_exact(index, items, k, n_queries: int = 64):
    """recall@k of an approximate index against exact k-NN, queries drawn like the items."""
    import torch

    from fcpo.policies.knn import exact_knn

    g = torch.Generator().manual_seed(2)
    queries = items[torch.randint(items.shape[0], (n_queries,), generator=g)] + 0.3 * torch.randn(
        n_queries, items.shape[1], generator=g)
    approx = index.search(queries, k)[1]
    exact = exact_knn(queries, items, k, "l2")[1]
    hits = (approx[:, :, None] == exact[:, None, :]).any(2).float().mean()
    return float(hits)


def run(args) -> dict:
    import torch

    from fcpo.policies.base import SlateState
    from fcpo.policies.knn import faiss_available

    torch.set_num_threads(args.threads)
    if faiss_available():
        import faiss

        faiss.omp_set_num_threads(args.threads)
    rows = []
    for n in args.sizes:
        items = synthetic_items(n, args.dim, seed=0)
        g = torch.Generator().manual_seed(1)
        obs = torch.randn(args.batch, 6 * args.dim + 1, generator=g)
        states = {1: SlateState(obs[:1], torch.zeros(1, 5, dtype=torch.long), torch.zeros(1, dtype=torch.long)),
                  args.batch: SlateState(obs, torch.zeros(args.batch, 5, dtype=torch.long),
                                         torch.zeros(args.batch, dtype=torch.long))}
        with torch.inference_mode():
            for name, build_s, act, mem, extra in build_methods(items, args):
                conditions = machine_info()  # threads and load average next to the figures
                row = {"items": n, "method": name, "build_s": build_s, "memory_mb": mem / 2**20, **extra,
                       "threads": conditions["threads"], "load_avg": conditions["load_avg"]}
                for b, state in states.items():
                    reps = args.repeats if b == 1 else max(3, args.repeats // 10)
                    sec = _time(lambda: act(state, args.slate), reps)
                    row[f"ms_per_user_b{b}"] = 1e3 * sec / b
                slate = act(states[args.batch], args.slate)
                assert slate.shape == (args.batch, args.slate)
                assert bool((torch.sort(slate, 1).values.diff(dim=1) != 0).all()), f"{name}: repeated items"
                rows.append(row)
                print(f"{n:>9,} {name:<11} build {build_s:7.2f}s  mem {row['memory_mb']:9.1f} MB  "
                      f"1 user {row['ms_per_user_b1']:8.3f} ms  batch {row[f'ms_per_user_b{args.batch}']:8.4f} ms/user",
                      flush=True)
                gc.collect()
        del items
        gc.collect()
    fits = {}
    for method in dict.fromkeys(r["method"] for r in rows):
        sub = [r for r in rows if r["method"] == method]
        if len(sub) < 2:
            continue
        x = np.log([r["items"] for r in sub])
        fits[method] = {}
        for key in ("ms_per_user_b1", f"ms_per_user_b{args.batch}", "memory_mb"):
            fits[method][key] = float(np.polyfit(x, np.log([r[key] for r in sub]), 1)[0])
    return {"config": {k: v for k, v in vars(args).items() if k != "out"}, "rows": rows, "exponents": fits}


def plot(result: dict, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, batch = result["rows"], result["config"]["batch"]
    keys = [("ms_per_user_b1", "latency, 1 user (ms)"), (f"ms_per_user_b{batch}", f"latency per user, batch {batch} (ms)"),
            ("memory_mb", "memory (MB)")]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    for ax, (key, label) in zip(axes, keys):
        for method in dict.fromkeys(r["method"] for r in rows):
            sub = [r for r in rows if r["method"] == method]
            b = result["exponents"].get(method, {}).get(key)
            ax.loglog([r["items"] for r in sub], [r[key] for r in sub], "o-",
                      label=method + (f" (b={b:.2f})" if b is not None else ""))
        if key != "memory_mb":
            ax.axhline(2.0, color="grey", ls=":", lw=1)
        ax.set_xlabel("catalogue size |I|")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"Decision cost vs catalogue size (K={result['config']['slate']}, d={result['config']['dim']}, "
                 f"{result['config']['threads']} CPU thread(s))")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", type=lambda s: int(float(s)), nargs="+", default=[10**3, 10**4, 10**5, 10**6])
    p.add_argument("--quick", action="store_true", help="sizes 1e3 1e4 1e5, fewer repeats (CI)")
    p.add_argument("--dim", type=int, default=32)
    p.add_argument("--slate", type=int, default=5, help="K items per decision")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--knn", type=int, default=100, help="Wolpertinger neighbours (fixed k)")
    p.add_argument("--nprobe", type=int, default=8)
    p.add_argument("--depths", type=int, nargs="+", default=[2, 3, 4])
    p.add_argument("--hidden", type=int, default=64, help="TPGR encoder width")
    p.add_argument("--repeats", type=int, default=50)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=str(RESULTS / "action_scaling.json"))
    args = p.parse_args(argv)
    if args.quick:
        args.sizes = [s for s in args.sizes if s <= 10**5] or [10**3, 10**4]
        args.repeats = min(args.repeats, 20)
    result = run(args)
    path = write_json(args.out, result)
    plot(result, path.with_suffix(".png"))
    cols = ["items", "method", "build_s", "memory_mb", "ms_per_user_b1", f"ms_per_user_b{args.batch}"]
    print(markdown_table(result["rows"], cols))
    print("\nfitted exponents b (latency ~ |I|^b):")
    for method, fit in result["exponents"].items():
        print(f"  {method:<11} " + "  ".join(f"{k}={v:.2f}" for k, v in fit.items()))
    print(f"wrote {path} and {path.with_suffix('.png')}")


if __name__ == "__main__":
    main()
