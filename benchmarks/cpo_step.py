"""Benchmark: one CPO policy update vs one TRPO update, the accuracy of each way of solving for
H^-1 b, and CG iterations vs parameter count.

Self-contained (only ``fcpo.solvers`` from the package).  A Gaussian MLP policy
(default 107 -> 128 -> 128 -> 64 with a state-independent log-std: 38,656
parameters, close to the 38,664 of the FCPO authors' ml-100k policy) over 9,430
random samples.  One update is everything after the rollout: surrogate
forward pass, gradient(s), KL graph, CG solve(s), the dual (CPO), line search.

    OMP_NUM_THREADS=1 python benchmarks/cpo_step.py --threads 1 --out results/benchmarks/cpo_step.json

The timed CPO update has its constraint active (c = -0.3 sqrt(2 delta s): the dual solution, both
systems); the inactive case (c = -2 sqrt(2 delta s)) and the recovery case are timed alongside.
``cost_solve_accuracy`` compares the cold CG solve of H x = b with the recycled-subspace solve and a
Galerkin warm start plus k CG iterations against a converged float64 solve.

The JSON records the thread count and ``os.getloadavg()`` at start and end;
wall times on a shared machine drift with the load, process CPU times less.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from typing import Callable

import torch
from torch import nn

from fcpo.solvers import (
    CPOConfig,
    backtracking_line_search,
    conjugate_gradient,
    cpo_step,
    cpo_update,
    fisher_vector_product,
    flat_grad,
    flat_params,
    process_advantages,
    set_flat_params,
    trpo_step,
    trpo_update,
)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from iteration_floor import copy_rates, floor_table  # noqa: E402


class GaussianMLP(nn.Module):
    def __init__(self, obs_dim: int, hidden: int, act_dim: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(obs_dim, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh(), nn.Linear(hidden, act_dim)
        )
        self.log_std = nn.Parameter(torch.full((act_dim,), -0.5))

    def forward(self, s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.net(s), self.log_std


def log_prob(mu, log_std, a):
    return (-0.5 * ((a - mu) / log_std.exp()) ** 2 - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)


def mean_kl(mu0, ls0, mu1, ls1):
    """Mean over states of KL(pi_old || pi_new) for diagonal Gaussians."""
    v0, v1 = (2 * ls0).exp(), (2 * ls1).exp()
    return (ls1 - ls0 + (v0 + (mu0 - mu1) ** 2) / (2 * v1) - 0.5).sum(-1).mean()


class Problem:
    """Policy, batch and the closures an agent would build for one update."""

    def __init__(self, n: int, obs_dim: int, hidden: int, act_dim: int, seed: int, dtype=torch.float32,
                 episode_len: float = 10.0, fvp_subsample: int = 1, fvp_batched: bool | None = None):
        torch.manual_seed(seed)
        self.policy = GaussianMLP(obs_dim, hidden, act_dim).to(dtype)
        self.params = list(self.policy.parameters())
        self.n_params = sum(p.numel() for p in self.params)
        self.states = torch.randn(n, obs_dim, dtype=dtype)
        with torch.no_grad():
            self.mu0, ls0 = self.policy(self.states)
            self.ls0 = ls0.clone()
            self.actions = self.mu0 + ls0.exp() * torch.randn_like(self.mu0)
            self.logp0 = log_prob(self.mu0, self.ls0, self.actions)
        adv_r = torch.randn(n, dtype=dtype)
        adv_c = 0.5 * adv_r + torch.rand(n, dtype=dtype)  # costs correlated with rewards
        cfg = CPOConfig()
        self.adv_r = process_advantages(adv_r, centre=cfg.centre_reward_advantages, rescale=cfg.rescale_reward_advantages)
        self.adv_c = process_advantages(adv_c, centre=cfg.centre_cost_advantages, rescale=cfg.rescale_cost_advantages)
        self.episode_len = episode_len  # cost surrogate in per-episode units
        self.theta0 = flat_params(self.params)
        self.sub = slice(None, None, fvp_subsample)  # Fisher on every k-th sample (baselines' TRPO uses 5)
        self.fvp_batched = fvp_batched

    def as_float64(self) -> "Problem":
        """The same problem (same draws) in float64, for converged reference solves."""
        pb = Problem.__new__(Problem)
        pb.__dict__.update(self.__dict__)
        pb.policy = GaussianMLP(self.states.shape[1], self.policy.net[0].out_features, self.mu0.shape[1])
        pb.policy.load_state_dict(self.policy.state_dict())
        pb.policy = pb.policy.double()
        pb.params = list(pb.policy.parameters())
        for name in ("states", "mu0", "ls0", "actions", "logp0", "adv_r", "adv_c"):
            setattr(pb, name, getattr(self, name).double())
        pb.theta0 = flat_params(pb.params)
        return pb

    def reset(self) -> None:
        set_flat_params(self.params, self.theta0)

    def surrogates(self):
        mu, ls = self.policy(self.states)
        ratio = (log_prob(mu, ls, self.actions) - self.logp0).exp()
        return (ratio * self.adv_r).mean(), self.episode_len * (ratio * self.adv_c).mean(), mu, ls

    def kl(self) -> torch.Tensor:
        mu, ls = self.policy(self.states[self.sub])
        return mean_kl(self.mu0[self.sub], self.ls0, mu, ls)

    def evaluate(self, theta: torch.Tensor):
        set_flat_params(self.params, theta)
        with torch.no_grad():
            lr, lc, mu, ls = self.surrogates()
            return float(lr), float(lc), float(mean_kl(self.mu0, self.ls0, mu, ls))

    def hvp(self, cfg: CPOConfig, method: str) -> Callable:
        if method == "func":
            from torch.func import functional_call

            names = [k for k, _ in self.policy.named_parameters()]

            def kl_fn(ps):
                mu, ls = functional_call(self.policy, dict(zip(names, ps)), (self.states[self.sub],))
                return mean_kl(self.mu0[self.sub], self.ls0, mu, ls)

            return fisher_vector_product(kl_fn, self.params, damping=cfg.damping, method="func",
                                         batched=self.fvp_batched)
        if method == "gauss_newton":
            mu0, ls0 = self.mu0[self.sub], self.ls0
            return fisher_vector_product(lambda out: mean_kl(mu0, ls0, *out), self.params, damping=cfg.damping,
                                         method="gauss_newton", outputs_fn=lambda: self.policy(self.states[self.sub]))
        return fisher_vector_product(self.kl, self.params, damping=cfg.damping, method="autograd",
                                     batched=self.fvp_batched)


def trpo_once(pb: Problem, cfg: CPOConfig, method: str):
    lr, lc, _, _ = pb.surrogates()
    g = flat_grad(lr, pb.params)
    hvp = pb.hvp(cfg, method)
    base = (lr.item(), lc.item())
    res = trpo_update(pb.theta0, g, hvp, pb.evaluate, config=cfg, baseline=base)
    set_flat_params(pb.params, res.params)
    return res


def cpo_once(pb: Problem, cfg: CPOConfig, method: str, c: float, baseline: bool = True):
    lr, lc, _, _ = pb.surrogates()
    # two plain backward passes: on CPU they measured faster than one batched
    # flat_grad(torch.stack([lr, lc]), ...) (is_grads_batched)
    g = flat_grad(lr, pb.params, retain_graph=True)
    b = flat_grad(lc, pb.params)
    hvp = pb.hvp(cfg, method)
    base = (lr.item(), lc.item()) if baseline else None  # surrogates at theta_k: no evaluation spent there
    res = cpo_update(pb.theta0, g, b, c, hvp, pb.evaluate, config=cfg, baseline=base)
    set_flat_params(pb.params, res.params)
    return res


def timeit(fn: Callable[[], object], reset: Callable[[], None]) -> tuple[float, float, object]:
    """(wall seconds, process CPU seconds, result); CPU time is steadier on a shared machine."""
    reset()
    w0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    w, c = time.perf_counter() - w0, time.process_time() - c0
    reset()
    return w, c, out


def parse_variant(spec: str) -> tuple[str, int, bool | None, bool, dict]:
    """``method[:subsample[:b|s[:j|q]]][+subN|+cg|+full]``: FVP method, Fisher subsample step, batched (b)
    or row loop (s) products of a stack, joint lock-step CG (j, default) or sequential CG solves (q) for g
    and b; ``+subN``: ``cost_solve="subspace"`` with ``cost_subspace_dim=N``, ``+cg``: ``cost_solve="cg"``,
    ``+full``: also no inactive-constraint shortcut (the solver before issue 17)."""
    spec, _, solve = spec.partition("+")
    extra: dict = {}
    if solve.startswith("sub"):
        extra = {"cost_solve": "subspace", "cost_subspace_dim": int(solve[3:] or 2)}
    elif solve == "cg":
        extra = {"cost_solve": "cg"}
    elif solve == "full":
        extra = {"cost_solve": "cg", "skip_inactive_cost_solve": False}
    elif solve:
        raise ValueError(f"unknown cost solve {solve!r} in variant {spec}+{solve}")
    parts = spec.split(":")
    method = parts[0]
    sub = int(parts[1]) if len(parts) > 1 and parts[1] else 1
    batched = {"b": True, "s": False}.get(parts[2]) if len(parts) > 2 else None
    joint = {"j": True, "q": False}.get(parts[3], CPOConfig.joint_cg) if len(parts) > 3 else CPOConfig.joint_cg
    return method, sub, batched, joint, extra


def count_evaluations(pb: Problem, fn: Callable[[], object]) -> int:
    """Number of full-batch ``evaluate`` calls made by ``fn`` (line-search cost)."""
    calls = [0]
    inner = pb.evaluate

    def counted(theta):
        calls[0] += 1
        return inner(theta)

    pb.evaluate = counted
    try:
        fn()
    finally:
        pb.evaluate = inner
        pb.reset()
    return calls[0]


def bench_updates(args, spec: str) -> dict:
    method, sub, batched, joint, extra = parse_variant(spec)
    cfg = CPOConfig(max_kl=args.max_kl, cg_iters=args.cg_iters, damping=args.damping, joint_cg=joint, **extra)
    pb = Problem(args.samples, args.obs_dim, args.hidden, args.act_dim, args.seed,
                 fvp_subsample=sub, fvp_batched=batched)
    # choose c so that the constraint cuts the trust region (dual solution, the
    # expensive and typical case): c = -0.3 sqrt(2 delta s), s from an untimed solve
    lr, lc, _, _ = pb.surrogates()
    g = flat_grad(lr, pb.params, retain_graph=True)
    b = flat_grad(lc, pb.params)
    probe = cpo_step(g, b, 0.0, cfg.max_kl, pb.hvp(cfg, method), config=CPOConfig(
        max_kl=args.max_kl, cg_iters=args.cg_iters, damping=args.damping, skip_inactive_cost_solve=False))
    c = -0.3 * math.sqrt(2 * cfg.max_kl * probe.s)
    c_inactive = -2.0 * math.sqrt(2 * cfg.max_kl * probe.s)  # never reached inside the region: TRPO step
    c_recovery = 2.0 * math.sqrt(2 * cfg.max_kl * probe.s)  # infeasible, out of reach: eq. (14)
    pb.reset()

    # warm-up (allocator, autograd caches)
    trpo_once(pb, cfg, method); pb.reset()
    cpo_once(pb, cfg, method, c); pb.reset()

    t_trpo, t_cpo, cpu_trpo, cpu_cpo, t_rec, t_inact = [], [], [], [], [], []
    last = {}
    for _ in range(args.repeats):  # interleaved so that load changes hit both alike
        w, cp, r = timeit(lambda: trpo_once(pb, cfg, method), pb.reset)
        t_trpo.append(w); cpu_trpo.append(cp); last["trpo"] = r
        w, cp, r = timeit(lambda: cpo_once(pb, cfg, method, c), pb.reset)
        t_cpo.append(w); cpu_cpo.append(cp); last["cpo"] = r
        w, _, r = timeit(lambda: cpo_once(pb, cfg, method, c_recovery), pb.reset)
        t_rec.append(w); last["recovery"] = r
        w, _, r = timeit(lambda: cpo_once(pb, cfg, method, c_inactive), pb.reset)
        t_inact.append(w); last["inactive"] = r
    evals = {"cpo_with_baseline": count_evaluations(pb, lambda: cpo_once(pb, cfg, method, c)),
             "cpo_without_baseline": count_evaluations(pb, lambda: cpo_once(pb, cfg, method, c, baseline=False)),
             "trpo_with_baseline": count_evaluations(pb, lambda: trpo_once(pb, cfg, method))}

    # components (median process CPU seconds): one product, a (2, n) stack in one call,
    # two single calls; CG with one RHS, two RHS in one loop, two RHS in two loops
    hvp = pb.hvp(cfg, method)
    v1 = torch.randn(pb.n_params)
    v2 = torch.randn(2, pb.n_params)
    gd, bd = g.detach(), b.detach()
    ref = pb.hvp(cfg, "autograd")(v1)  # same products, whatever the method: check
    fvp_rel_diff = float((hvp(v1) - ref).norm() / ref.norm())
    parts = {
        "fvp_1": lambda: hvp(v1),
        "fvp_stack_2": lambda: hvp(v2),
        "fvp_2_calls": lambda: (hvp(v2[0]), hvp(v2[1])),
        "cg_1_rhs": lambda: conjugate_gradient(hvp, gd, cfg.cg_iters, cfg.cg_residual_tol),
        "cg_2_rhs_one_loop": lambda: conjugate_gradient(hvp, torch.stack([gd, bd]), cfg.cg_iters,
                                                        cfg.cg_residual_tol),
        "cg_2_rhs_two_loops": lambda: (conjugate_gradient(hvp, gd, cfg.cg_iters, cfg.cg_residual_tol),
                                       conjugate_gradient(hvp, bd, cfg.cg_iters, cfg.cg_residual_tol)),
    }
    comp = {}
    for name, fn in parts.items():
        fn()
        ts = []
        for _ in range(args.repeats):
            t0 = time.process_time(); fn(); ts.append(time.process_time() - t0)
        comp[name] = statistics.median(ts)

    mt, mc = statistics.median(t_trpo), statistics.median(t_cpo)
    cs, ts_ = last["cpo"].step, last["trpo"].step
    floor = fvp_floor(hvp, v1)
    # an exact second solve costs cg_iters more products; with every product at its floor and the rest of
    # the update as measured, CPO / TRPO = 1 + F0 / (C + F0) at best (C: TRPO's time outside its CG solve)
    rest = max(0.0, mt - comp["cg_1_rhs"])
    f0 = cfg.cg_iters * floor["floor_s"]
    return {
        "variant": spec,
        "cost_solve": cfg.cost_solve,
        "cost_subspace_dim": cfg.cost_subspace_dim if cfg.cost_solve == "subspace" else None,
        "skip_inactive_cost_solve": cfg.skip_inactive_cost_solve,
        "fvp_method": method,
        "fvp_subsample": sub,
        "fvp_batched": batched if batched is not None else (method == "func"),
        "joint_cg": joint,
        "fvp_rel_diff_vs_autograd": fvp_rel_diff,
        "cpo_recovery_s": t_rec,
        "cpo_recovery_median_s": statistics.median(t_rec),
        "ratio_recovery_over_trpo": statistics.median(t_rec) / mt,
        "cpo_recovery_case": last["recovery"].step.case,
        "cpo_inactive_s": t_inact,
        "ratio_inactive_over_trpo": statistics.median(t_inact) / mt,
        "cpo_inactive_case": last["inactive"].step.case,
        "line_search_evaluations": evals,
        "n_params": pb.n_params,
        "n_samples": args.samples,
        "c": c,
        "trpo_s": t_trpo,
        "cpo_s": t_cpo,
        "trpo_median_s": mt,
        "cpo_median_s": mc,
        "ratio_cpo_over_trpo": mc / mt,
        "trpo_cpu_s": cpu_trpo,
        "cpo_cpu_s": cpu_cpo,
        "ratio_cpu": statistics.median(cpu_cpo) / statistics.median(cpu_trpo),
        "components_median_s": comp,
        "fvp_floor": floor,
        "fvp_over_floor": comp["fvp_1"] / floor["floor_s"] if floor["floor_s"] > 0 else float("nan"),
        "ratio_lower_bound_products_at_floor": 1.0 + f0 / (rest + f0) if rest + f0 > 0 else float("nan"),
        "cpo_case": cs.case,
        "cpo_lam": cs.lam,
        "cpo_nu": cs.nu,
        "cpo_cg_iterations": cs.cg.iterations if cs.cg else 0,
        "cpo_cg_residuals": list(cs.cg.residual_norms) if cs.cg else [],
        "cpo_line_search": {"fraction": last["cpo"].line_search.fraction,
                            "n_backtracks": last["cpo"].line_search.n_backtracks,
                            "kl": last["cpo"].line_search.kl},
        "trpo_line_search": {"fraction": last["trpo"].line_search.fraction,
                             "n_backtracks": last["trpo"].line_search.n_backtracks,
                             "kl": last["trpo"].line_search.kl},
        "trpo_cg_iterations": ts_.cg.iterations,
    }


def fvp_floor(hvp: Callable, v: torch.Tensor) -> dict:
    """One Fisher-vector product's one-core floor (``benchmarks/iteration_floor.py``'s model: its matrix
    products replayed alone, every other op at the copy rate for its bytes), from a profiled call."""
    from torch.profiler import ProfilerActivity, profile

    hvp(v)
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        hvp(v)
    table = floor_table([ev for ev in prof.events() if ev.device_type == torch.autograd.DeviceType.CPU], 1,
                        copy_rates())
    return {k: table[k] for k in ("floor_s", "gemm_floor_s", "gemm_self_s", "gemm_flops", "memory_floor_s",
                                  "data_self_s", "ops_self_s")}


def _warm_start_step(g, b, c, hvp, cfg: CPOConfig, k: int):
    """Issue 17's first recycling idea: Galerkin warm start x0 = P (P^T H P)^-1 P^T b for H^-1 b from the
    g-solve's CG directions P (zero products: H P is kept), then k CG iterations on the residual."""
    from fcpo.solvers.cpo import _dual_step

    res_g = conjugate_gradient(hvp, g, cfg.cg_iters, cfg.cg_residual_tol, keep_directions=True)
    P, HP = res_g.directions, res_g.direction_products
    coef = (P @ b) / (P * HP).sum(dim=1)
    x0, r0 = coef @ P, b - coef @ HP
    corr = conjugate_gradient(hvp, r0, k, cfg.cg_residual_tol) if k > 0 else None
    vb = x0 + corr.x if corr is not None else x0
    residual0 = float(r0.norm())
    return _dual_step(g, b, res_g.x, vb, c, cfg.max_kl, res_g), residual0


