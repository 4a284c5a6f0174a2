"""``fcpo/MovieLensSim-v0``: a stochastic MovieLens user simulator (single env + native vector env).

The replay env (``fcpo/MovieLensFair-v0``) can only pay for items a user happened to rate; this
simulator answers for every item.  It stands in for the three simulated environments of iALP /
A-iALP (arXiv 2501.13816), whose simulators are not public; everything below is **our design**
("iALP-style"), not the paper's.

* **Ratings, completed and calibrated.**  A PMF model (Mnih & Salakhutdinov 2007;
  :func:`fcpo.data.embeddings.train_mf` with ``method="pmf"``) is fitted on the *training* period
  only; its predictions ``mu + p_u . q_i`` are recalibrated by a least-squares line
  ``a + b * pred`` fitted on half of the held-out (test-period) ratings and checked on the other
  half (``SimData.calibration``).  The completed matrix keeps every observed rating (train and
  test period) and fills the rest with ``clip(a + b * pred, 1, 5)``.
* **Stochastic clicks.**  ``P(click | u, i) = sigmoid((r_t(u, i) - rating_center) / click_temperature
  + popularity_sensitivity * z_pop(i))`` with ``z_pop`` the standardised log training count.  An
  item shown earlier in the episode (or in the initial history), or twice in one slate, is
  never clicked.
* **Drift.**  The user's hidden PMF vector moves after every step:
  ``p_{t+1} = p_t + drift_rate * s_p * mean(q_clicked) / s_q + drift_noise * s_p / sqrt(d) * eps``
  (``s_p``, ``s_q`` mean row norms), and ``r_t(u, i) = R(u, i) + b * (p_t - p_0) . q_i``.
  The observation keeps the static profile embedding: the drift is visible only through clicks.
* **Leaving.**  Slots are read in order; each unclicked item adds one to a counter of consecutive
  disliked items and a click resets it; when it reaches ``patience`` the user leaves
  (``terminated``); later slots of that slate are not seen.  ``patience = 0`` never leaves.
* **Reward / cost.**  Reward = number of clicked items of the slate; cost = number of G0
  (popular) items, exactly the replay env's cost (``info["cost"]`` float and ``info["costs"]``).
* **Observation / action.**  As ``MovieLensFair-v0``: ``[e(h_1) .. e(h_N) | e(user) | t / T]``
  (the env's BPR/PMF embeddings, the FIFO window of the last N *clicked* items, initially the
  split's first positives) and ``MultiDiscrete([n_items] * K)``; truncated at ``t = T``.

Three named configurations (:data:`SIM_PRESETS`) stand in for the paper's three simulators:
``noisy`` (noisy clicks, patient users), ``impatient`` (sharp clicks, users who leave after a few
disliked items) and ``popular`` (clicks biased towards popular items, so reward and the fairness
cost pull against each other, with faster drift).
"""
from __future__ import annotations

import threading
from dataclasses import asdict, dataclass, fields, replace

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from fcpo.data.groups import make_grouping
from fcpo.envs.core import validate_slates
from fcpo.envs.env_data import EnvData, EnvDataKey, get_env_data
from fcpo.envs.movielens_fair import COST_NAME
from fcpo.envs.vector import SlateContractMixin, batch_layout, reset_targets

__all__ = ["SimParams", "SIM_PRESETS", "SimEnvConfig", "SimData", "get_sim_data", "SimCore", "MovieLensSimEnv",
           "MovieLensSimVectorEnv", "calibrate_line"]


