"""FCPO on two devices from the same seed: do the first iterations agree, and how long does an iteration take?

    python benchmarks/gpu_check.py                       # cpu vs cuda on ml-100k, 5 iterations (a few minutes at most)
    python benchmarks/gpu_check.py --devices cpu cpu --dataset synthetic --iterations 2   # the comparison on CPU

Each device builds the FCPO agent (``fcpo.agents.make_agent("fcpo", ...)``, default config) from the
same seed (the weights are initialised on the CPU, then moved) and trains ``--iterations`` iterations.
The random numbers are made device-independent: the agent's torch generator is a CPU generator and every
``torch.rand/randn/randint/randperm`` call that passes it with another device draws on the CPU and moves
the result (CUDA's Philox stream differs from the CPU's Mersenne Twister); the numpy generator is the
same on both.  TF32 matmuls are switched off, so both devices compute in float32.

What is compared over the first ``--check-iterations`` iterations (default 2):

* **actions**: the item slates of every rollout (``Batch.items``); the share of slate positions that
  differ must not exceed ``--action-tol`` (default 0.001, i.e. 99.9 % identical items: a float32
  rounding difference may flip the argmax of a near tie);
* **losses and logged quantities**: every numeric field of ``train_iteration``'s record (reward, cost,
  the critics' losses ``value_loss``/``cost_value_loss``, the KL of the step, λ, ν, ...) within
  ``|a - b| <= --atol + --rtol * |a|`` (defaults 1e-4 and 1e-3), and the CPO case the same.

Later iterations are reported, not checked: float32 rounding differences grow through the
conjugate-gradient solve and the line search, so the trajectories may drift apart.

Iteration times (wall clock, CUDA synchronised) are reported for both devices.  Without a CUDA device a
run that asks for one prints "no CUDA device: skipped" and exits 0.  Exit status 1 when a check fails.
The JSON (``--out``, default results/benchmarks/gpu_check.json) is written only when a CUDA device ran,
or when ``--out`` is given explicitly.
"""
from __future__ import annotations

import argparse
import contextlib
import math
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, default_data_dir, machine_info, write_json  # noqa: E402

RANDOM_FUNCTIONS = ("rand", "randn", "randint", "randperm")


@contextlib.contextmanager
def cpu_drawn_randomness():
    """Within the block, ``torch.<rand|randn|randint|randperm>(..., generator=<CPU generator>,
    device=<not CPU>)`` draws on the CPU and moves the result to ``device``."""
    import torch

    originals = {name: getattr(torch, name) for name in RANDOM_FUNCTIONS}

    def drawn_on_cpu(fn):
        def draw(*args, generator=None, device=None, **kwargs):
            if (generator is not None and generator.device.type == "cpu" and device is not None
                    and torch.device(device).type != "cpu"):
                return fn(*args, generator=generator, device="cpu", **kwargs).to(device)
            return fn(*args, generator=generator, device=device, **kwargs)
        return draw

    try:
        for name, fn in originals.items():
            setattr(torch, name, drawn_on_cpu(fn))
        yield
    finally:
        for name, fn in originals.items():
            setattr(torch, name, fn)


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


def train(device: str, dataset: str, data_dir: str | None, iterations: int, seed: int, alpha: float) -> dict:
    """``iterations`` FCPO iterations on ``device``: records, slates of every rollout, seconds per iteration."""
    import torch

    import fcpo.agents.actor_critic as actor_critic
    from fcpo.agents import make_agent
    from fcpo.agents.cpo import FCPOConfig
    from fcpo.envs import EnvSpec

    options = {"dataset": dataset} if dataset == "synthetic" else {"dataset": dataset, "data_dir": data_dir}
    torch.manual_seed(seed)
    agent = make_agent("fcpo", FCPOConfig(alpha_prime=alpha), EnvSpec("fcpo/MovieLensFair-v0", options), device, seed)
    agent.generator = torch.Generator().manual_seed(seed)  # CPU stream on every device (cpu_drawn_randomness)
    slates: list[np.ndarray] = []
    collect = actor_critic.collect

    def recording_collect(*args, **kwargs):
        batch = collect(*args, **kwargs)
        slates.append(batch.items.cpu().numpy())
        return batch

    records, seconds = [], []
    actor_critic.collect = recording_collect
    try:
        with cpu_drawn_randomness():
            for it in range(iterations):
                _sync(device)
                start = time.perf_counter()
                records.append(agent.train_iteration(it))
                _sync(device)
                seconds.append(time.perf_counter() - start)
                print(f"  {device}: iteration {it} {seconds[-1]:.3f} s  reward {records[-1]['reward']:.4f}  "
                      f"value_loss {records[-1]['value_loss']:.5f}  {records[-1]['cpo_case']}", flush=True)
    finally:
        actor_critic.collect = collect
    return {"device": device, "records": records, "slates": slates, "seconds": seconds,
            "users": int(agent.n_users)}


def _close(a: float, b: float, rtol: float, atol: float) -> bool:
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    if math.isinf(a) or math.isinf(b):
        return a == b
    return abs(a - b) <= atol + rtol * abs(a)


