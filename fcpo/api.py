"""Use a trained run from Python: :func:`load_run` -> :class:`TrainedRun` -> ``recommend``.

    import fcpo
    run = fcpo.load_run("runs/fcpo-ml-100k-a0.8-s0-20261203-101500")
    print(run.recommend(196, k=10))          # MovieLens user 196: item id, title, group, score

``recommend`` builds the user's state exactly as the evaluator's ranking protocol does (the test
initial state: the user's last N positives of the training period, the user embedding, t = 0) and
asks the deployed policy (``policy.deploy_mode``, default greedy) for a slate, so its list for a
user is the list :func:`fcpo.evaluate.evaluate` scores for that user.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from fcpo import runs
from fcpo.policies.base import SlateState


class Recommendation(NamedTuple):
    """One recommended item: its rank (1 = first), the data set's raw item id, title, group and score."""

    rank: int
    item_id: int  # raw id of the data set (MovieLens movie id)
    title: str
    group: str  # "G0" (popular) or "G1"
    score: float | None  # the policy's item score (higher = preferred), None if the policy has none
    item: int  # dense item index (the env's action id)


class Recommendations(list):
    """A list of :class:`Recommendation` for one user; prints as a table (``to_frame()``: a DataFrame)."""

    def __init__(self, rows, user_id, mode: str):
        super().__init__(rows)
        self.user_id = user_id
        self.mode = mode

    def item_ids(self) -> list[int]:
        return [r.item_id for r in self]

    def to_frame(self):
        import pandas as pd

        return pd.DataFrame([r._asdict() for r in self]).set_index("rank")

    def __str__(self) -> str:
        g0 = sum(r.group == "G0" for r in self)
        head = f"user {self.user_id}: {len(self)} items ({self.mode}), {g0} from G0 (popular)"
        width = max([len("title")] + [len(r.title) for r in self])
        lines = [head, f"{'rank':>4}  {'item id':>8}  {'title':<{width}}  group  {'score':>8}"]
        for r in self:
            score = f"{r.score:8.3f}" if r.score is not None else f"{'-':>8}"
            lines.append(f"{r.rank:>4}  {r.item_id:>8}  {r.title:<{width}}  {r.group:<5}  {score}")
        return "\n".join(lines)

    def _repr_pretty_(self, p, cycle):  # IPython / Jupyter
        p.text(str(self))