class CountingHvp:
    def __init__(self, hvp):
        self.hvp, self.rows = hvp, 0

    def __call__(self, v):
        self.rows += 1 if v.dim() == 1 else v.shape[0]
        return self.hvp(v)


def cost_solve_accuracy(args) -> dict:
    """Each way of bringing H^-1 b into the step against a converged float64 solve of the same problem:
    reward gain g^T x, model KL 0.5 x^T H x and b^T x + c with the float64 H, distance to the converged
    step, and the line search's outcome on the float32 problem.  Same c as the timed CPO update."""
    base = CPOConfig(max_kl=args.max_kl, cg_iters=args.cg_iters, damping=args.damping)
    pb = Problem(args.samples, args.obs_dim, args.hidden, args.act_dim, args.seed)
    lr, lc, _, _ = pb.surrogates()
    g = flat_grad(lr, pb.params, retain_graph=True).detach()
    b = flat_grad(lc, pb.params).detach()
    full = base.replace(skip_inactive_cost_solve=False, cost_solve="cg")
    probe = cpo_step(g, b, 0.0, base.max_kl, pb.hvp(base, "autograd"), config=full)
    c = -0.3 * math.sqrt(2 * base.max_kl * probe.s)
    pb64 = pb.as_float64()
    lr64, lc64, _, _ = pb64.surrogates()
    g64 = flat_grad(lr64, pb64.params, retain_graph=True).detach()
    b64 = flat_grad(lc64, pb64.params).detach()
    hvp64 = pb64.hvp(base, "autograd")
    t0 = time.perf_counter()
    ref = cpo_step(g64, b64, c, base.max_kl, hvp64,
                   config=full.replace(cg_iters=args.ref_cg_iters, cg_residual_tol=1e-9))
    ref_s = time.perf_counter() - t0
    xr = ref.direction
    out = {"c": c, "reference": {"cg_iters": args.ref_cg_iters, "residual_norms": list(ref.cg.residual_norms),
                                 "rhs_norms": list(ref.cg.rhs_norms), "case": ref.case, "nu": ref.nu,
                                 "reward_gain": float(g64 @ xr), "seconds": ref_s}, "variants": []}
    print(f"\nH^-1 b in the step, against a float64 CG solve of {args.ref_cg_iters} iterations "
          f"(residuals {', '.join(f'{r:.1e}' for r in ref.cg.residual_norms)}; g^T x* = {float(g64 @ xr):.5f})")
    print(f"{'cost solve':22s} {'products':>8s} {'g^T x/g^T x*':>12s} {'|x-x*|/|x*|':>11s} {'0.5xHx/delta':>12s} "
          f"{'b^T x+c':>9s} {'LS frac':>7s} {'LS kl':>7s} {'LS dreward':>10s}")
    # TRPO's own truncation, for scale: its cg_iters step against its converged float64 step
    trpo_ref = trpo_step(g64, base.max_kl, hvp64, config=base, cg_iters=args.ref_cg_iters, cg_residual_tol=1e-9)
    trpo_cut = trpo_step(g, base.max_kl, pb.hvp(base, "autograd"), config=base).direction.double()
    out["trpo"] = {"products": args.cg_iters, "reward_gain_over_reference":
                   float(g64 @ trpo_cut) / float(g64 @ trpo_ref.direction),
                   "rel_distance_to_reference": float((trpo_cut - trpo_ref.direction).norm() / trpo_ref.direction.norm())}
    print(f"{'TRPO (for scale)':22s} {args.cg_iters:8d} {out['trpo']['reward_gain_over_reference']:12.4f} "
          f"{out['trpo']['rel_distance_to_reference']:11.4f}   (its {args.cg_iters}-iteration step against its converged one)")
    rows = [("cg (cold, 2 x cg_iters)", full, None)] + \
           [(f"subspace {m}", base.replace(cost_solve="subspace", cost_subspace_dim=m, skip_inactive_cost_solve=False),
             None) for m in (1, 2, 3, 4)] + [(f"warm start + {k} CG", full, k) for k in (0, 2, 3, 5)]
    for name, cfg, k in rows:
        hvp = CountingHvp(pb.hvp(cfg, "autograd"))
        extra = {}
        if k is None:
            step = cpo_step(g, b, c, cfg.max_kl, hvp, config=cfg)
        else:
            step, extra["warm_start_residual"] = _warm_start_step(g, b, c, hvp, cfg, k)
        x = step.direction.double()
        pb.reset()
        ls = backtracking_line_search(pb.evaluate, pb.theta0, step.direction, c=c, delta=cfg.max_kl,
                                      require_improvement=True, backtrack_ratio=cfg.backtrack_ratio,
                                      max_backtracks=cfg.max_backtracks, baseline=(lr.item(), lc.item()))
        pb.reset()
        row = {"cost_solve": name, "products": hvp.rows, "case": step.case, "nu": step.nu,
               "reward_gain": float(g64 @ x), "reward_gain_over_reference": float(g64 @ x) / float(g64 @ xr),
               "rel_distance_to_reference": float((x - xr).norm() / xr.norm()),
               "model_kl_over_delta": 0.5 * float(x @ hvp64(x)) / cfg.max_kl,
               "linearised_cost": float(b64 @ x) + c,
               "line_search": {"fraction": ls.fraction, "kl": ls.kl, "reward_change": ls.reward_change,
                               "cost_change": ls.cost_change, "accepted": ls.accepted}, **extra}
        out["variants"].append(row)
        print(f"{name:22s} {row['products']:8d} {row['reward_gain_over_reference']:12.4f} "
              f"{row['rel_distance_to_reference']:11.4f} {row['model_kl_over_delta']:12.4f} "
              f"{row['linearised_cost']:9.2e} {ls.fraction:7.3f} {ls.kl:7.4f} {ls.reward_change:10.3e}", flush=True)
    return out


