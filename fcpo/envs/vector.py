"""Native batched ``VectorEnv`` for ``fcpo/MovieLensFair-v0`` (vectorised over users in numpy).

``gym.make_vec("fcpo/MovieLensFair-v0", num_envs=N, vectorization_mode="vector_entry_point", ...)``
builds it.  Under the same seeds its rollouts equal ``SyncVectorEnv`` over the
single env: sub-env i draws its users from its own generator seeded ``seed + i``.
Autoreset is ``NEXT_STEP`` (Gymnasium's default) unless ``autoreset_mode`` says
otherwise; ``cover_all_users=True`` gives one env per kept user, each episode
started exactly once per ``reset()`` (autoreset disabled), which is how agents
roll out every user per iteration.  With ``grouping="dynamic"`` the sub-envs
share one exposure counter (the policy's exposure over all users), unlike
``SyncVectorEnv`` where each copy counts only its own.
"""
from __future__ import annotations

import numpy as np
from gymnasium import spaces
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from fcpo.envs.config import FairEnvConfig
from fcpo.envs.core import SlateReplayCore
from fcpo.envs.movielens_fair import COST_NAME


def batch_layout(num_envs: int | None, autoreset_mode, cover_all_users: bool, n_users: int,
                 dataset: str) -> tuple[int, AutoresetMode]:
    """The number of sub-envs and the autoreset mode of a batched fcpo env, validated:
    ``cover_all_users`` means one sub-env per user and autoreset disabled (unless given)."""
    if cover_all_users:
        if num_envs not in (None, n_users):
            raise ValueError(f"cover_all_users=True needs num_envs=None or {n_users} (users in {dataset}), got {num_envs}")
        num_envs = n_users
    if num_envs is None or int(num_envs) < 1:
        raise ValueError(f"num_envs must be a positive integer, got {num_envs!r}")
    if autoreset_mode is None:
        autoreset_mode = AutoresetMode.DISABLED if cover_all_users else AutoresetMode.NEXT_STEP
    mode = AutoresetMode(autoreset_mode)
    if mode == AutoresetMode.SAME_STEP:
        raise ValueError("autoreset_mode SAME_STEP is not supported; use NEXT_STEP or DISABLED")
    return int(num_envs), mode


def reset_targets(options: dict | None, all_idx: np.ndarray, cover_all_users: bool, draw_users):
    """Parse a batched env's reset options: (sub-envs to reset, their user rows, reset_mask given?).

    ``options["reset_mask"]`` picks sub-envs (default all); ``options["users"]`` gives their users,
    else ``cover_all_users`` gives sub-env i user i, else ``draw_users(idx)`` draws them."""
    options = dict(options or {})
    mask = options.pop("reset_mask", None)
    idx = all_idx if mask is None else np.flatnonzero(np.asarray(mask, dtype=bool))
    if "users" in options:
        users = np.asarray(options.pop("users"), dtype=np.int64)
        if users.shape != (len(idx),):
            raise ValueError(f"options['users'] must have shape ({len(idx)},), got {users.shape}")
    elif cover_all_users:
        users = idx.copy()
    else:
        users = draw_users(idx)
    if options:
        raise ValueError(f"unknown reset option(s) {sorted(options)}; valid: users, reset_mask")
    return idx, users, mask is not None


class SlateContractMixin:
    """The contract attributes of :class:`fcpo.envs.contract.SlateVectorEnv`, read from ``self.core``."""

    @property
    def slate_size(self) -> int:
        return self.core.k

    @property
    def horizon(self) -> int:
        return self.core.horizon

    @property
    def n_items(self) -> int:
        return self.core.n_items

    @property
    def n_history(self) -> int:
        return self.core.n_hist

    @property
    def is_popular(self) -> np.ndarray:
        return self.grouping.is_popular

    @property
    def history(self) -> np.ndarray:
        return self.core.history

    @property
    def user_rows(self) -> np.ndarray:
        return self.core.rows

    def item_mask(self) -> np.ndarray:
        """Bool [num_envs, n_items]: True for items not yet recommended in each episode."""
        return self.core.action_masks()


