"""Data-layer scale check: an ML-20M-size interaction log as CSV, first load + split, cached load, peak RSS.

    python benchmarks/data_scale.py --scale 0.1          # ~2 M interactions, a minute
    python benchmarks/data_scale.py                      # full: ~138,000 users, 27,000 items, ~20 M interactions

Each phase runs in its own process (so the cached load is a cold process and
each peak RSS is that phase's own):

1. ``generate``: the synthetic generator (successive sampler, vectorised) writes
   the log as ``user,item,rating,timestamp`` CSV;
2. ``first``: ``fcpo.data.load_table`` on an empty processed cache (parse, dense
   ids, duplicate check, cache write) + ``cached_split`` (FCPO split, cache write), then the
   replay env over the CSV (``EnvSpec.make_vector``; the embeddings, ``embedding_method="auto"``
   = PureSVD at this size, are trained and cached);
3. ``cached``: the same calls in a fresh process (file hash + cache reads);
4. ``env`` (with ``--env``): the replay env over the CSV through ``EnvSpec(dataset=CSV, columns=...)``
   (from the cache), every user stepped in one batch at K = 10 (item-slots/s,
   target >= 2 M), then one FCPO iteration on a sampled 10 % of the users (its time is reported).

Targets at full scale: first load + split + env build <= 90 s, cached load <= 10 s, peak RSS <= 6 GB.
Prints a table and writes JSON (``--out``).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FULL = {"n_users": 138_000, "n_items": 27_000, "mean_ratings_per_user": 145.0}
COLUMNS = "user=user,item=item,rating=rating,timestamp=timestamp"
TARGETS = {"first_load_and_split_s": 90.0, "cached_load_s": 10.0, "peak_rss_gb": 6.0}


def _config(scale: float):
    from fcpo.data.synthetic import SyntheticConfig

    return SyntheticConfig(n_users=max(50, round(FULL["n_users"] * scale)),
                           n_items=max(100, round(FULL["n_items"] * scale)),
                           mean_ratings_per_user=FULL["mean_ratings_per_user"], min_ratings_per_user=20,
                           sampler="successive", seed=0)


def _peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20  # Linux: KiB


def _cpu_s() -> float:
    """User + system CPU seconds of this process: on shared cores, wall time overstates the work."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def phase(name: str, workdir: Path, scale: float) -> dict:
    """Run one phase in this process; return its figures."""
    csv = workdir / "interactions.csv"
    if name == "generate":
        from fcpo.data.synthetic import write_synthetic_table

        t0, c0 = time.perf_counter(), _cpu_s()
        write_synthetic_table(csv, _config(scale), items_path=workdir / "items.csv")
        return {"generate_and_write_csv_s": time.perf_counter() - t0, "cpu_s": _cpu_s() - c0,
                "csv_bytes": csv.stat().st_size, "peak_rss_gb": _peak_rss_gb()}
    if name == "env":
        return _env_phase(csv)
    from fcpo.data import cached_split, load_table

    t0, c0 = time.perf_counter(), _cpu_s()
    data = load_table(csv, COLUMNS)
    t_load, c_load = time.perf_counter() - t0, _cpu_s() - c0
    split = cached_split(data, "fcpo", n_initial=5, threshold=4.0)
    t_all, c_all = time.perf_counter() - t0, _cpu_s() - c0
    # the env over the same file, as a user builds it (its split is the one just cached; the embeddings
    # are trained here the first time: "auto" = PureSVD at this size, then read from the cache)
    from fcpo.data.embeddings import resolve_method
    from fcpo.envs import EnvSpec

    t1, c1 = time.perf_counter(), _cpu_s()
    env = EnvSpec(kwargs={"dataset": str(csv), "columns": COLUMNS, "slate_size": 10}).make_vector(
        cover_all_users=True, mode="train")
    t_env, c_env = time.perf_counter() - t1, _cpu_s() - c1
    method = resolve_method(env.env_data.key.embedding_method, int(env.env_data.split.train_ratings.nnz))
    return {"load_s": t_load, "split_s": t_all - t_load, "load_and_split_s": t_all, "load_cpu_s": c_load,
            "load_and_split_cpu_s": c_all, "env_build_s": t_env, "env_build_cpu_s": c_env,
            "total_s": t_all + t_env, "total_cpu_s": c_all + c_env, "embedding_method": method,
            "env_users": int(env.num_envs), "users": data.n_users,
            "items": data.n_items, "interactions": data.n_ratings, "episode_users": split.n_episode_users,
            "peak_rss_gb": _peak_rss_gb()}


