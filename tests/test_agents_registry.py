"""The agent registry (self-loading, loud on broken modules and duplicates), documented config fields,
the checkpoint mixin, and every agent training on BOTH registered envs through an EnvSpec."""
from __future__ import annotations

import dataclasses
import io
import math
import subprocess
import sys
import warnings

import numpy as np
import pytest
import gymnasium as gym
import torch

import fcpo.agents
from fcpo.agents import AGENTS, config_fields, get_agent_spec, make_agent, param, register_agent
from fcpo.agents.base import _Registry, as_env_spec
from fcpo.agents.checkpoint import Checkpointed
from fcpo.agents.cpo import FCPOConfig
from fcpo.envs import EnvSpec

ALL = ("fcpo", "ialp", "ialp-ap", "ialp-ft", "ppo-lagrangian", "tpgr", "trpo", "wolpertinger")
ENV_IDS = sorted(i for i in gym.registry if i.startswith("fcpo/"))  # every registered fcpo env
TINY_ENV = {"dataset": "synthetic", "horizon": 4, "embedding_dim": 8}
TINY = {
    "fcpo": dict(alpha_prime=0.4, users_per_iteration=0.25),
    "trpo": dict(users_per_iteration=0.25),
    "ppo-lagrangian": dict(alpha_prime=0.4, users_per_iteration=0.25, epochs=1),
    "wolpertinger": dict(alpha_prime=0.4, actor_hidden=(32,), critic_hidden=(32, 32), num_envs=16,
                         updates_per_iteration=2, warmup=16, batch_size=16, buffer_size=1000),
    "tpgr": dict(alpha_prime=0.4, max_users=16, rollouts_per_user=2),
    "ialp-ft": dict(oracle_states=48, pretrain_iterations=1, pretrain_users=16, online_users=16, reward_epochs=2,
                    ppo_epochs=1, ppo_batch=64),
}


# ------------------------------------------------------------------------------------ registry
def test_a_fresh_process_sees_every_agent_without_imports():
    code = "from fcpo.agents import AGENTS, make_agent; print(' '.join(sorted(AGENTS)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300)
    assert tuple(out.stdout.split()) == ALL


def test_duplicates_and_undocumented_configs_are_refused():
    assert set(AGENTS) == set(ALL)
    with pytest.raises(ValueError, match="already registered"):
        register_agent("fcpo", FCPOConfig, lambda *a: None)

    @dataclasses.dataclass
    class Undocumented:
        alpha_prime: float = 1.0

    with pytest.raises(ValueError, match="help"):
        register_agent("undocumented", Undocumented, lambda *a: None)

    @dataclasses.dataclass
    class NoAlpha:
        lr: float = param(0.1, "step size")

    with pytest.raises(ValueError, match="alpha_prime"):
        register_agent("no-alpha", NoAlpha, lambda *a: None)
    assert "undocumented" not in AGENTS and "no-alpha" not in AGENTS
    with pytest.raises(ValueError, match="unknown agent 'nope'; choose one of fcpo, ialp"):
        get_agent_spec("nope")
    with pytest.raises(TypeError, match="PPOLagrangianConfig"):
        make_agent("ppo-lagrangian", FCPOConfig(), EnvSpec(), "cpu", 0)


def test_a_broken_agent_module_fails_loudly(tmp_path, monkeypatch):
    (tmp_path / "good.py").write_text("X = 1\n")
    (tmp_path / "broken_agent_xyz.py").write_text("import a_module_that_does_not_exist_xyz\n")
    monkeypatch.setattr(fcpo.agents, "__path__", [str(tmp_path)])
    registry = _Registry()
    with pytest.raises(ModuleNotFoundError, match="a_module_that_does_not_exist_xyz"):
        len(registry)
    with pytest.raises(ModuleNotFoundError):  # not marked loaded after a failure: fails again
        "fcpo" in registry
    for name in ("fcpo.agents.good", "fcpo.agents.broken_agent_xyz"):
        sys.modules.pop(name, None)


def test_config_fields_document_every_field():
    seen = set()
    for name in ALL:
        cls = AGENTS[name].config_cls
        if cls in seen:
            continue
        seen.add(cls)
        rows = config_fields(cls)
        assert [r["name"] for r in rows] == [f.name for f in dataclasses.fields(cls)]
        instance = cls()
        for r in rows:
            assert r["help"] and "\n" not in r["help"], (cls.__name__, r)
            assert r["default"] == getattr(instance, r["name"]), (cls.__name__, r)
        assert "alpha_prime" in {r["name"] for r in rows}
    rows = {r["name"]: r for r in config_fields(AGENTS["trpo"].config_cls)}
    assert rows["constrained"]["default"] is False and rows["max_kl"]["type"] == "float"
    with pytest.raises(TypeError):
        config_fields(object)