def cg_sweep(args) -> list[dict]:
    """CG iterations to reach ||r|| <= 1e-10 (absolute, and relative to ||g||), float64."""
    rows = []
    cfg = CPOConfig(damping=args.damping)
    for h in args.sweep_hidden:
        pb = Problem(args.sweep_samples, args.obs_dim, h, args.act_dim, args.seed, dtype=torch.float64)
        lr, _, _, _ = pb.surrogates()
        g = flat_grad(lr, pb.params).detach()
        hvp = pb.hvp(cfg, "autograd")
        t0 = time.perf_counter()
        res = conjugate_gradient(hvp, g, max_iters=args.sweep_max_iters, residual_tol=args.sweep_tol * 1e-3)
        dt = time.perf_counter() - t0
        hist = [h_[0] for h_ in res.residual_history]
        gn = hist[0]
        abs_it = next((i for i, r in enumerate(hist) if r <= args.sweep_tol), None)
        rel_it = next((i for i, r in enumerate(hist) if r <= args.sweep_tol * gn), None)
        rows.append({"hidden": h, "n_params": pb.n_params, "grad_norm": gn, "iters_abs": abs_it,
                     "iters_rel": rel_it, "final_residual": hist[-1], "iterations_run": res.iterations,
                     "seconds": dt, "residual_at_10": hist[min(10, len(hist) - 1)]})
        print(f"  hidden={h:4d} params={pb.n_params:7d} |g|={gn:.2e} iters(|r|<=1e-10)={abs_it} "
              f"iters(|r|/|g|<=1e-10)={rel_it} |r|@10={rows[-1]['residual_at_10']:.2e} ({dt:.1f}s)", flush=True)
    return rows


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="results/benchmarks/cpo_step.json")
    ap.add_argument("--samples", type=int, default=9430)
    ap.add_argument("--obs-dim", type=int, default=107)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--act-dim", type=int, default=64)
    ap.add_argument("--max-kl", type=float, default=0.01)
    ap.add_argument("--cg-iters", type=int, default=10)
    ap.add_argument("--damping", type=float, default=0.1)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    ap.add_argument("--variants", default="autograd,autograd+full,autograd+sub3,autograd:1:b,gauss_newton,autograd:5",
                    help="comma list of method[:fisher_subsample[:b|s[:j|q]]][+subN|+cg|+full] (b: vmapped batch "
                         "of RHS, s: row loop; +subN: cost_solve='subspace' with N extra products, +full: the "
                         "solver before issue 17, no inactive-constraint shortcut)")
    ap.add_argument("--accuracy", type=int, default=1, help="1: compare the cost solves with a converged one")
    ap.add_argument("--ref-cg-iters", type=int, default=150, help="CG iterations of the float64 reference")
    ap.add_argument("--sweep-hidden", default="8,16,32,64,128")
    ap.add_argument("--sweep-samples", type=int, default=2000)
    ap.add_argument("--sweep-max-iters", type=int, default=600)
    ap.add_argument("--sweep-tol", type=float, default=1e-10)
    args = ap.parse_args(argv)
    args.sweep_hidden = [int(x) for x in args.sweep_hidden.split(",") if x]
    if args.threads:
        torch.set_num_threads(args.threads)

    load = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads "
          f"(OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}), {platform.processor() or platform.machine()}, "
          f"load avg {load}")
    results = {"args": vars(args), "torch": torch.__version__, "threads": torch.get_num_threads(),
               "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
               "python": sys.version.split()[0], "cpu_count": os.cpu_count(),
               "load_avg_start": load, "updates": []}
    print(f"\nOne policy update, {args.samples} samples, float32, cg_iters={args.cg_iters}, median of {args.repeats}")
    print(f"{'variant':12s} {'params':>7s} {'TRPO s':>8s} {'CPO s':>8s} {'ratio':>6s} {'cpu r':>6s} {'fvp1':>7s} {'fvp2':>7s} "
          f"{'fvp1x2':>7s} {'cg1':>7s} {'cg2':>7s} {'cg2x1':>7s}  case")
    for spec in [m for m in args.variants.split(",") if m]:
        r = bench_updates(args, spec)
        results["updates"].append(r)
        cp = r["components_median_s"]
        print(f"{spec:12s} {r['n_params']:7d} {r['trpo_median_s']:8.3f} {r['cpo_median_s']:8.3f} "
              f"{r['ratio_cpo_over_trpo']:6.2f} {r['ratio_cpu']:6.2f} {cp['fvp_1']:7.3f} {cp['fvp_stack_2']:7.3f} "
              f"{cp['fvp_2_calls']:7.3f} {cp['cg_1_rhs']:7.3f} {cp['cg_2_rhs_one_loop']:7.3f} "
              f"{cp['cg_2_rhs_two_loops']:7.3f}  {r['cpo_case']} (nu={r['cpo_nu']:.3g}, "
              f"ls frac {r['cpo_line_search']['fraction']:.3g})", flush=True)
        fl = r["fvp_floor"]
        print(f"{'':12s} one product {cp['fvp_1']:.4f} s, floor {fl['floor_s']:.4f} s (matrix products "
              f"{fl['gemm_floor_s']:.4f} s for {fl['gemm_flops'] / 1e9:.2f} GFLOP, memory {fl['memory_floor_s']:.4f} s): "
              f"{r['fvp_over_floor']:.2f}x; an exact second solve with every product at its floor: CPO/TRPO >= "
              f"{r['ratio_lower_bound_products_at_floor']:.2f}", flush=True)
        ev = r["line_search_evaluations"]
        print(f"{'':12s} inactive constraint: ratio {r['ratio_inactive_over_trpo']:.2f} ({r['cpo_inactive_case']})",
              flush=True)
        print(f"{'':12s} recovery step {r['cpo_recovery_median_s']:.3f} s (ratio {r['ratio_recovery_over_trpo']:.2f},"
              f" {r['cpo_recovery_case']}); line-search evaluations CPO {ev['cpo_with_baseline']} with baseline,"
              f" {ev['cpo_without_baseline']} without; TRPO {ev['trpo_with_baseline']}", flush=True)
    print("variant = fvp method[:Fisher on every k-th sample[:b batched RHS | s row loop[:j joint | q sequential CG]]]"
          "[+subN recycled subspace | +full no inactive shortcut]\n"
          "ratio = median wall time CPO / TRPO (target <= 1.3); cpu r = same with process CPU time.\n"
          "components, median CPU s: fvp1 one product, fvp2 a (2, n) stack in one call, fvp1x2 two calls;\n"
          "cg1 one RHS, cg2 two RHS in one loop, cg2x1 two RHS in two loops (cg_iters each)")

    if args.accuracy:
        results["cost_solve_accuracy"] = cost_solve_accuracy(args)
    if args.sweep_hidden:
        print(f"\nCG iterations to a 1e-10 residual (float64, damping={args.damping}, "
              f"{args.sweep_samples} samples, cap {args.sweep_max_iters})")
        results["cg_sweep"] = cg_sweep(args)
    results["load_avg_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    print(f"load avg at end {results['load_avg_end']}")

    out_dir = os.path.dirname(os.path.abspath(args.out))
    os.makedirs(out_dir, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out_dir, prefix=".cpo_step.")
    with os.fdopen(fd, "w") as fh:  # atomic: never a half-written result file
        json.dump(results, fh, indent=2)
    os.replace(tmp, args.out)
    print(f"\nwrote {args.out}")
    return results


if __name__ == "__main__":
    main()