def _env_phase(csv: Path, steps: int = 5) -> dict:
    import numpy as np
    import torch

    from fcpo.agents import make_agent
    from fcpo.agents.cpo import FCPOConfig
    from fcpo.envs import EnvSpec

    torch.set_num_threads(1)
    # no dense info["action_mask"]: at this size it is a 3.7 GB array per step (agents call item_mask())
    spec = EnvSpec(kwargs={"dataset": str(csv), "columns": COLUMNS, "slate_size": 10, "action_mask_in_info": False})
    t0, c0 = time.perf_counter(), _cpu_s()
    env = spec.make_vector(cover_all_users=True, mode="train")
    build_s, build_cpu = time.perf_counter() - t0, _cpu_s() - c0
    rng = np.random.default_rng(0)
    env.reset(seed=0)
    # distinct random items per row without an [users, items] array (28 GB at ML-20M size)
    stride = np.arange(10) * (env.n_items // 10)
    slates = [(rng.integers(0, env.n_items, (env.num_envs, 1)) + stride) % env.n_items for _ in range(2)]
    t_step = 0.0
    for t in range(steps):
        a = time.perf_counter()
        env.step(slates[t % 2])
        t_step += time.perf_counter() - a
    slots_per_s = env.num_envs * 10 * steps / t_step
    agent = make_agent("fcpo", FCPOConfig(alpha_prime=0.4, users_per_iteration=0.1), spec, "cpu", 0)
    t0, c0 = time.perf_counter(), _cpu_s()
    stats = agent.train_iteration(0)
    return {"env_build_s": build_s, "env_build_cpu_s": build_cpu, "users": int(env.num_envs),
            "item_slots_per_s": slots_per_s, "fcpo_iteration_s": time.perf_counter() - t0,
            "fcpo_iteration_cpu_s": _cpu_s() - c0, "fcpo_samples": stats.get("samples"),
            "peak_rss_gb": _peak_rss_gb()}


def _run_phase(name: str, workdir: Path, scale: float, env: dict) -> dict:
    cmd = [sys.executable, __file__, "--phase", name, "--workdir", str(workdir), "--scale", str(scale)]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"phase {name} failed:\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scale", type=float, default=1.0, help="fraction of the ML-20M size (users and items)")
    p.add_argument("--workdir", type=Path, default=None, help="where the CSV and the cache go (default: a temp dir)")
    p.add_argument("--out", type=Path, default=None, help="JSON result file (default: <workdir>/data_scale.json)")
    p.add_argument("--env", action="store_true",
                   help="also build the env over the log, step all users at K=10 and run one FCPO iteration")
    p.add_argument("--phase", choices=("generate", "first", "cached", "env"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.phase:
        print(json.dumps(phase(args.phase, args.workdir, args.scale)))
        return {}
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="fcpo-data-scale-"))
    workdir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "FCPO_CACHE_DIR": str(workdir / "cache"),
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    results = {"scale": args.scale, "config": {k: v for k, v in vars(_config(args.scale)).items()}}
    for name in ("generate", "first", "cached") + (("env",) if args.env else ()):
        results[name] = _run_phase(name, workdir, args.scale, env)
        print(f"{name:9s} {json.dumps(results[name])}", flush=True)
    first, cached = results["first"], results["cached"]
    results["summary"] = {
        "interactions": first["interactions"], "users": first["users"], "items": first["items"],
        "first_load_and_split_s": first["load_and_split_s"], "first_load_and_split_cpu_s": first["load_and_split_cpu_s"],
        "first_env_build_s": first["env_build_s"], "first_total_s": first["total_s"],
        "first_total_cpu_s": first["total_cpu_s"],
        "cached_load_s": cached["load_s"], "cached_load_cpu_s": cached["load_cpu_s"],
        "cached_load_and_split_s": cached["load_and_split_s"], "cached_total_s": cached["total_s"],
        "peak_rss_gb": max(first["peak_rss_gb"], cached["peak_rss_gb"]),
        "peak_rss_gb_generate": results["generate"]["peak_rss_gb"],
        "targets_full_scale": TARGETS,
    }
    if args.env:
        results["summary"].update({k: results["env"][k] for k in ("item_slots_per_s", "fcpo_iteration_s",
                                                                   "fcpo_iteration_cpu_s", "fcpo_samples")})
    results["threads"], results["load_average"] = 1, os.getloadavg()
    out = args.out or workdir / "data_scale.json"
    out.write_text(json.dumps(results, indent=2))
    s = results["summary"]
    print(f"\n{s['interactions']:,} interactions, {s['users']:,} users, {s['items']:,} items (scale {args.scale})")
    print(f"first load + split + env {s['first_total_s']:.1f} s wall / {s['first_total_cpu_s']:.1f} s CPU "
          f"(target 90; env build {s['first_env_build_s']:.1f} s), cached load + split + env {s['cached_total_s']:.1f} s "
          f"(target 10), peak RSS {s['peak_rss_gb']:.2f} GB (target 6), load average {results['load_average'][0]:.2f}")
    if args.env:
        print(f"env steps all {results['env']['users']:,} users at K = 10: {s['item_slots_per_s'] / 1e6:.2f} M item-slots/s "
              f"(target 2); one FCPO iteration on 10 % of the users: {s['fcpo_iteration_s']:.1f} s wall / "
              f"{s['fcpo_iteration_cpu_s']:.1f} s CPU")
    print(f"written to {out}")
    return results


if __name__ == "__main__":
    main()
