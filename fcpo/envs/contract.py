"""The slate-env contract: what every fcpo agent and the evaluator may rely on, and how they get an env.

Agents never construct an env class by name.  They receive an :class:`EnvSpec`
(a registered Gymnasium id plus keyword options, stored in every run's config)
and call :meth:`EnvSpec.make_vector`, which builds the id's native batched env
(its ``vector_entry_point``).  Any env registered with a vector entry point
that honours :class:`SlateVectorEnv` works with every agent.

``SlateVectorEnv`` (batched; one sub-env per user episode)
----------------------------------------------------------
Spaces
    ``single_observation_space``: ``Box(float32, [obs_dim])`` laid out as
    ``[e(h_1) .. e(h_N) | e(user) | t / T]`` (history embeddings, oldest first;
    the user embedding; the step fraction).  ``single_action_space``:
    ``MultiDiscrete([n_items] * K)`` — K item ids per slate.
Attributes (read-only)
    ``slate_size`` (K), ``horizon`` (T), ``n_items``, ``n_history`` (N, the
    history window), ``n_users`` (users with an episode in this mode),
    ``env_data`` (:class:`fcpo.envs.EnvData`: item/user embeddings, training
    counts, the episode split), ``is_popular`` (bool ``[n_items]``: the G0
    group *in force now*; dynamic groups change it), ``history`` (int64
    ``[num_envs, N]``), ``user_rows`` (int64 ``[num_envs]``, rows of the split).
Methods
    ``item_mask()`` -> bool ``[num_envs, n_items]``: True for items that can
    still pay (not shown earlier in the episode nor in the initial history).
    ``action_masks()`` -> the sb3-contrib MultiDiscrete convention (the item
    mask tiled over the K slots).  ``episodes_done()`` -> bool ``[num_envs]``.
Reset options
    ``{"users": rows}`` (one split row per reset sub-env), ``{"user": row}`` (the
    same row for all), ``{"reset_mask": bool[num_envs]}`` (which sub-envs to
    reset; default all).  Stepping before the first ``reset`` raises RuntimeError.
Info (NumPy arrays with a dtype, one entry per sub-env, each key with its
``_key`` mask, exactly the keys ``SyncVectorEnv`` over the single env gives)
    after reset and step: ``user``, ``user_row``, ``history``,
    ``history_raw_ids``, ``group_sizes``, ``action_mask`` (the item mask) and
    the env's own state keys; after a step also ``cost`` float64 (number of G0
    items in the slate), ``costs`` (dict of named costs), ``slot_rewards``
    float64 ``[num_envs, K]`` (what each slot earned; sums to the reward) and
    ``hits`` bool ``[num_envs, K]`` (the items that entered the history).
Autoreset
    ``autoreset_mode`` ``NEXT_STEP`` (Gymnasium's default), ``SAME_STEP``
    (``final_obs`` / ``final_info`` info keys) or ``DISABLED``; agents use
    ``DISABLED`` with ``cover_all_users`` or ``users`` reset options, and mask
    finished episodes themselves: in ``DISABLED`` a finished sub-env is frozen
    (reward and cost 0, its ending ``terminated``/``truncated`` repeated, so
    ``terminated | truncated == episodes_done()``).  ``max_episode_steps``
    truncates at min(T, max_episode_steps).  See :mod:`fcpo.envs.shells`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

DEFAULT_ENV_ID = "fcpo/MovieLensFair-v0"


@runtime_checkable
class SlateVectorEnv(Protocol):
    """The batched slate env every agent and the evaluator consume (see the module docstring)."""

    num_envs: int
    slate_size: int
    horizon: int
    n_items: int
    n_history: int
    n_users: int
    env_data: Any
    is_popular: np.ndarray
    history: np.ndarray
    user_rows: np.ndarray

    def reset(self, *, seed=None, options=None): ...

    def step(self, actions): ...

    def item_mask(self) -> np.ndarray: ...

    def action_masks(self) -> np.ndarray: ...

    def episodes_done(self) -> np.ndarray: ...


@dataclass(frozen=True)
class EnvSpec:
    """Which registered env to build, and its options (``kwargs`` of the env's constructor).

    ``EnvSpec("fcpo/MovieLensSim-v0", {"dataset": "ml-100k", "preset": "popular"})``.
    Stored in a run's ``config.yaml`` as ``env: {id: ..., <options>}``.
    """

    id: str = DEFAULT_ENV_ID
    kwargs: dict = field(default_factory=dict)

    def __post_init__(self):
        import gymnasium as gym

        import fcpo.envs.registration as registration

        registration.register_envs()
        if self.id not in gym.registry:
            fcpo_ids = sorted(i for i in gym.registry if i.startswith("fcpo/"))
            raise ValueError(f"unknown env id {self.id!r}; registered fcpo envs: {', '.join(fcpo_ids)}")
        if gym.spec(self.id).vector_entry_point is None:
            raise ValueError(f"env {self.id!r} has no vector_entry_point: fcpo agents need a native batched env")
        object.__setattr__(self, "kwargs", dict(self.kwargs))

    def option(self, name: str, default=None):
        return self.kwargs.get(name, default)

    def with_options(self, **overrides) -> "EnvSpec":
        """A copy with some options replaced (``None`` values are dropped, i.e. back to the env's default)."""
        merged = {**self.kwargs, **overrides}
        return EnvSpec(self.id, {k: v for k, v in merged.items() if v is not None})

    def make_vector(self, num_envs: int | None = None, *, cover_all_users: bool = False,
                    autoreset_mode: str = "Disabled", **overrides) -> SlateVectorEnv:
        """The id's native batched env (``vector_entry_point``) with these options."""
        from gymnasium.envs.registration import load_env_creator

        import gymnasium as gym

        creator = load_env_creator(gym.spec(self.id).vector_entry_point)
        kwargs = self.with_options(**overrides).kwargs
        return creator(num_envs=num_envs, cover_all_users=cover_all_users, autoreset_mode=autoreset_mode, **kwargs)

    def make(self, **overrides):
        """The single-episode env, through ``gymnasium.make``."""
        import gymnasium as gym

        return gym.make(self.id, **self.with_options(**overrides).kwargs)

    def to_dict(self) -> dict:
        return {"id": self.id, **self.kwargs}

    @classmethod
    def from_dict(cls, d: dict | None) -> "EnvSpec":
        d = dict(d or {})
        return cls(d.pop("id", DEFAULT_ENV_ID), d)
