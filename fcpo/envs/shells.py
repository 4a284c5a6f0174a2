"""The two Gymnasium shells every fcpo slate env is made of: one single env and one batched env.

A shell turns a core (:class:`fcpo.envs.base.SlateCore`: replay or simulator) into a Gymnasium
``Env`` or ``VectorEnv``; a concrete env only names its options class (``config_cls``, whose
``make_core`` builds the core).  Written once here: spaces, seeding, reset options, the autoreset
policy, the info keys, ``max_episode_steps``, the contract attributes of
:class:`fcpo.envs.contract.SlateVectorEnv`, and the sb3-contrib action masks.

Info keys (single env; the batched env has the same keys, batched, each with its ``_key`` mask,
exactly as ``gymnasium.vector.SyncVectorEnv`` over the single env builds them):

* after reset and step: ``user`` and ``user_row`` (np.int64), ``history`` and ``history_raw_ids``
  (int64 [N]), ``group_sizes`` (int64 [2]: |G0|, |G1|), ``action_mask`` (bool [n_items]: the item
  mask; omitted with the env option ``action_mask_in_info=False``) and the core's state keys (replay: ``remaining_positives``; simulator: ``misses``);
* after step only: ``cost`` (np.float64), ``costs`` ({``popular_exposure``: np.float64}),
  ``hits`` (bool [K]), ``slot_rewards`` (float64 [K]) and the core's step keys (simulator:
  ``clicks`` bool [K], ``left`` bool).

Autoreset of the batched env (``autoreset_mode``; Gymnasium 1.x semantics):

* ``NEXT_STEP`` (default): the step after an episode ends resets that sub-env (its action is
  ignored; reward 0, not terminated/truncated; only the after-reset info keys are set for it, and
  a step key is absent when no sub-env set it, as in ``SyncVectorEnv``);
* ``SAME_STEP``: a sub-env that ends is reset in the same step; the returned observation is the
  new episode's, ``info["final_obs"]`` (object array) and ``info["final_info"]`` (the ending step's
  info, with its masks) hold the last ones, and the top-level step keys are unset for it;
* ``DISABLED``: nothing restarts by itself (``reset(options={"reset_mask": ...})`` does).  A finished
  sub-env is frozen: stepping it changes nothing, pays reward 0 and cost 0 (step keys present but
  masked off, even when every sub-env is frozen, so ``info["cost"]`` always exists), and it
  keeps reporting the ``terminated``/``truncated`` flags of the step that ended it, so that
  ``terminated | truncated`` equals :meth:`VectorSlateEnv.episodes_done` after every step.
  (``SyncVectorEnv`` refuses to step a finished sub-env in this mode; fcpo agents step all users
  together and mask finished episodes, so the batched env allows it.)
"""
from __future__ import annotations

import numbers

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from fcpo.envs.base import COST_NAME, StepOutcome, check_positive_int
from fcpo.envs.env_data import get_env_data

SINGLE_RESET_OPTIONS = ("user",)
VECTOR_RESET_OPTIONS = ("reset_mask", "user", "users")


def parse_autoreset_mode(value) -> AutoresetMode:
    """An :class:`AutoresetMode` from the enum, its value (``"NextStep"``) or its name (``"NEXT_STEP"``)."""
    if isinstance(value, AutoresetMode):
        return value
    for mode in AutoresetMode:
        if value in (mode.value, mode.name) or (isinstance(value, str) and value.upper() == mode.name):
            return mode
    raise ValueError(f"autoreset_mode must be one of {[m.value for m in AutoresetMode]} (or NEXT_STEP, SAME_STEP, "
                     f"DISABLED), got {value!r}")


def batch_layout(num_envs: int | None, autoreset_mode, cover_all_users: bool, n_users: int,
                 dataset: str) -> tuple[int, AutoresetMode]:
    """The number of sub-envs and the autoreset mode of a batched env, validated:
    ``cover_all_users`` means one sub-env per user and autoreset disabled (unless given)."""
    if cover_all_users:
        if num_envs not in (None, n_users):
            raise ValueError(f"cover_all_users=True needs num_envs=None or {n_users} (users in {dataset}), "
                             f"got {num_envs}")
        num_envs = n_users
    if num_envs is None:
        raise ValueError("num_envs must be a positive integer, got None (or pass cover_all_users=True)")
    num_envs = check_positive_int("num_envs", num_envs)
    if autoreset_mode is None:
        autoreset_mode = AutoresetMode.DISABLED if cover_all_users else AutoresetMode.NEXT_STEP
    return num_envs, parse_autoreset_mode(autoreset_mode)


