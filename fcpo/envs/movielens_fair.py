"""``fcpo/MovieLensFair-v0``: one MovieLens user per episode, replaying held-out positives.

The single env and its native batched env are the shells of :mod:`fcpo.envs.shells` over the
replay core (:class:`fcpo.envs.replay.SlateReplayCore`); see :class:`MovieLensFairEnv`.
"""
from __future__ import annotations

from fcpo.envs.base import COST_NAME  # noqa: F401  (old import path)
from fcpo.envs.config import FairEnvConfig
from fcpo.envs.shells import SlateEnv, VectorSlateEnv

__all__ = ["MovieLensFairEnv", "MovieLensFairVectorEnv", "COST_NAME"]


class MovieLensFairEnv(SlateEnv):
    """Fairness-constrained slate recommendation replayed from MovieLens (Ge et al., WSDM 2021).

    ## Description
    Each episode is one user of the episode split.  The agent recommends a slate of K items per
    step; items the user rated positively (rating >= ``threshold``) in the held-out period pay.
    Popular items (group G0: the top ``popular_ratio`` of items by training count) cost exposure,
    the constraint of FCPO (eq. 6).

    ## Action Space
    ``MultiDiscrete([n_items] * K)``: K item ids.  An item repeated inside the slate, or shown
    earlier in the episode (including the initial history), pays nothing; ``item_mask()`` (bool
    [n_items]) is True for the items that can still pay, ``action_masks()`` (bool [K * n_items])
    repeats it once per slot, the MultiDiscrete convention of sb3-contrib's ``MaskablePPO``.

    ## Observation Space
    ``Box(float32, [N*d + d + 1])``, bounds ±ceil(max |embedding|) and [0, 1] for the last entry:

    | Index              | Observation                                                 |
    |--------------------|-------------------------------------------------------------|
    | 0 .. N*d - 1       | embeddings of the last N positives (FIFO window, oldest first) |
    | N*d .. N*d + d - 1 | the user's embedding                                        |
    | N*d + d            | t / T (step fraction)                                       |

    Embeddings (``embedding_method``: BPR, PMF, ...) are trained on the training period only.

    ## Rewards
    ``reward="hit"`` (eq. 5): the number of slate items that are still-unconsumed held-out
    positives (each pays once, then enters the history window), optionally discounted by
    1 / log2(position + 2) (``position_discount``).  ``reward="rating"`` (TPGR): the held-out
    rating mapped to [-1, 1] by (r - 3) / 2 (unrated: 0) plus ``rating_alpha`` * (consecutive
    positives - consecutive negatives).  ``info["slot_rewards"]`` splits the reward by slot.

    ## Cost
    ``info["cost"]`` (np.float64): the number of slate slots holding a G0 item;
    ``info["costs"] = {"popular_exposure": cost}``.  ``grouping="dynamic"`` recomputes G0 from
    training counts plus exposure every ``regroup_every`` steps.

    ## Starting State
    A user drawn uniformly from the split's users with ``self.np_random`` (or
    ``reset(options={"user": row})``, an integer row in [0, n_users)); the history window starts
    as the user's first N positives of the period (``mode``: ``train`` or ``test``).

    ## Episode End
    Terminated when the user has no held-out positive left; truncated at t = T (``horizon``), or
    at ``max_episode_steps`` of ``gym.make`` when smaller.

    ## Arguments
    ``gym.make("fcpo/MovieLensFair-v0", dataset="ml-1m", data_dir=None, slate_size=5, horizon=10,
    mode="train", reward="hit", popular_ratio=0.2, grouping="static", regroup_every=1,
    rating_alpha=0.1, position_discount=False, split="fcpo", n_initial=5, threshold=4.0,
    train_ratio=0.8, embedding_dim=32, embedding_method="auto", embedding_seed=0,
    render_mode=None)`` (:class:`fcpo.envs.config.FairEnvConfig`).  An unknown option raises
    ``TypeError`` (``got an unexpected keyword argument 'NAME'``); numeric options must be finite.
    ``render_mode="ansi"`` prints the last slate with [HIT] and [G0] marks.

    ## Info
    See :mod:`fcpo.envs.shells`: ``user``, ``user_row``, ``history``, ``history_raw_ids``,
    ``group_sizes``, ``action_mask``, ``remaining_positives``; after a step also ``cost``,
    ``costs``, ``hits`` and ``slot_rewards``.

    ## Vectorized environment
    ``gym.make_vec("fcpo/MovieLensFair-v0", num_envs, vectorization_mode="vector_entry_point",
    autoreset_mode=..., cover_all_users=False, max_episode_steps=None, **options)`` builds
    :class:`MovieLensFairVectorEnv`, vectorised over users in numpy; its rollouts and info equal
    ``SyncVectorEnv`` over this env under the same seeds (static grouping).

    ## Version History
    * v0: initial version (replay of held-out positives, hit and rating rewards, G0 exposure cost;
      sb3-contrib action masks and NumPy-typed info since the env-contract redesign).
    """

    config_cls = FairEnvConfig


class MovieLensFairVectorEnv(VectorSlateEnv):
    """Native batched ``fcpo/MovieLensFair-v0`` (see :class:`MovieLensFairEnv` and
    :class:`fcpo.envs.shells.VectorSlateEnv`): ``item_mask()`` bool [num_envs, n_items],
    ``action_masks()`` bool [num_envs, K * n_items], reset options ``users``, ``user``, ``reset_mask``."""

    config_cls = FairEnvConfig
