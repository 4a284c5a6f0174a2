"""FCPO at the agent level: a binding α' moves the training cost towards the limit (more than the
unconstrained control does), the logged constraint quantities are consistent, and a checkpoint
round trip resumes exactly."""
from __future__ import annotations

import io
import math

import pytest
import torch

from fcpo.agents import Agent, make_agent
from fcpo.agents.cpo import FCPOAgent, FCPOConfig
from fcpo.envs import EnvSpec

pytestmark = pytest.mark.usefixtures("synthetic_only_one_thread")

ENV = EnvSpec("fcpo/MovieLensFair-v0", {"dataset": "synthetic"})
#: α' = 0.2 (at most 1 G0 item in 5) binds on the synthetic data (about 57 % G0 at the start)
FAST = dict(users_per_iteration=0.5, max_kl=0.3, constraint="expected", calibrate_offset=False)  # the plain CPO path


def run(alpha: float, iterations: int, seed: int = 0):
    agent = make_agent("fcpo", FCPOConfig(alpha_prime=alpha, **FAST), ENV, "cpu", seed)
    return agent, [agent.train_iteration(i) for i in range(iterations)]


def test_binding_constraint_moves_the_cost_towards_the_limit():
    agent, tight = run(0.2, 8)
    _, free = run(1.0, 8)
    assert isinstance(agent, FCPOAgent) and isinstance(agent, Agent)
    assert agent.cost_limit_per_step == pytest.approx(0.2 * 5)
    for s in tight:
        assert all(math.isfinite(v) for k, v in s.items() if k not in ("lambda", "nu", "cpo_case"))
        assert s["c"] == pytest.approx(s["cost"] - s["cost_limit"])  # undiscounted per-episode units
        assert s["cost_limit"] == pytest.approx(1.0 * s["episode_length"])  # α'K per step over the episode
        assert s["c"] > 0  # violated throughout: CPO works on recovery/constrained steps
    assert all(s["c"] < 0 for s in free)  # α' = 1 never binds: TRPO steps
    share = [s["popular_share"] for s in tight]
    assert share[-1] < share[0] - 0.08, share
    assert share[-1] < free[-1]["popular_share"] - 0.05, (share[-1], free[-1]["popular_share"])
    assert tight[-1]["c"] < tight[0]["c"] - 1.0  # the per-episode violation shrinks


def test_checkpoint_round_trip_resumes_identically():
    cfg = FCPOConfig(alpha_prime=0.2, **FAST)
    a = make_agent("fcpo", cfg, ENV, "cpu", seed=4)
    a.train_iteration(0)
    a.train_iteration(1)
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    assert set(state) == {"policy", "value_r", "value_c", "opt_r", "opt_c", "generator", "numpy_rng"}
    b = make_agent("fcpo", cfg, ENV, "cpu", seed=123)  # another seed: everything must come from the state
    b.load_state_dict(state)
    assert b.train_iteration(2) == a.train_iteration(2)
    for pa, pb in zip(a.policy.parameters(), b.policy.parameters()):
        torch.testing.assert_close(pa, pb, rtol=0, atol=0)
    with pytest.raises(KeyError, match="numpy_rng"):
        b.load_state_dict({k: v for k, v in state.items() if k != "numpy_rng"})


def test_solver_opt_ins_reach_the_cpo_update():
    """``kl_rescale_backtracking`` / ``cost_solve`` are agent config fields (``fcpo-train --set``) that reach
    the solver; a bad value is refused when the config is built."""
    cfg = FCPOConfig(alpha_prime=0.2, cost_solve="subspace", cost_subspace_dim=3, kl_rescale_backtracking=True,
                     **FAST)
    solver = cfg.solver_config()
    assert (solver.cost_solve, solver.cost_subspace_dim, solver.kl_rescale_backtracking) == ("subspace", 3, True)
    agent = make_agent("fcpo", cfg, ENV, "cpu", 0)
    stats = agent.train_iteration(0)
    assert math.isfinite(stats["kl"]) and stats["kl"] <= cfg.max_kl * 1.0001
    with pytest.raises(ValueError, match="cost_solve"):
        FCPOConfig(alpha_prime=0.2, cost_solve="qr")