def _integer_user(value, what: str) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Integral, np.integer)):
        raise ValueError(f"{what} must be an integer row of the split, got {value!r}")
    return int(value)


def _check_options(options, valid: tuple[str, ...]) -> dict:
    if options is None:
        return {}
    if not isinstance(options, dict):
        raise TypeError(f"reset options must be a dict (keys: {', '.join(valid)}), got {type(options).__name__}")
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ValueError(f"unknown reset option(s) {unknown}; valid: {', '.join(valid)}")
    return options


def _row(value):
    """Row 0 of a batched info value as a single env reports it: arrays stay arrays, numbers become
    NumPy scalars (np.int64, np.float64) and flags Python bools (so SyncVectorEnv batches them as bool)."""
    if isinstance(value, dict):
        return {k: _row(v) for k, v in value.items()}
    if value.ndim > 1:
        return value[0].copy()
    return bool(value[0]) if value.dtype == np.bool_ else value[0]



class UnsupportedRenderMode(ValueError, TypeError):
    """An unsupported ``render_mode``.  Also a ``TypeError``: Stable-Baselines3's ``make_vec_env`` asks for
    ``render_mode="rgb_array"`` and retries without it only on a ``TypeError``."""

class LazyGenerators:
    """One ``numpy.random.Generator`` per sub-env, each created on first use from its seed (or fresh
    entropy): creating 138,000 generators up front (every ML-20M user) takes seconds, and most
    cores never draw.  Indexing gives the same generator ``gymnasium.utils.seeding.np_random(seed)``
    would have given."""

    def __init__(self, n: int):
        self._gens: list = [None] * int(n)
        self._seeds: list = [None] * int(n)

    def reseed(self, i: int, seed: int | None) -> None:
        self._gens[i], self._seeds[i] = None, seed

    def __getitem__(self, i: int) -> np.random.Generator:
        g = self._gens[i]
        if g is None:
            g = self._gens[i] = seeding.np_random(self._seeds[i])[0]
        return g

    def __setitem__(self, i: int, generator: np.random.Generator) -> None:
        self._gens[i] = generator

    def __len__(self) -> int:
        return len(self._gens)

    def __iter__(self):
        return (self[i] for i in range(len(self)))


class _SlateEnvCommon:
    """The contract attributes both shells expose (``core`` is built by the shell's constructor)."""

    config_cls: type
    #: constructor keywords that go to the core rather than to the options (not serialisable)
    core_option_names: tuple[str, ...] = ()

    def _build(self, kwargs: dict, num_envs_of) -> None:
        core_options = {name: kwargs.pop(name) for name in self.core_option_names if name in kwargs}
        self.config = self.config_cls.from_kwargs(**kwargs)
        n_users = get_env_data(self.config.data_key()).split.n_episode_users
        num_envs, time_limit = num_envs_of(n_users)
        self.core = self.config.make_core(num_envs, time_limit=time_limit, **core_options)
        self.core.action_mask_in_info = bool(self.config.action_mask_in_info)
        self.grouping = self.core.grouping
        self.env_data = self.core.data
        self.slate_size, self.horizon, self.n_items = self.core.k, self.core.horizon, self.core.n_items
        self.n_history, self.n_users = self.core.n_hist, self.core.n_users
        self.single_observation_space = spaces.Box(self.core.obs_low, self.core.obs_high, dtype=np.float32)
        self.single_action_space = spaces.MultiDiscrete(np.full(self.slate_size, self.n_items, dtype=np.int64))

    @property
    def is_popular(self) -> np.ndarray:
        """Bool [n_items]: the G0 (popular) group in force now (dynamic grouping changes it)."""
        return self.grouping.is_popular

    @property
    def sim_data(self):
        """The simulator's user model (simulator envs only)."""
        if not hasattr(self.core, "sim"):
            raise AttributeError(f"{type(self).__name__} has no simulator user model")
        return self.core.sim