def test_shared_config_validation_and_kept_defaults():
    from fcpo.agents.actor_critic import SlateActorCriticConfig
    from fcpo.agents.ialp import IALPConfig
    from fcpo.agents.ppo_lagrangian import PPOLagrangianConfig

    for cls in (FCPOConfig, PPOLagrangianConfig, IALPConfig):
        assert issubclass(cls, SlateActorCriticConfig)
        for bad in (0.0, 1.01, -1.0):
            with pytest.raises(ValueError, match="alpha_prime"):
                cls(alpha_prime=bad)
        with pytest.raises(ValueError, match="critic_hidden"):
            cls(critic_hidden=0)
    # each agent keeps its historical defaults where they differ
    assert (FCPOConfig().popularity_feature, PPOLagrangianConfig().popularity_feature,
            IALPConfig().popularity_feature) == (6.0, 3.0, 3.0)
    assert (FCPOConfig().critic_epochs, FCPOConfig().critic_batch) == (2, 2048)


def test_legacy_env_options_dataclass_is_converted_with_a_warning():
    @dataclasses.dataclass
    class Options:
        dataset: str = "synthetic"
        horizon: int = 4

    with pytest.warns(DeprecationWarning, match="EnvSpec"):
        spec = as_env_spec(Options())
    assert spec == EnvSpec("fcpo/MovieLensFair-v0", {"dataset": "synthetic", "horizon": 4})
    assert as_env_spec({"id": "fcpo/MovieLensSim-v0", "preset": "popular"}).kwargs == {"preset": "popular"}
    with pytest.raises(TypeError, match="EnvSpec"):
        as_env_spec("fcpo/MovieLensFair-v0")


# ------------------------------------------------------------------------------------ checkpoint mixin
class _Thing(Checkpointed):
    _checkpointed = ("net", "opt", "generator", ("numpy_rng", "rng"), "counts", "step", "stats")

    def __init__(self, seed):
        torch.manual_seed(seed)
        self.net = torch.nn.Linear(3, 2)
        self.opt = torch.optim.Adam(self.net.parameters(), lr=0.1)
        self.generator = torch.Generator().manual_seed(seed)
        self.rng = np.random.default_rng(seed)
        self.counts = np.arange(4, dtype=np.int64) * seed
        self.step = seed
        self.stats = {"a": float(seed)}
        self.loaded = False

    def _after_load(self):
        self.loaded = True


def test_checkpoint_mixin_round_trip():
    a = _Thing(3)
    a.net(torch.ones(1, 3)).sum().backward()
    a.opt.step()
    a.rng.random(5)
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)
    buf.seek(0)
    b = _Thing(7)
    b.load_state_dict(torch.load(buf, weights_only=True))
    assert b.loaded and b.step == 3 and b.stats == {"a": 3.0}
    assert b.counts.dtype == np.int64 and b.counts.tolist() == [0, 3, 6, 9]
    assert b.rng.random() == a.rng.random()
    assert torch.equal(torch.rand(2, generator=b.generator), torch.rand(2, generator=a.generator))
    torch.testing.assert_close(b.net.weight, a.net.weight, rtol=0, atol=0)
    assert b.opt.state_dict()["state"][0]["step"] == a.opt.state_dict()["state"][0]["step"]


# ------------------------------------------------------------------------------------ both envs
@pytest.mark.usefixtures("synthetic_only_one_thread")
@pytest.mark.parametrize("env_id", ENV_IDS)
@pytest.mark.parametrize("name", sorted(AGENTS))
def test_every_agent_trains_on_both_envs(name, env_id):
    """Every registered agent (a new one too: TINY only shrinks known ones) trains on every registered env."""
    spec = EnvSpec(env_id, TINY_ENV)
    cfg = AGENTS[name].config_cls(**TINY.get(name, {}))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        agent = make_agent(name, cfg, spec, "cpu", seed=0)
    reward_option = getattr(cfg, "reward", None)
    ignored = [w for w in caught if "has no 'reward' option" in str(w.message)]
    assert bool(ignored) == (reward_option is not None and env_id.endswith("Sim-v0"))
    stats = [agent.train_iteration(i) for i in range(2)]
    for s in stats:
        assert math.isfinite(s["reward"]) and math.isfinite(s["cost"]) and s["reward"] >= 0 and s["cost"] >= 0
        assert s["cost_limit"] > 0
    assert agent.config.alpha_prime == cfg.alpha_prime


@pytest.mark.usefixtures("synthetic_only_one_thread")
def test_wolpertinger_loads_checkpoints_from_before_the_multiplier_rename():
    from fcpo.agents.wolpertinger import WolpertingerConfig

    spec = EnvSpec("fcpo/MovieLensFair-v0", TINY_ENV)
    a = make_agent("wolpertinger", WolpertingerConfig(**TINY["wolpertinger"]), spec, "cpu", 0)
    a.policy.multiplier.fill_(0.7)
    old = {("lam" if k == "multiplier" else k): v for k, v in a.policy.state_dict().items()}
    b = make_agent("wolpertinger", WolpertingerConfig(**TINY["wolpertinger"]), spec, "cpu", 1)
    b.policy.load_state_dict(old)
    assert float(b.policy.multiplier) == pytest.approx(0.7)