def compare(ref: dict, other: dict, check_iterations: int, rtol: float, atol: float, action_tol: float) -> dict:
    """Per-iteration agreement of two :func:`train` results; ``ok`` covers the first ``check_iterations``.

    Returns ``{"ok", "iterations": [{"iteration", "checked", "slate_mismatch", "slates_ok",
    "mismatched_fields": {name: [ref, other]}, "records_ok"}]}``."""
    rows, ok = [], True
    for it, (rec_a, rec_b, s_a, s_b) in enumerate(zip(ref["records"], other["records"], ref["slates"],
                                                       other["slates"])):
        if s_a.shape != s_b.shape:
            mismatch = 1.0
        else:
            mismatch = float(np.mean(s_a != s_b)) if s_a.size else 0.0
        fields = {}
        for key in sorted(set(rec_a) | set(rec_b)):
            va, vb = rec_a.get(key), rec_b.get(key)
            if isinstance(va, (int, float)) and isinstance(vb, (int, float)):
                same = _close(float(va), float(vb), rtol, atol)
            else:
                same = va == vb
            if not same:
                fields[key] = [va, vb]
        checked = it < check_iterations
        row = {"iteration": it, "checked": checked, "slate_mismatch": mismatch,
               "slates_ok": mismatch <= action_tol, "mismatched_fields": fields, "records_ok": not fields}
        if checked:
            ok = ok and row["slates_ok"] and row["records_ok"]
        rows.append(row)
    return {"ok": bool(ok), "iterations": rows}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--devices", nargs=2, default=["cpu", "cuda"], metavar=("REF", "OTHER"),
                    help="the reference device and the one compared with it (default cpu cuda)")
    ap.add_argument("--dataset", default="ml-100k", help="ml-100k (default), ml-1m or synthetic")
    ap.add_argument("--data-dir", default=default_data_dir())
    ap.add_argument("--iterations", type=int, default=5, help="FCPO iterations per device (default 5)")
    ap.add_argument("--check-iterations", type=int, default=2, help="how many first iterations must agree")
    ap.add_argument("--alpha", type=float, default=0.4, help="α' of the constraint (default 0.4: CPO steps)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--rtol", type=float, default=1e-3, help="relative tolerance on the logged numbers")
    ap.add_argument("--atol", type=float, default=1e-4, help="absolute tolerance on the logged numbers")
    ap.add_argument("--action-tol", type=float, default=1e-3, help="largest share of differing slate items")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    ap.add_argument("--out", default=None, help="JSON path (default results/benchmarks/gpu_check.json, "
                                                "written only when a CUDA device ran)")
    args = ap.parse_args(argv)
    for flag in ("iterations", "check_iterations", "threads"):
        if getattr(args, flag) < 1:
            ap.error(f"--{flag.replace('_', '-')} must be >= 1, got {getattr(args, flag)}")
    if args.check_iterations > args.iterations:
        ap.error(f"--check-iterations ({args.check_iterations}) exceeds --iterations ({args.iterations})")
    import torch

    uses_cuda = any(d.startswith("cuda") for d in args.devices)
    if uses_cuda and not torch.cuda.is_available():
        print("no CUDA device: skipped")
        return 0
    for d in args.devices:
        if not (d == "cpu" or d.startswith("cuda")):
            ap.error(f"--devices takes cpu, cuda or cuda:N, got {d!r}")
    torch.set_num_threads(args.threads)
    torch.set_float32_matmul_precision("highest")
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    info = machine_info()
    print(f"FCPO on {args.dataset}, {args.iterations} iterations, seed {args.seed}, devices {args.devices[0]} vs "
          f"{args.devices[1]}; threads {info['threads']}, load average {info['load_avg'][0]:.2f}", flush=True)
    runs = [train(d, args.dataset, args.data_dir, args.iterations, args.seed, args.alpha) for d in args.devices]
    result = compare(runs[0], runs[1], args.check_iterations, args.rtol, args.atol, args.action_tol)
    for row in result["iterations"]:
        flag = "checked" if row["checked"] else "reported"
        print(f"iteration {row['iteration']} ({flag}): slate items differing {100 * row['slate_mismatch']:.3f} % "
              f"(tol {100 * args.action_tol:.3f} %); fields outside tolerance: "
              f"{', '.join(row['mismatched_fields']) or 'none'}")
    timing = {r["device"] if i == 0 else f"{r['device']} (compared)": {
        "median_s": float(np.median(r["seconds"][1:] if len(r["seconds"]) > 1 else r["seconds"])),
        "seconds": r["seconds"]} for i, r in enumerate(runs)}
    for name, t in timing.items():
        print(f"{name}: median {t['median_s']:.3f} s per iteration (first {t['seconds'][0]:.3f} s)")
    print("agree" if result["ok"] else "DISAGREE", f"within rtol {args.rtol:g}, atol {args.atol:g}, "
          f"action tol {args.action_tol:g} over the first {args.check_iterations} iterations")
    if uses_cuda or args.out:
        payload = {"benchmark": "gpu_check", "args": vars(args), "devices": args.devices, "ok": result["ok"],
                   "users": runs[0]["users"], "timing": timing, "comparison": result["iterations"],
                   "machine_info_start": info, "machine_info_end": machine_info(),
                   "cuda_device": torch.cuda.get_device_name(0) if uses_cuda else None,
                   "records": {f"{i}:{r['device']}": r["records"] for i, r in enumerate(runs)}}
        path = write_json(args.out or RESULTS / "gpu_check.json", payload)
        print(f"wrote {path}")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