class SlateEnv(_SlateEnvCommon, gym.Env):
    """Single-episode shell over a core with one slot (see the module docstring for the info keys)."""

    metadata = {"render_modes": ["ansi"], "render_fps": 1}

    def __init__(self, render_mode: str | None = None, **kwargs):
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise UnsupportedRenderMode(f"render_mode must be one of {self.metadata['render_modes']} or None, "
                                        f"got {render_mode!r}")
        self.render_mode = render_mode
        self._build(kwargs, lambda n_users: (1, None))
        self.observation_space, self.action_space = self.single_observation_space, self.single_action_space
        self._zero = np.zeros(1, dtype=np.int64)
        self._last: tuple[np.ndarray, np.ndarray] | None = None
        self._needs_reset = True

    @property
    def history(self) -> np.ndarray:
        """Int64 [N]: the history window (item ids, oldest first)."""
        return self.core.history[0]

    @property
    def user_rows(self) -> np.ndarray:
        """Int64 [1]: the split row of this episode's user."""
        return self.core.rows

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        options = _check_options(options, SINGLE_RESET_OPTIONS)
        if "user" in options:
            row = _integer_user(options["user"], "reset option 'user'")
        else:
            row = int(self.np_random.integers(self.n_users))
        self.core.reset_envs(self._zero, np.array([row]))
        self._last = None
        self._needs_reset = False
        return self.core.observe(self._zero)[0], _row(self.core.state_info(self._zero))

    def step(self, action):
        if self._needs_reset:
            raise RuntimeError(f"{type(self).__name__}: call reset() before step()")
        slates = self.core.validate_slates(action, 0)
        out = self.core.step(self._zero, slates, [self.np_random])
        self._last = (slates[0], out.hits[0])
        info = _row(self.core.state_info(self._zero))
        info.update(_row(_step_info(out)))
        return self.core.observe(self._zero)[0], float(out.reward[0]), bool(out.terminated[0]), \
            bool(out.truncated[0]), info

    def item_mask(self) -> np.ndarray:
        """Bool [n_items]: True for items not yet recommended (nor in the initial history) this episode."""
        return self.core.item_mask(self._zero)[0]

    def action_masks(self) -> np.ndarray:
        """Bool [K * n_items]: the item mask once per slate slot (sb3-contrib's MultiDiscrete convention)."""
        return np.tile(self.item_mask(), self.slate_size)

    def render(self):
        if self.render_mode != "ansi":
            return None
        core, titles = self.core, self.env_data.data.item_titles
        lines = [f"user {int(core.split.user_ids[core.rows[0]])} · step {int(core.t[0])}/{core.horizon} · "
                 f"{core.status_text(0)}"]
        if self._last is None:
            lines.append("history: " + "; ".join(titles[core.history[0]]))
        else:
            for pos, (item, hit) in enumerate(zip(*self._last), start=1):
                marks = (f"[{core.hit_label}] " if hit else "") + ("[G0] " if self.is_popular[item] else "")
                lines.append(f"{pos:2d}. {marks}{titles[item]}")
        return "\n".join(lines) + "\n"


def _step_info(out: StepOutcome) -> dict:
    """The step-only info keys of a batched step (one entry per stepped slot)."""
    return {"cost": out.cost, "costs": {COST_NAME: out.cost}, "hits": out.hits, "slot_rewards": out.slot_rewards,
            **out.extra}


