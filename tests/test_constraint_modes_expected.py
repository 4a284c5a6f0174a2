"""``expected`` mode binds on the deployed policy (issue 11): the popular-group logit offset of the slate
actor, its calibration against the deployed-cost estimate, and short synthetic runs that end inside
the window [α' − margin − slack, α'] on the deployed (sampled) policy.

* the offset is the exponential tilt of the item softmax (hand-checked log-probabilities) and the same
  bias in the gaussian decoder (against the brute-force reference decoder); λ = 0 is bit-for-bit the
  actor without an offset; it is saved with the actor and old checkpoints load as λ = 0;
* :meth:`SlateActorCritic.calibrate_offset` lands within the tolerance below its target, where the
  uncalibrated policy is above it (so the check can fail), and :meth:`deployed_share` is exactly the
  evaluator's sampled train-split share;
* FCPO and PPO-Lagrangian in expected mode end below α' on the deployed policy, where their
  unprojected controls (``calibrate_offset=False``) do not.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from fcpo.agents import make_agent
from fcpo.agents.cpo import FCPOConfig
from fcpo.agents.ppo_lagrangian import PPOLagrangianConfig
from fcpo.agents.rollout import Batch
from fcpo.agents.trpo import TRPOConfig
from fcpo.envs import EnvSpec
from fcpo.evaluate import evaluate
from fcpo.policies.actor import SlateActor
from fcpo.policies.capped import capped_plackett_luce_log_prob, capped_row_decode_reference

pytestmark = pytest.mark.usefixtures("synthetic_only_one_thread")

STATIC = EnvSpec("fcpo/MovieLensFair-v0", {"dataset": "synthetic"})
ALPHA = 0.4


def _agent(name: str, alpha: float = ALPHA, constraint: str = "expected", **kw):
    cls = FCPOConfig if name == "fcpo" else PPOLagrangianConfig
    extra = dict(epochs=2) if name == "ppo-lagrangian" else {}
    extra["calibrate_offset"] = True
    extra.update(kw)
    cfg = cls(alpha_prime=alpha, constraint=constraint, users_per_iteration=0.5, **extra)
    return make_agent(name, cfg, STATIC, "cpu", 0)


def _actor(mode: str, n_items: int = 12, dim: int = 3, k: int = 3, seed: int = 0) -> SlateActor:
    gen = torch.Generator().manual_seed(seed)
    actor = SlateActor(torch.randn(n_items, dim, generator=gen), n_history=2, slate_size=k, mode=mode,
                       hidden=8, init_std=0.5, temperature=0.5)
    actor.set_groups(torch.arange(n_items) % 3 == 0)
    return actor


def _obs(actor: SlateActor, batch: int = 6, seed: int = 1) -> torch.Tensor:
    """Random observations [e(h_1) .. e(h_N) | e(u) | t/T] of the actor's width."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batch, (actor.encoder.n_history + 1) * actor.user_dim + 1, generator=gen)


# ------------------------------------------------------------------ the offset in the actor
def test_softmax_offset_is_the_exponential_tilt():
    actor, lam = _actor("softmax"), 0.7
    obs = _obs(actor)
    items = actor.sample(obs, generator=torch.Generator().manual_seed(0))[0]
    base = actor.mean_action(obs) @ actor.items.T / actor.temperature
    actor.set_popular_offset(lam)
    tilted = base - lam * actor.is_popular.float()
    expected = capped_plackett_luce_log_prob(tilted, items, None, None, None)
    torch.testing.assert_close(actor.action_log_prob(obs, items), expected)
    # slot 0 by hand: log softmax of the tilted scores at the chosen item
    by_hand = torch.log_softmax(tilted, dim=1).gather(1, items[:, :1]).squeeze(1)
    torch.testing.assert_close(actor.action_log_prob(obs, items, per_slot=True)[:, 0], by_hand)
    # the tilt lowers the probability mass on G0 at slot 0
    mass = lambda s: torch.softmax(s, dim=1)[:, actor.is_popular].sum(dim=1)  # noqa: E731
    assert bool((mass(tilted) < mass(base)).all())


def test_gaussian_offset_decoder_matches_the_reference_and_zero_is_exact():
    actor = _actor("gaussian", n_items=20, k=4)
    obs = _obs(actor, batch=16)
    w = actor.sample(obs, generator=torch.Generator().manual_seed(3))[1]
    exclude = torch.zeros(16, 20, dtype=torch.bool)
    exclude[:, 5] = True
    plain = actor.decode(w, exclude)
    actor.set_popular_offset(0.0)
    assert not actor.offset_active and torch.equal(actor.decode(w, exclude), plain)
    for lam in (0.3, 1.5, 50.0):
        actor.set_popular_offset(lam)
        ref = capped_row_decode_reference(w.view(-1, 4, actor.dim) @ actor.items.T - lam * actor.is_popular.float(),
                                          None, None, exclude)
        assert torch.equal(actor.decode(w, exclude), ref)
        assert torch.equal(actor.decode(w), capped_row_decode_reference(
            w.view(-1, 4, actor.dim) @ actor.items.T - lam * actor.is_popular.float(), None, None, None))
    # a huge offset leaves no G0 item (13 G1 items remain for 4 slots)
    assert not bool(actor.is_popular[actor.decode(w, exclude)].any())
    assert bool(actor.is_popular[plain].any())  # ... where the plain decoder picks some


def test_offset_is_saved_and_old_checkpoints_load_as_zero():
    actor = _actor("gaussian")
    actor.set_popular_offset(1.25)
    state = actor.state_dict()
    assert float(state["popular_offset"]) == 1.25
    fresh = _actor("gaussian")
    fresh.load_state_dict(state)
    assert float(fresh.popular_offset) == 1.25
    old = {k: v for k, v in state.items() if k != "popular_offset"}
    fresh.load_state_dict(old)
    assert float(fresh.popular_offset) == 0.0


