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
  (popular) items, exactly the replay env's cost (``info["cost"]``, np.float64, and ``info["costs"]``).
* **Observation / action.**  As ``MovieLensFair-v0``: ``[e(h_1) .. e(h_N) | e(user) | t / T]``
  (the env's BPR/PMF embeddings, the FIFO window of the last N *clicked* items, initially the
  split's first positives) and ``MultiDiscrete([n_items] * K)``; truncated at ``t = T``.

Three named configurations (:data:`SIM_PRESETS`) stand in for the paper's three simulators:
``noisy`` (noisy clicks, patient users), ``impatient`` (sharp clicks, users who leave after a few
disliked items) and ``popular`` (clicks biased towards popular items, so reward and the fairness
cost pull against each other, with faster drift).
"""
from __future__ import annotations

from fcpo.envs.base import COST_NAME  # noqa: F401  (old import path)
from fcpo.envs.config import SimEnvConfig
from fcpo.envs.shells import SlateEnv, VectorSlateEnv
from fcpo.envs.sim.core import SimCore
from fcpo.envs.sim.user_model import (SIM_PRESETS, SimData, SimParams, build_sim_data, calibrate_line,
                                      get_sim_data)

__all__ = ["SimParams", "SIM_PRESETS", "SimEnvConfig", "SimData", "get_sim_data", "build_sim_data", "SimCore",
           "MovieLensSimEnv", "MovieLensSimVectorEnv", "calibrate_line", "COST_NAME"]


class MovieLensSimEnv(SlateEnv):
    """A stochastic MovieLens user simulator (our iALP-style design; see the module docstring).

    ## Description
    Each episode is one simulated session of a user of the episode split.  The user clicks slate
    items with a probability given by their completed, calibrated rating (and item popularity),
    drifts towards what they click, and leaves after ``patience`` consecutive unclicked items.

    ## Action Space
    ``MultiDiscrete([n_items] * K)``, as ``fcpo/MovieLensFair-v0``; ``item_mask()`` (bool
    [n_items]) is True for items not shown yet (the only ones that can be clicked),
    ``action_masks()`` (bool [K * n_items]) repeats it per slot (sb3-contrib's convention).

    ## Observation Space
    ``Box(float32, [N*d + d + 1])``, the layout of ``fcpo/MovieLensFair-v0``:

    | Index              | Observation                                               |
    |--------------------|-----------------------------------------------------------|
    | 0 .. N*d - 1       | embeddings of the last N *clicked* items (oldest first)   |
    | N*d .. N*d + d - 1 | the user's static profile embedding (drift is hidden)     |
    | N*d + d            | t / T                                                     |

    ## Rewards
    The number of clicked slate items (``info["clicks"]`` = ``info["hits"]``, bool [K];
    ``info["slot_rewards"]`` float64 [K]).

    ## Cost
    ``info["cost"]`` (np.float64): the number of G0 (popular) items in the slate, exactly the
    replay env's cost; ``info["costs"] = {"popular_exposure": cost}``.

    ## Starting State
    A user drawn uniformly with ``self.np_random`` (or ``reset(options={"user": row})``); the
    history window starts as the user's first N positives; the hidden user vector starts at the
    PMF profile.  Clicks and drift noise are drawn from ``self.np_random`` too.

    ## Episode End
    Terminated when the user leaves (``info["left"]``); truncated at t = T (``horizon``).

    ## Arguments
    The data options of ``fcpo/MovieLensFair-v0`` (no reward options) plus ``preset`` (``noisy`` |
    ``impatient`` | ``popular``), ``sim_dim=16``, ``sim_seed=0`` and per-knob overrides of the
    preset: ``click_temperature``, ``rating_center``, ``popularity_sensitivity``, ``patience``,
    ``drift_rate``, ``drift_noise`` (:class:`fcpo.envs.config.SimEnvConfig`).  ``click_model``
    (a callable ``(obs, history, slates) -> logits``) replaces the rating click logits.  Unknown
    options raise ``TypeError`` (``got an unexpected keyword argument 'NAME'``).

    ## Info
    See :mod:`fcpo.envs.shells`; the simulator adds ``misses`` (np.int64: consecutive unclicked
    items) and, after a step, ``clicks`` and ``left``.

    ## Vectorized environment
    :class:`MovieLensSimVectorEnv` (``vector_entry_point``), vectorised over users; sub-env i
    draws users, clicks and drift from its own generator (seeded ``seed + i``), so it equals
    ``SyncVectorEnv`` over this env under the same seeds.

    ## Version History
    * v0: initial version (since the env-contract redesign: one generator per sub-env in the batched
      env, sb3-contrib action masks, the replay env's info keys, NumPy-typed info).
    """

    config_cls = SimEnvConfig
    core_option_names = ("click_model",)


class MovieLensSimVectorEnv(VectorSlateEnv):
    """Native batched ``fcpo/MovieLensSim-v0`` (see :class:`MovieLensSimEnv` and
    :class:`fcpo.envs.shells.VectorSlateEnv`); ``click_model`` is passed to :class:`SimCore`."""

    config_cls = SimEnvConfig
    core_option_names = ("click_model",)