class VectorSlateEnv(_SlateEnvCommon, VectorEnv):
    """Batched shell over a core with ``num_envs`` slots, vectorised over users in numpy.

    Under the same seeds its rollouts equal ``SyncVectorEnv`` over the single env: sub-env i has its
    own generator, seeded ``seed + i`` by ``reset(seed=seed)``, for its users and its random outcomes.
    ``cover_all_users=True`` gives one sub-env per user (sub-env i plays user row i on every full
    reset; autoreset ``DISABLED`` unless given).  ``max_episode_steps`` truncates like Gymnasium's
    ``TimeLimit`` at min(T, max_episode_steps).  With ``grouping="dynamic"`` the sub-envs share one
    exposure counter (the policy's exposure over all users), unlike ``SyncVectorEnv``'s copies.
    """

    metadata = {"autoreset_mode": AutoresetMode.NEXT_STEP, "render_modes": []}

    def __init__(self, num_envs: int | None = None, autoreset_mode: AutoresetMode | str | None = None,
                 cover_all_users: bool = False, max_episode_steps: int | None = None, render_mode=None, **kwargs):
        if render_mode is not None:
            raise UnsupportedRenderMode(f"{type(self).__name__} does not render (render_mode must be None, "
                                        f"got {render_mode!r})")
        self.render_mode = None
        self.cover_all_users = bool(cover_all_users)

        def layout(n_users):
            n, self.autoreset_mode = batch_layout(num_envs, autoreset_mode, cover_all_users, n_users,
                                                  kwargs.get("dataset", self.config_cls.dataset))
            return n, max_episode_steps

        self._build(kwargs, layout)
        self.num_envs = self.core.num_envs
        self.metadata = dict(self.metadata, autoreset_mode=self.autoreset_mode)
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self.history, self.user_rows = self.core.history, self.core.rows  # updated in place by the core
        self._rngs = LazyGenerators(self.num_envs)
        self._all = np.arange(self.num_envs)
        self._started = np.zeros(self.num_envs, dtype=bool)
        self._done = np.zeros(self.num_envs, dtype=bool)
        self._last_term = np.zeros(self.num_envs, dtype=bool)
        self._last_trunc = np.zeros(self.num_envs, dtype=bool)

    # ------------------------------------------------------------------ reset
    def reset(self, *, seed: int | list[int | None] | None = None, options: dict | None = None):
        if seed is not None:
            seeds = [seed + i for i in range(self.num_envs)] if isinstance(seed, (int, np.integer)) else list(seed)
            if len(seeds) != self.num_envs:
                raise ValueError(f"seed list must have {self.num_envs} entries, got {len(seeds)}")
            for i, s in enumerate(seeds):
                if s is not None:  # as Env.reset(seed=None): keep the generator
                    self._rngs.reseed(i, int(s))
            if seeds[0] is not None:
                super().reset(seed=int(seeds[0]))
        idx, users, partial = self._reset_targets(options)
        if not partial:
            self.grouping.reset()
        self.core.reset_envs(idx, users)
        self._started[idx] = True
        self._done[idx] = self._last_term[idx] = self._last_trunc[idx] = False
        info = self._masked(self.core.state_info(), self._mask(idx))
        return self.core.observe(), info

    def _reset_targets(self, options) -> tuple[np.ndarray, np.ndarray, bool]:
        """(sub-envs to reset, their user rows, reset_mask given?) from the reset options."""
        options = _check_options(options, VECTOR_RESET_OPTIONS)
        mask = options.get("reset_mask")
        if mask is None:
            idx = self._all
        else:
            mask = np.asarray(mask)
            if mask.dtype != np.bool_:
                raise TypeError(f"options['reset_mask'] must be a bool array, got dtype {mask.dtype}")
            if mask.shape != (self.num_envs,):
                raise ValueError(f"options['reset_mask'] must have shape ({self.num_envs},), got {mask.shape}")
            idx = np.flatnonzero(mask)
        if "users" in options and "user" in options:
            raise ValueError("give reset option 'users' (one row per reset sub-env) or 'user' (one row for all), "
                             "not both")
        if "users" in options:
            users = np.asarray(options["users"])
            if users.shape != (len(idx),):
                raise ValueError(f"options['users'] must have shape ({len(idx)},), got {users.shape}")
            if users.size and users.dtype.kind not in "iu":
                raise ValueError(f"options['users'] must hold integer rows of the split, got dtype {users.dtype}")
            users = users.astype(np.int64)
        elif "user" in options:
            users = np.full(len(idx), _integer_user(options["user"], "reset option 'user'"), dtype=np.int64)
        elif self.cover_all_users:
            users = idx.copy()
        else:
            users = self._draw_users(idx)
        return idx, users, mask is not None

    def _draw_users(self, idx: np.ndarray) -> np.ndarray:
        # one draw per reset sub-env from its own generator, as SyncVectorEnv's copies do
        return np.array([self._rngs[i].integers(self.n_users) for i in idx], dtype=np.int64)

    # ------------------------------------------------------------------ step
    def step(self, actions):
        if not self._started.all():
            raise RuntimeError(f"{type(self).__name__}: call reset() before step() "
                               f"({int((~self._started).sum())} sub-envs were never reset)")
        slates = self.core.validate_slates(actions, self.num_envs)
        n, mode = self.num_envs, self.autoreset_mode
        restart = np.zeros(0, dtype=np.int64)
        if mode == AutoresetMode.NEXT_STEP and self._done.any():
            restart = np.flatnonzero(self._done)
            active = np.flatnonzero(~self._done)
            self.core.reset_envs(restart, self._draw_users(restart))
            self._done[restart] = False
        elif mode == AutoresetMode.DISABLED and self._done.any():
            active = np.flatnonzero(~self._done)
        else:
            active = self._all
        rngs = [self._rngs[i] for i in active] if self.core.draws_per_step else None
        everyone = len(active) == n
        out = self.core.step(active, slates if everyone else slates[active], rngs)
        ended = out.terminated | out.truncated
        if everyone:
            rewards, term, trunc = out.reward, out.terminated.copy(), out.truncated.copy()
            step_info = _step_info(out)
        else:
            rewards = np.zeros(n)
            term, trunc = np.zeros(n, dtype=bool), np.zeros(n, dtype=bool)
            rewards[active], term[active], trunc[active] = out.reward, out.terminated, out.truncated
            step_info = _scatter(_step_info(out), active, n)
            if mode == AutoresetMode.DISABLED:  # frozen sub-envs repeat the flags that ended them
                frozen = self._done.copy()
                term[frozen], trunc[frozen] = self._last_term[frozen], self._last_trunc[frozen]
        self._done[active] = ended
        self._last_term[active], self._last_trunc[active] = out.terminated, out.truncated
        stepped = self._mask(active)
        final = {}
        if mode == AutoresetMode.SAME_STEP and ended.any():
            finished = active[ended]
            final_obs = np.full(n, None, dtype=object)
            final_obs[finished] = list(self.core.observe(finished))
            final_info = self._masked(_scatter({**self.core.state_info(finished), **_row_select(
                _step_info(out), ended)}, finished, n), self._mask(finished))
            self.core.reset_envs(finished, self._draw_users(finished))
            self._done[finished] = False
            stepped[finished] = False
            final = {"final_obs": final_obs, "_final_obs": self._mask(finished),
                     "final_info": final_info, "_final_info": self._mask(finished)}
        info = self._masked(self.core.state_info(), np.ones(n, dtype=bool))
        info.update(final)
        if stepped.any() or mode == AutoresetMode.DISABLED:  # as SyncVectorEnv: no key nobody reported
            info.update(self._masked(step_info, stepped))
        return self.core.observe(), rewards, term, trunc, info

    # ------------------------------------------------------------------ generators (checkpoints)
    @property
    def generators(self) -> list:
        """The per-sub-env ``numpy.random.Generator``s that draw users and outcomes (for checkpoints)."""
        return list(self._rngs)

    def rng_states(self) -> list[dict]:
        """The bit-generator state of every sub-env's generator (plain dicts of str/int: checkpointable)."""
        return [dict(g.bit_generator.state) for g in self._rngs]

    def set_rng_states(self, states: list[dict]) -> None:
        """Restore :meth:`rng_states` (e.g. when resuming a run)."""
        if len(states) != self.num_envs:
            raise ValueError(f"need {self.num_envs} generator states (one per sub-env), got {len(states)}")
        for g, state in zip(self._rngs, states):
            g.bit_generator.state = state

    # ------------------------------------------------------------------ contract
    def item_mask(self) -> np.ndarray:
        """Bool [num_envs, n_items]: True for items not yet recommended in each episode."""
        return self.core.item_mask()

    def action_masks(self) -> np.ndarray:
        """Bool [num_envs, K * n_items]: the item mask once per slate slot (sb3-contrib's convention)."""
        return np.tile(self.core.item_mask(), (1, self.slate_size))

    def episodes_done(self) -> np.ndarray:
        """Bool [num_envs]: episodes that ended and were not restarted yet."""
        return self._done.copy()

    # ------------------------------------------------------------------ info helpers
    def _mask(self, idx) -> np.ndarray:
        m = np.zeros(self.num_envs, dtype=bool)
        m[idx] = True
        return m

    @staticmethod
    def _masked(info: dict, mask: np.ndarray) -> dict:
        """Add a ``_key`` mask to every key (recursively for dicts), as Gymnasium's vector infos do."""
        out = {}
        for key, value in info.items():
            out[key] = VectorSlateEnv._masked(value, mask) if isinstance(value, dict) else value
            out["_" + key] = mask.copy()
        return out


def _scatter(info: dict, rows: np.ndarray, n: int) -> dict:
    """Batched info of ``rows`` spread into arrays of ``n`` entries (zeros elsewhere)."""
    out = {}
    for key, value in info.items():
        if isinstance(value, dict):
            out[key] = _scatter(value, rows, n)
        else:
            full = np.zeros((n, *value.shape[1:]), dtype=value.dtype)
            full[rows] = value
            out[key] = full
    return out


def _row_select(info: dict, keep: np.ndarray) -> dict:
    return {k: (_row_select(v, keep) if isinstance(v, dict) else v[keep]) for k, v in info.items()}