def test_bad_offsets_are_clear_errors():
    actor = _actor("softmax")
    with pytest.raises(ValueError, match="popular_offset must be a finite number >= 0"):
        actor.set_popular_offset(-0.1)
    capped = SlateActor(torch.randn(12, 3), n_history=2, slate_size=3, mode="softmax", slate_cap=1,
                        is_popular=torch.arange(12) % 3 == 0)
    with pytest.raises(ValueError, match="uncapped"):
        capped.set_popular_offset(1.0)
    with pytest.raises(RuntimeError, match="set_groups"):
        SlateActor(torch.randn(12, 3), n_history=2, slate_size=3, mode="softmax").set_popular_offset(1.0)
    with pytest.raises(ValueError, match="calibration_users"):
        FCPOConfig(calibration_users=0.0)


def test_batch_c_uses_the_deployed_share_when_set():
    b = Batch.__new__(Batch)
    b.items = torch.zeros(4, 5, dtype=torch.long)
    b.ep_cost, b.ep_length, b.cost_limit_per_step, b.deployed_share = np.array([20.0, 30.0]), np.array([10, 10]), 2.0, None
    assert b.c == pytest.approx(25.0 - 20.0)
    b.deployed_share = 0.3  # 0.3 · 5 · 10 = 15 per episode
    assert b.c == pytest.approx(15.0 - 20.0)


# ------------------------------------------------------------------ calibration and short runs
def test_calibration_hits_its_target_on_the_deployed_estimate():
    agent = _agent("fcpo")
    cfg = agent.config
    target = ALPHA - cfg.calibration_margin
    assert agent.calibrating and float(agent.policy.popular_offset) == 0.0
    assert agent.deployed_share(5) > ALPHA + 0.05  # the uncalibrated (MF-initialised) policy is above the limit
    out = agent.calibrate_offset(5)
    assert out["popular_offset"] > 0 and float(agent.policy.popular_offset) == pytest.approx(out["popular_offset"])
    assert target - cfg.calibration_tolerance <= out["deployed_share"] <= target
    # the share measured at the final offset (same seed as the trials): on target, whether the last step
    # was measured or a short Newton step on the measured slope
    measured = agent.deployed_share(5)
    assert target - 2 * cfg.calibration_tolerance <= measured <= target + 0.005
    # the estimate is the evaluator's sampled share on the estimate's users (train split, training items excluded)
    report = evaluate(agent.policy, STATIC, split="train", seeds=(11,))
    assert abs(report["constraint"]["popular_share"] - out["deployed_share"]) < 0.03


@pytest.mark.parametrize("name", ["fcpo", "ppo-lagrangian"])
def test_short_expected_run_ends_tight_below_the_limit_on_the_deployed_policy(name):
    agent = _agent(name)
    for it in range(3):
        stats = agent.train_iteration(it)
    assert stats["deployed_share"] <= ALPHA - agent.config.calibration_margin + 1e-12
    assert stats["c"] < 0  # the update measured the constraint on the (feasible) deployed estimate
    test = evaluate(agent.policy, STATIC)["constraint"]["popular_share"]
    train = evaluate(agent.policy, STATIC, split="train")["constraint"]["popular_share"]
    for share in (test, train):
        assert ALPHA - 0.08 <= share <= ALPHA + 0.02
    # the same budget without the projection stays above the limit (so the checks above can fail)
    free = _agent(name, calibrate_offset=False)
    for it in range(3):
        free.train_iteration(it)
    assert float(free.policy.popular_offset) == 0.0
    assert evaluate(free.policy, STATIC)["constraint"]["popular_share"] > ALPHA + 0.05


def test_per_slate_and_alpha_one_never_calibrate():
    assert FCPOConfig(alpha_prime=ALPHA, constraint="expected").calibrate_offset  # on by default
    for agent in (_agent("fcpo", constraint="per-slate"), _agent("fcpo", alpha=1.0),
                  make_agent("trpo", TRPOConfig(alpha_prime=ALPHA, constraint="expected", calibrate_offset=True),
                             STATIC, "cpu", 0),
                  make_agent("fcpo", FCPOConfig(alpha_prime=ALPHA, constraint="expected", calibrate_offset=False),
                             STATIC, "cpu", 0)):
        assert not agent.calibrating
        stats = agent.train_iteration(0)
        assert "popular_offset" not in stats and float(agent.policy.popular_offset) == 0.0


def test_expected_mode_resumes_identically_from_a_checkpoint():
    import io

    a = _agent("fcpo")
    for it in range(2):
        a.train_iteration(it)
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    assert set(state) == {"policy", "value_r", "value_c", "opt_r", "opt_c", "generator", "numpy_rng"}
    assert bool((state["policy"]["offset_calibration"][:2] > 0).all())  # estimate and sensitivity saved
    b = make_agent("fcpo", a.config, STATIC, "cpu", 123)  # another seed: everything comes from the state
    b.load_state_dict(state)
    sa, sb = a.train_iteration(2), b.train_iteration(2)
    assert sa == sb
    old = dict(state, policy={k: v for k, v in state["policy"].items()
                              if k not in ("popular_offset", "offset_calibration")})
    c = make_agent("fcpo", a.config, STATIC, "cpu", 0)
    c.load_state_dict(old)  # a checkpoint from before the calibration: recalibrates on its first iteration
    assert c._deployed_share is None and "deployed_share" in c.train_iteration(2)