class MovieLensFairVectorEnv(SlateContractMixin, VectorEnv):
    """Batched replay env; see the module docstring for semantics."""

    metadata = {"autoreset_mode": AutoresetMode.NEXT_STEP, "render_modes": []}

    def __init__(self, num_envs: int | None = None, autoreset_mode: AutoresetMode | str | None = None,
                 cover_all_users: bool = False, max_episode_steps: int | None = None, render_mode=None, **kwargs):
        self.config = FairEnvConfig.from_kwargs(**kwargs)
        self.env_data = self.config.load()
        self.num_envs, self.autoreset_mode = batch_layout(num_envs, autoreset_mode, cover_all_users,
                                                          self.env_data.split.n_episode_users, self.config.dataset)
        self.metadata = dict(self.metadata, autoreset_mode=self.autoreset_mode)
        self.cover_all_users = bool(cover_all_users)
        self.render_mode = None
        c = self.config
        self.grouping = c.make_grouping(self.env_data)
        self.core = SlateReplayCore(self.env_data, self.num_envs, c.slate_size, c.horizon, c.mode, c.reward,
                                    self.grouping, c.rating_alpha, c.position_discount)
        self.single_observation_space = spaces.Box(self.core.obs_low, self.core.obs_high, dtype=np.float32)
        self.single_action_space = spaces.MultiDiscrete(np.full(c.slate_size, self.env_data.n_items, dtype=np.int64))
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self._rngs = [seeding.np_random(None)[0] for _ in range(self.num_envs)]
        self._done = np.zeros(self.num_envs, dtype=bool)
        self._last_term = np.zeros(self.num_envs, dtype=bool)
        self._last_trunc = np.zeros(self.num_envs, dtype=bool)
        self._all = np.arange(self.num_envs)

    @property
    def n_users(self) -> int:
        return self.core.n_users

    def _draw_users(self, idx: np.ndarray) -> np.ndarray:
        # one draw per reset sub-env from its own generator, like SyncVectorEnv's copies
        return np.array([self._rngs[i].integers(self.core.n_users) for i in idx], dtype=np.int64)

    def reset(self, *, seed: int | list[int] | None = None, options: dict | None = None):
        if seed is not None:
            seeds = [seed + i for i in range(self.num_envs)] if isinstance(seed, int) else list(seed)
            if len(seeds) != self.num_envs:
                raise ValueError(f"seed list must have {self.num_envs} entries, got {len(seeds)}")
            self._rngs = [seeding.np_random(s)[0] for s in seeds]
            self._np_random, self._np_random_seed = seeding.np_random(seeds[0])
        idx, users, partial = reset_targets(options, self._all, self.cover_all_users, self._draw_users)
        if not partial:
            self.grouping.reset()
        self.core.reset_envs(idx, users)
        self._done[idx] = False
        self._last_term[idx] = self._last_trunc[idx] = False
        obs = self.core.observe()
        return obs, self._info(idx, step=False)

    def step(self, actions):
        slates = self.core.validate_slates(actions, self.num_envs)
        rewards = np.zeros(self.num_envs)
        costs = np.zeros(self.num_envs)
        hits = np.zeros((self.num_envs, self.core.k), dtype=bool)
        slot_rewards = np.zeros((self.num_envs, self.core.k))
        if self.autoreset_mode == AutoresetMode.NEXT_STEP:
            restart = np.flatnonzero(self._done)
            if len(restart):
                self.core.reset_envs(restart, self._draw_users(restart))
                self._done[restart] = False
            active = np.flatnonzero(~np.isin(self._all, restart))
        else:
            restart = np.zeros(0, dtype=np.int64)
            active = np.flatnonzero(~self._done)
        term = np.zeros(self.num_envs, dtype=bool)
        trunc = np.zeros(self.num_envs, dtype=bool)
        if self.autoreset_mode == AutoresetMode.DISABLED:
            term[self._done], trunc[self._done] = self._last_term[self._done], self._last_trunc[self._done]
        if len(active):
            r, c, h, te, tr, sr = self.core.step(active, slates[active])
            rewards[active], costs[active], hits[active], term[active], trunc[active] = r, c, h, te, tr
            slot_rewards[active] = sr
            self._done[active] = te | tr
            self._last_term[active], self._last_trunc[active] = te, tr
        info = self._info(self._all, step=True, stepped=active)
        info.update(cost=costs, _cost=self._mask(active), costs={COST_NAME: costs, "_" + COST_NAME: self._mask(active)},
                    _costs=self._mask(active), hits=hits, _hits=self._mask(active),
                    slot_rewards=slot_rewards, _slot_rewards=self._mask(active))
        return self.core.observe(), rewards, term, trunc, info

    def _mask(self, idx) -> np.ndarray:
        m = np.zeros(self.num_envs, dtype=bool)
        m[idx] = True
        return m

    def _info(self, idx, step: bool, stepped=None) -> dict:
        core = self.core
        valid = self._mask(idx) if not step else np.ones(self.num_envs, dtype=bool)
        n0, n1 = self.grouping.sizes()
        info = {
            "user": core.split.user_ids[core.rows].copy(),
            "user_row": core.rows.copy(),
            "history": core.history.copy(),
            "remaining_positives": core.n_remaining.copy(),
            "group_sizes": np.tile(np.array([n0, n1]), (self.num_envs, 1)),
        }
        for key in list(info):
            info["_" + key] = valid
        return info

    def action_masks(self) -> np.ndarray:
        """Bool [num_envs, n_items]: True for items not yet recommended in each episode."""
        return self.core.action_masks()

    def episodes_done(self) -> np.ndarray:
        return self._done.copy()