@dataclass(frozen=True)
class SimParams:
    """User-behaviour knobs of the simulator (our design; see the module docstring)."""

    click_temperature: float = 0.5  # rating units per logit: larger = noisier clicks
    rating_center: float = 3.75  # completed rating with a 50 % click chance (popularity term aside)
    popularity_sensitivity: float = 0.0  # logit added per standard deviation of log popularity
    patience: int = 8  # consecutive unclicked items before the user leaves (0 = never leaves)
    drift_rate: float = 0.05  # step towards the clicked items, relative to the user-vector scale
    drift_noise: float = 0.02  # random-walk noise, relative to the user-vector scale

    def __post_init__(self):
        if not self.click_temperature > 0:
            raise ValueError(f"click_temperature must be > 0, got {self.click_temperature!r}")
        if not isinstance(self.patience, (int, np.integer)) or self.patience < 0:
            raise ValueError(f"patience must be an integer >= 0 (0 = users never leave), got {self.patience!r}")
        for name in ("drift_rate", "drift_noise"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")


#: The three named simulator configurations (stand-ins for the paper's three simulated environments).
SIM_PRESETS: dict[str, SimParams] = {
    "noisy": SimParams(click_temperature=0.6, rating_center=4.25, popularity_sensitivity=0.0, patience=15,
                       drift_rate=0.05, drift_noise=0.02),
    "impatient": SimParams(click_temperature=0.3, rating_center=4.25, popularity_sensitivity=0.0, patience=5,
                           drift_rate=0.05, drift_noise=0.02),
    "popular": SimParams(click_temperature=0.4, rating_center=4.5, popularity_sensitivity=0.75, patience=10,
                         drift_rate=0.15, drift_noise=0.05),
}

_PARAM_NAMES = tuple(f.name for f in fields(SimParams))


@dataclass(frozen=True)
class SimEnvConfig:
    """Options of ``fcpo/MovieLensSim-v0``: the data options of ``MovieLensFair-v0`` plus a preset
    (``noisy`` | ``impatient`` | ``popular``) whose :class:`SimParams` fields can be overridden one by one."""

    preset: str = "noisy"
    dataset: str = "ml-1m"
    data_dir: str | None = None
    slate_size: int = 5
    horizon: int = 10
    mode: str = "train"
    popular_ratio: float = 0.2
    grouping: str = "static"
    regroup_every: int = 1
    split: str = "fcpo"
    n_initial: int = 5
    threshold: float = 4.0
    train_ratio: float = 0.8
    embedding_dim: int = 32
    embedding_method: str = "bpr"
    embedding_seed: int = 0
    sim_dim: int = 16  # PMF factors of the user model
    sim_seed: int = 0  # PMF training seed
    # overrides of the preset (None = the preset's value)
    click_temperature: float | None = None
    rating_center: float | None = None
    popularity_sensitivity: float | None = None
    patience: int | None = None
    drift_rate: float | None = None
    drift_noise: float | None = None

    def __post_init__(self):
        if self.preset not in SIM_PRESETS:
            raise ValueError(f"unknown simulator preset {self.preset!r}; choose one of {', '.join(SIM_PRESETS)}")
        if self.mode not in ("train", "test"):
            raise ValueError(f"mode must be 'train' or 'test', got {self.mode!r}")
        for name in ("slate_size", "horizon", "sim_dim"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        self.params()  # validates the overrides

    @classmethod
    def from_kwargs(cls, **kwargs) -> "SimEnvConfig":
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(kwargs) - names)
        if unknown:
            raise TypeError(f"unknown MovieLensSim option(s) {unknown}; valid: {sorted(names)}")
        if kwargs.get("data_dir") is not None:
            kwargs["data_dir"] = str(kwargs["data_dir"])
        return cls(**kwargs)

    @classmethod
    def from_fair(cls, fair_config, preset: str = "noisy", **overrides) -> "SimEnvConfig":
        """The simulator over the same data as a :class:`fcpo.envs.FairEnvConfig` (its reward options are
        replay-only and dropped)."""
        names = {f.name for f in fields(cls)}
        base = {k: v for k, v in asdict(fair_config).items() if k in names}
        return cls.from_kwargs(**{**base, "preset": preset, **overrides})

    def params(self) -> SimParams:
        over = {n: getattr(self, n) for n in _PARAM_NAMES if getattr(self, n) is not None}
        return replace(SIM_PRESETS[self.preset], **over)

    def data_key(self) -> EnvDataKey:
        return EnvDataKey(self.dataset, self.data_dir, self.split, self.n_initial, self.threshold, self.train_ratio,
                          self.embedding_dim, self.embedding_method, self.embedding_seed)

    def load(self) -> "SimData":
        return get_sim_data(self.data_key(), self.sim_dim, self.sim_seed)


# ----------------------------------------------------------------------------- the user model

def calibrate_line(pred: np.ndarray, target: np.ndarray) -> tuple[float, float]:
    """Least-squares ``target ~ a + b * pred``; returns (a, b)."""
    x = np.stack([np.ones_like(pred, dtype=np.float64), pred.astype(np.float64)], axis=1)
    (a, b), *_ = np.linalg.lstsq(x, target.astype(np.float64), rcond=None)
    return float(a), float(b)


@dataclass(frozen=True)
class SimData:
    """The env data plus the simulator's user model (built once per data key, shared by every copy)."""

    env: EnvData
    user_factors: np.ndarray  # float32 [n_users, sim_dim] PMF user vectors
    item_factors: np.ndarray  # float32 [n_items, sim_dim] PMF item vectors
    global_mean: float
    calib_a: float
    calib_b: float
    observed: object  # scipy csr [n_users, n_items]: every observed rating (train + test period)
    popularity_z: np.ndarray  # float64 [n_items] standardised log(1 + training count)
    calibration: dict  # held-out RMSEs (raw PMF, calibrated, constant) and sizes

    def completed_ratings(self, users: np.ndarray) -> np.ndarray:
        """[len(users), n_items] float32: observed ratings where present, else the calibrated PMF prediction."""
        users = np.asarray(users, dtype=np.int64)
        pred = self.global_mean + self.user_factors[users] @ self.item_factors.T
        out = np.clip(self.calib_a + self.calib_b * pred, 1.0, 5.0).astype(np.float32)
        obs = self.observed[users].tocoo()
        out[obs.row, obs.col] = obs.data
        return out


_SIM_CACHE: dict[tuple, SimData] = {}
_SIM_LOCK = threading.Lock()


def build_sim_data(key: EnvDataKey, sim_dim: int = 16, sim_seed: int = 0) -> SimData:
    from fcpo.data.embeddings import MFConfig, load_embeddings

    env = get_env_data(key)
    split = env.split
    pmf = load_embeddings(env.data, split, MFConfig(method="pmf", dim=int(sim_dim), seed=int(sim_seed)),
                          progress=False)
    mu = float(pmf.stats.get("global_mean", split.train_ratings.data.mean()))
    test = split.test_ratings.tocoo()
    if test.nnz < 4:
        raise ValueError(f"{key.dataset}: too few held-out ratings ({test.nnz}) to calibrate the simulator")
    pred = mu + np.einsum("nd,nd->n", pmf.user[test.row], pmf.item[test.col])
    order = np.lexsort((test.col, test.row))  # canonical order, then alternate halves: fit / check
    fit, check = order[0::2], order[1::2]
    a, b = calibrate_line(pred[fit], test.data[fit])
    calibrated = np.clip(a + b * pred[check], 1.0, 5.0)
    target = test.data[check].astype(np.float64)
    rmse = lambda p: float(np.sqrt(np.mean((p - target) ** 2)))  # noqa: E731
    calibration = {"n_fit": int(len(fit)), "n_check": int(len(check)), "a": a, "b": b,
                   "rmse_pmf_raw": rmse(np.clip(pred[check], 1.0, 5.0)), "rmse_calibrated": rmse(calibrated),
                   "rmse_constant": rmse(np.full_like(target, test.data[fit].mean()))}
    observed = (split.train_ratings + split.test_ratings).tocsr()
    logc = np.log1p(env.train_counts.astype(np.float64))
    pop_z = (logc - logc.mean()) / (logc.std() + 1e-12)
    return SimData(env=env, user_factors=np.ascontiguousarray(pmf.user, np.float32),
                   item_factors=np.ascontiguousarray(pmf.item, np.float32), global_mean=mu, calib_a=a, calib_b=b,
                   observed=observed, popularity_z=pop_z, calibration=calibration)


def get_sim_data(key: EnvDataKey, sim_dim: int = 16, sim_seed: int = 0) -> SimData:
    """Memoised :func:`build_sim_data` (thread-safe)."""
    cache_key = (key, int(sim_dim), int(sim_seed))
    with _SIM_LOCK:
        if cache_key not in _SIM_CACHE:
            _SIM_CACHE[cache_key] = build_sim_data(key, sim_dim, sim_seed)
        return _SIM_CACHE[cache_key]


# ----------------------------------------------------------------------------- batched state machine

class SimCore:
    """Vectorised simulation of ``num_envs`` user sessions (see the module docstring).

    ``click_model(obs [n, obs_dim], history [n, N], slates [n, K]) -> logits [n, K]`` replaces the calibrated-rating
    click logits when given (the iALP agents use this to roll out in a *learned* reward model); the
    popularity term, leaving and drift still follow ``params``.
    """

    reward_kind = "hit"  # clicks play the role of the replay env's hits (fcpo.agents.rollout reads this)

    def __init__(self, sim: SimData, num_envs: int, slate_size: int, horizon: int, mode: str, grouping,
                 params: SimParams, click_model=None):
        env = sim.env
        if slate_size > env.n_items:
            raise ValueError(f"slate_size K={slate_size} exceeds the number of items ({env.n_items})")
        self.sim, self.data, self.split = sim, env, env.split
        self.num_envs, self.k, self.horizon, self.mode = int(num_envs), int(slate_size), int(horizon), mode
        self.grouping, self.params, self.click_model = grouping, params, click_model
        self.discount = np.ones(self.k)
        self.n_items, self.n_hist, self.dim = env.n_items, self.split.n_initial, env.dim
        self.obs_dim = self.n_hist * self.dim + self.dim + 1
        bound = float(np.ceil(max(np.abs(env.item_embeddings).max(), np.abs(env.user_embeddings).max(), 1.0)))
        self.obs_low = np.full(self.obs_dim, -bound, dtype=np.float32)
        self.obs_high = np.full(self.obs_dim, bound, dtype=np.float32)
        self.obs_low[-1], self.obs_high[-1] = 0.0, 1.0
        self._initial = self.split.initial(mode)
        self.p_scale = float(np.linalg.norm(sim.user_factors, axis=1).mean()) or 1.0
        self.q_scale = float(np.linalg.norm(sim.item_factors, axis=1).mean()) or 1.0
        e, d = self.num_envs, sim.user_factors.shape[1]
        self.rows = np.zeros(e, dtype=np.int64)
        self.t = np.zeros(e, dtype=np.int64)
        self.history = np.zeros((e, self.n_hist), dtype=np.int64)
        self.shown = np.zeros((e, self.n_items), dtype=bool)
        self.base = np.zeros((e, self.n_items), dtype=np.float32) if click_model is None else None
        self.p0 = np.zeros((e, d), dtype=np.float64)
        self.p = np.zeros((e, d), dtype=np.float64)
        self.misses = np.zeros(e, dtype=np.int64)  # consecutive unclicked items
        self._strict_lower = np.tri(self.k, k=-1, dtype=bool)

    @property
    def n_users(self) -> int:
        return self.split.n_episode_users

    def reset_envs(self, idx: np.ndarray, user_rows: np.ndarray) -> None:
        idx = np.asarray(idx, dtype=np.int64)
        user_rows = np.asarray(user_rows, dtype=np.int64)
        if len(user_rows) and (user_rows.min() < 0 or user_rows.max() >= self.n_users):
            raise ValueError(f"user rows must lie in [0, {self.n_users}), got {user_rows.min()}..{user_rows.max()}")
        users = self.split.user_ids[user_rows]
        self.rows[idx] = user_rows
        self.t[idx] = 0
        self.history[idx] = self._initial[user_rows]
        self.shown[idx] = False
        self.shown[idx[:, None], self.history[idx]] = True
        if self.base is not None:
            self.base[idx] = self.sim.completed_ratings(users)
        self.p0[idx] = self.sim.user_factors[users]
        self.p[idx] = self.p0[idx]
        self.misses[idx] = 0

    def observe(self, idx: np.ndarray | None = None) -> np.ndarray:
        """Observation rows (float32): [history embeddings (N*d) | user embedding (d) | t / T]."""
        idx = np.arange(self.num_envs) if idx is None else np.asarray(idx, dtype=np.int64)
        obs = np.empty((len(idx), self.obs_dim), dtype=np.float32)
        nd = self.n_hist * self.dim
        obs[:, :nd] = self.data.item_embeddings[self.history[idx]].reshape(len(idx), nd)
        obs[:, nd:nd + self.dim] = self.data.user_embeddings[self.split.user_ids[self.rows[idx]]]
        obs[:, -1] = self.t[idx] / self.horizon
        return obs

    def click_probabilities(self, idx: np.ndarray, slates: np.ndarray) -> np.ndarray:
        """P(click) [n, K] of each slate item before the leave rule (0 for repeats and earlier items)."""
        e = np.asarray(idx, dtype=np.int64)[:, None]
        prm = self.params
        if self.click_model is None:
            q = self.sim.item_factors[slates]  # [n, K, d]
            drift = np.einsum("nd,nkd->nk", self.p[e[:, 0]] - self.p0[e[:, 0]], q)
            rating = self.base[e, slates] + self.sim.calib_b * drift
            logits = (rating - prm.rating_center) / prm.click_temperature
        else:
            logits = np.asarray(self.click_model(self.observe(e[:, 0]), self.history[e[:, 0]], slates),
                                dtype=np.float64)
        logits = logits + prm.popularity_sensitivity * self.sim.popularity_z[slates]
        dup = ((slates[:, :, None] == slates[:, None, :]) & self._strict_lower).any(axis=2)
        fresh = ~self.shown[e, slates] & ~dup
        return np.where(fresh, 1.0 / (1.0 + np.exp(-logits)), 0.0)

    def step(self, idx: np.ndarray, slates: np.ndarray, rng: np.random.Generator):
        """Advance env slots ``idx`` with ``slates`` [len(idx), K]; draws clicks from ``rng``."""
        idx = np.asarray(idx, dtype=np.int64)
        e = idx[:, None]
        prob = self.click_probabilities(idx, slates)
        clicks = rng.random(prob.shape) < prob
        patience = self.params.patience
        left = np.zeros(len(idx), dtype=bool)
        if patience > 0:
            misses = self.misses[idx].copy()
            for j in range(self.k):  # K slate positions, vectorised over users: read in order, leave mid-slate
                clicks[:, j] &= ~left
                misses = np.where(clicks[:, j], 0, misses + 1)
                left |= misses >= patience
            self.misses[idx] = misses
        reward = clicks.sum(axis=1).astype(np.float64)
        cost = self.grouping.is_popular[slates].sum(axis=1).astype(np.float64)
        self.grouping.record(slates)
        self.shown[e, slates] = True
        self._drift(idx, slates, clicks, rng)
        merged = np.concatenate([self.history[idx], np.where(clicks, slates, -1)], axis=1)
        order = np.argsort(merged >= 0, axis=1, kind="stable")[:, -self.n_hist:]
        self.history[idx] = np.take_along_axis(merged, order, axis=1)
        self.t[idx] += 1
        terminated = left
        truncated = (self.t[idx] >= self.horizon) & ~terminated
        return reward, cost, clicks, terminated, truncated

    def _drift(self, idx, slates, clicks, rng) -> None:
        prm = self.params
        if prm.drift_rate == 0 and prm.drift_noise == 0:
            return
        d = self.p.shape[1]
        q = self.sim.item_factors[slates].astype(np.float64)  # [n, K, d]
        n_click = clicks.sum(axis=1, keepdims=True)
        mean_q = (q * clicks[:, :, None]).sum(axis=1) / np.maximum(n_click, 1)
        noise = rng.standard_normal((len(idx), d)) if prm.drift_noise > 0 else 0.0
        self.p[idx] += (prm.drift_rate * self.p_scale / self.q_scale) * mean_q \
            + prm.drift_noise * self.p_scale / np.sqrt(d) * noise

    def action_masks(self, idx: np.ndarray | None = None) -> np.ndarray:
        """True for items not yet shown in the episode (the only ones that can be clicked)."""
        idx = np.arange(self.num_envs) if idx is None else idx
        return ~self.shown[idx]

    def validate_slates(self, action, n_rows: int) -> np.ndarray:
        return validate_slates(action, n_rows, self.k, self.n_items)


# ----------------------------------------------------------------------------- Gymnasium envs

class MovieLensSimEnv(gym.Env):
    """Single-user simulator env; see the module docstring.  ``reset(options={"user": r})`` picks a user."""

    metadata = {"render_modes": ["ansi"], "render_fps": 1}

    def __init__(self, render_mode: str | None = None, **kwargs):
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be one of {self.metadata['render_modes']} or None, got {render_mode!r}")
        self.config = SimEnvConfig.from_kwargs(**kwargs)
        self.render_mode = render_mode
        self.sim_data = self.config.load()
        self.env_data = self.sim_data.env
        c = self.config
        self.grouping = make_grouping(c.grouping, self.env_data.train_counts, c.popular_ratio, c.regroup_every)
        self.core = SimCore(self.sim_data, 1, c.slate_size, c.horizon, c.mode, self.grouping, c.params())
        self.observation_space = spaces.Box(self.core.obs_low, self.core.obs_high, dtype=np.float32)
        self.action_space = spaces.MultiDiscrete(np.full(c.slate_size, self.env_data.n_items, dtype=np.int64))
        self._zero = np.zeros(1, dtype=np.int64)
        self._last = None

    @property
    def n_users(self) -> int:
        return self.core.n_users

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        options = options or {}
        row = int(options["user"]) if "user" in options else int(self.np_random.integers(self.core.n_users))
        self.core.reset_envs(self._zero, np.array([row]))
        self._last = None
        return self.core.observe(self._zero)[0], self._info()

    def step(self, action):
        slates = self.core.validate_slates(action, 0)
        reward, cost, clicks, terminated, truncated = self.core.step(self._zero, slates, self.np_random)
        self._last = (slates[0], clicks[0])
        info = self._info()
        info.update(cost=float(cost[0]), costs={COST_NAME: float(cost[0])}, clicks=clicks[0].copy(),
                    hits=clicks[0].copy(), slot_rewards=clicks[0].astype(np.float64), left=bool(terminated[0]))
        return self.core.observe(self._zero)[0], float(reward[0]), bool(terminated[0]), bool(truncated[0]), info

    def action_masks(self) -> np.ndarray:
        return self.core.action_masks(self._zero)[0]

    def _info(self) -> dict:
        core = self.core
        return {"user": int(core.split.user_ids[core.rows[0]]), "user_row": int(core.rows[0]),
                "history": core.history[0].copy(), "misses": int(core.misses[0]),
                "group_sizes": self.grouping.sizes()}

    def render(self):
        if self.render_mode != "ansi":
            return None
        titles = self.env_data.data.item_titles
        core = self.core
        lines = [f"user {int(core.split.user_ids[core.rows[0]])} · step {int(core.t[0])}/{core.horizon} · "
                 f"{int(core.misses[0])}/{core.params.patience} consecutive misses"]
        if self._last is None:
            lines.append("history: " + "; ".join(titles[core.history[0]]))
        else:
            for pos, (item, click) in enumerate(zip(*self._last), start=1):
                marks = ("[CLICK] " if click else "") + ("[G0] " if self.grouping.is_popular[item] else "")
                lines.append(f"{pos:2d}. {marks}{titles[item]}")
        return "\n".join(lines) + "\n"


class MovieLensSimVectorEnv(SlateContractMixin, VectorEnv):
    """Batched simulator (numpy over users).  Autoreset ``NEXT_STEP`` (default) or ``DISABLED``
    (``cover_all_users=True`` implies it: one env per user).  One generator, seeded by
    ``reset(seed=...)``, draws users and clicks.  ``click_model`` is passed to :class:`SimCore`."""

    metadata = {"autoreset_mode": AutoresetMode.NEXT_STEP, "render_modes": []}

    def __init__(self, num_envs: int | None = None, autoreset_mode: AutoresetMode | str | None = None,
                 cover_all_users: bool = False, click_model=None, render_mode=None, **kwargs):
        self.config = SimEnvConfig.from_kwargs(**kwargs)
        self.sim_data = self.config.load()
        self.env_data = self.sim_data.env
        self.num_envs, self.autoreset_mode = batch_layout(num_envs, autoreset_mode, cover_all_users,
                                                          self.env_data.split.n_episode_users, self.config.dataset)
        self.metadata = dict(self.metadata, autoreset_mode=self.autoreset_mode)
        self.cover_all_users = bool(cover_all_users)
        self.render_mode = None
        c = self.config
        self.grouping = make_grouping(c.grouping, self.env_data.train_counts, c.popular_ratio, c.regroup_every)
        self.core = SimCore(self.sim_data, self.num_envs, c.slate_size, c.horizon, c.mode, self.grouping,
                            c.params(), click_model)
        self.single_observation_space = spaces.Box(self.core.obs_low, self.core.obs_high, dtype=np.float32)
        self.single_action_space = spaces.MultiDiscrete(np.full(c.slate_size, self.env_data.n_items, dtype=np.int64))
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self._np_random, self._np_random_seed = seeding.np_random(None)
        self._done = np.zeros(self.num_envs, dtype=bool)
        self._all = np.arange(self.num_envs)

    @property
    def n_users(self) -> int:
        return self.core.n_users

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        if seed is not None:
            self._np_random, self._np_random_seed = seeding.np_random(int(seed))
        idx, users, partial = reset_targets(options, self._all, self.cover_all_users,
                                            lambda i: self._np_random.integers(self.core.n_users, size=len(i)))
        if not partial:
            self.grouping.reset()
        self.core.reset_envs(idx, users)
        self._done[idx] = False
        return self.core.observe(), self._info()

    def step(self, actions):
        slates = self.core.validate_slates(actions, self.num_envs)
        n = self.num_envs
        rewards, costs = np.zeros(n), np.zeros(n)
        clicks = np.zeros((n, self.core.k), dtype=bool)
        term, trunc = np.zeros(n, dtype=bool), np.zeros(n, dtype=bool)
        if self.autoreset_mode == AutoresetMode.NEXT_STEP:
            restart = np.flatnonzero(self._done)
            if len(restart):
                self.core.reset_envs(restart, self._np_random.integers(self.core.n_users, size=len(restart)))
                self._done[restart] = False
            active = np.flatnonzero(~np.isin(self._all, restart))
        else:
            active = np.flatnonzero(~self._done)
        if len(active):
            r, c, h, te, tr = self.core.step(active, slates[active], self._np_random)
            rewards[active], costs[active], clicks[active], term[active], trunc[active] = r, c, h, te, tr
            self._done[active] = te | tr
        mask = np.zeros(n, dtype=bool)
        mask[active] = True
        info = self._info()
        info.update(cost=costs, _cost=mask, costs={COST_NAME: costs, "_" + COST_NAME: mask}, _costs=mask,
                    clicks=clicks, _clicks=mask, hits=clicks, _hits=mask, slot_rewards=clicks.astype(np.float64),
                    _slot_rewards=mask, left=term.copy(), _left=mask)
        return self.core.observe(), rewards, term, trunc, info

    def _info(self) -> dict:
        core = self.core
        info = {"user": core.split.user_ids[core.rows].copy(), "user_row": core.rows.copy(),
                "history": core.history.copy(), "misses": core.misses.copy()}
        valid = np.ones(self.num_envs, dtype=bool)
        for key in list(info):
            info["_" + key] = valid
        return info

    def action_masks(self) -> np.ndarray:
        return self.core.action_masks()

    def episodes_done(self) -> np.ndarray:
        return self._done.copy()