@dataclass
class TrainedRun:
    """A run folder reopened in this process: config, env spec, trained agent and its test metrics."""

    run_dir: Path
    config: runs.RunConfig
    agent: object
    iterations_done: int
    records: list[dict]
    metrics: dict | None
    device: torch.device
    _env: object = field(default=None, repr=False)

    def __repr__(self) -> str:
        alpha = self.config.agent_config.get("alpha_prime")
        return (f"TrainedRun({str(self.run_dir)!r}: {self.config.agent} on {self.config.env_id} "
                f"{self.config.env.get('dataset', '')}, α'={alpha}, seed {self.config.seed}, "
                f"{self.iterations_done}/{self.config.iterations} iterations, "
                f"{'tested' if self.metrics and 'test' in self.metrics else 'no test metrics'})")

    @property
    def policy(self):
        """The trained :class:`fcpo.policies.base.Policy` (what the evaluator scores)."""
        return self.agent.policy

    @property
    def env_spec(self):
        """The run's :class:`fcpo.envs.EnvSpec`."""
        return self.config.env_spec()

    @property
    def deploy_mode(self) -> str:
        """How the policy picks slates when deployed: ``greedy`` unless the policy says otherwise."""
        return getattr(self.policy, "deploy_mode", "greedy")

    def env(self):
        """The run's env in test mode, one sub-env (built once; shares the memoised data)."""
        if self._env is None:
            self._env = self.env_spec.make_vector(1, mode="test")
        return self._env

    def users(self) -> np.ndarray:
        """Raw user ids (of the data set) that have a state, i.e. that ``recommend`` accepts."""
        data = self.env().env_data
        return data.data.user_raw_ids[data.split.user_ids]

    def _user_row(self, user_id) -> int:
        """The split row of raw user id ``user_id``, or ValueError naming the id."""
        if isinstance(user_id, (bool, np.bool_)):
            raise ValueError(f"user id must be an integer raw id of the data set, got {user_id!r}")
        try:
            raw = int(user_id)
        except (TypeError, ValueError):
            raise ValueError(f"user id must be an integer raw id of the data set, got {user_id!r}") from None
        data = self.env().env_data
        name = data.data.name
        raw_ids = data.data.user_raw_ids
        dense = np.flatnonzero(raw_ids == raw)
        if len(dense) == 0:
            raise ValueError(f"user {raw} is not in {name} ({len(raw_ids)} users, raw ids "
                             f"{int(raw_ids.min())}..{int(raw_ids.max())})")
        row = np.flatnonzero(data.split.user_ids == dense[0])
        if len(row) == 0:
            raise ValueError(f"user {raw} of {name} has too few positive ratings (>= {data.split.threshold:g}) "
                             f"for a state (dropped by the split); run.users() lists the users with one")
        return int(row[0])

    @torch.no_grad()
    def recommend(self, user_id, k: int | None = None, exclude_seen: bool = True,
                  seed: int = 0) -> Recommendations:
        """The deployed policy's top-``k`` items (default: the run's slate size K) for raw user ``user_id``.

        The state is the user's test initial state (last N positives of the training period).
        ``exclude_seen``: leave out every item the user rated in the training period (as the
        evaluator does); the user's history window is always left out.  ``seed`` drives a sampling
        policy (``deploy_mode == "sample"``).  Example::

            run = fcpo.load_run("runs/x")
            recs = run.recommend(196, k=10)       # prints as a table
            recs.item_ids()                        # [raw item ids]
        """
        row = self._user_row(user_id)
        env = self.env()
        k = env.slate_size if k is None else int(k)
        if not 1 <= k <= env.n_items:
            raise ValueError(f"k must lie in [1, {env.n_items}] (items of the data set), got {k}")
        obs, _ = env.reset(options={"users": np.array([row])})
        data = env.env_data
        dense_user = data.split.user_ids[env.user_rows]
        state = SlateState.from_numpy(obs, env.history, dense_user, self.device)
        exclude = torch.as_tensor(~env.item_mask(), device=self.device)
        if exclude_seen:
            seen = data.split.train_items().to_mask(env.n_items, np.array([row]))
            exclude |= torch.as_tensor(seen, device=self.device)
        available = int((~exclude).sum())
        if k > available:
            raise ValueError(f"k={k} exceeds the {available} items user {user_id} has not seen")
        policy = self.policy
        policy.eval()
        mode = self.deploy_mode
        generator = torch.Generator(device=self.device).manual_seed(int(seed))
        items = policy.act(state, k, mode=mode, exclude=exclude, generator=generator)[0].cpu().numpy()
        scores = _item_scores(policy, state)
        is_popular = np.asarray(env.is_popular, dtype=bool)
        titles, raw_items = data.data.item_titles, data.data.item_raw_ids
        rows = [Recommendation(rank=i + 1, item_id=int(raw_items[it]), title=str(titles[it]),
                               group="G0" if is_popular[it] else "G1",
                               score=None if scores is None else float(scores[it]), item=int(it))
                for i, it in enumerate(items)]
        return Recommendations(rows, user_id, mode)

    def evaluate(self, **kwargs) -> dict:
        """:func:`fcpo.evaluate.evaluate` of the policy on the run's env (its keywords, e.g. ``protocol="ranking"``)."""
        kwargs.setdefault("device", self.device)
        return runs.evaluate_policy(self.policy, self.config, **kwargs)

    def summary(self) -> str:
        """The end-of-training summary (reward, cost against the limit, test popular share against α')."""
        return runs.training_summary(self.config, self.records, self.metrics or {}, self.run_dir)


def _item_scores(policy, state: SlateState) -> np.ndarray | None:
    """The policy's item scores [n_items] for the one state, or None when it defines none."""
    try:
        return policy.scores(state)[0].float().cpu().numpy()
    except (NotImplementedError, AttributeError, RuntimeError):
        return None


def load_run(run_dir: str | Path, device: str | torch.device = "cpu") -> TrainedRun:
    """Reopen a run folder written by ``fcpo-train``: its config, its trained agent (last checkpoint)
    and ``metrics.json`` (None before training finished).  Example::

        run = fcpo.load_run("runs/fcpo-ml-100k-a0.8-s0-20261203-101500")
        run.config.agent_config["alpha_prime"], run.metrics["test"]["metrics"]["f1@50"]
        print(run.recommend(196))
    """
    run_dir = Path(run_dir)
    device = torch.device(device)
    config, agent, next_iteration, records = runs.open_run(run_dir, device)
    metrics_path = run_dir / runs.METRICS
    metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else None
    if hasattr(agent.policy, "eval"):
        agent.policy.eval()
    return TrainedRun(run_dir=run_dir, config=config, agent=agent, iterations_done=next_iteration, records=records,
                      metrics=metrics, device=device)
