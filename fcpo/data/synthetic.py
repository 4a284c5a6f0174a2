"""A deterministic synthetic data set written in the MovieLens-1M file format.

Used by unit tests and by users without the real data (``dataset="synthetic"``).
It has what a recommender needs to learn something and what a fairness
constraint needs to bite: a long-tail item popularity (Zipf), multi-label
genres, titles, timestamps, and user taste clusters that tie each user's
positives to a cluster of items, so a policy that reads the history can beat
a popularity ranking.
"""
from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from fcpo.data.movielens import ML1M_GENRES

_WORDS = ("Night", "River", "Return", "Secret", "Summer", "Shadow", "King", "Dream", "City", "Last", "Blue",
          "Storm", "Garden", "Code", "Winter", "Star", "Road", "Silent", "Iron", "Golden", "Lost", "Wild")


@dataclass(frozen=True)
class SyntheticConfig:
    """Knobs of the generator; the defaults make a small set for tests (seconds)."""

    n_users: int = 300
    n_items: int = 400
    n_clusters: int = 8
    mean_ratings_per_user: float = 45.0
    min_ratings_per_user: int = 20
    zipf_exponent: float = 1.0
    taste_strength: float = 3.0
    seed: int = 0

    def __post_init__(self):
        if self.n_users < 1 or self.n_items < 2 * self.min_ratings_per_user:
            raise ValueError(f"SyntheticConfig: need n_users >= 1 and n_items >= 2*min_ratings_per_user, got {self}")
        if self.n_clusters < 1:
            raise ValueError(f"SyntheticConfig: n_clusters must be >= 1, got {self.n_clusters}")

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:12]


def generate(config: SyntheticConfig) -> dict[str, np.ndarray]:
    """Draw users, items and ratings (vectorised; Gumbel top-k sampling without replacement)."""
    rng = np.random.default_rng(config.seed)
    n_u, n_i, n_c = config.n_users, config.n_items, config.n_clusters
    item_cluster = rng.integers(0, n_c, n_i)
    rank = rng.permutation(n_i)
    log_pop = -config.zipf_exponent * np.log1p(rank).astype(np.float32)
    user_cluster = rng.integers(0, n_c, n_u)
    # each cluster likes its own items and, more weakly, one neighbouring cluster's
    affinity = np.eye(n_c, dtype=np.float32) + 0.35 * np.roll(np.eye(n_c, dtype=np.float32), 1, axis=1)
    counts = np.maximum(config.min_ratings_per_user,
                        rng.lognormal(np.log(config.mean_ratings_per_user) - 0.3, 0.75, n_u)).astype(np.int64)
    counts = np.minimum(counts, n_i // 2)
    users, items, ratings, times = [], [], [], []
    t0 = 956_700_000  # 2000-04-26, like ML-1M
    for start in range(0, n_u, 512):  # chunks bound memory; each row is vectorised
        stop = min(start + 512, n_u)
        aff = affinity[user_cluster[start:stop]][:, item_cluster]  # [b, n_i]
        keys = log_pop[None, :] + config.taste_strength * aff + rng.gumbel(size=(stop - start, n_i)).astype(np.float32)
        order = np.argsort(-keys, axis=1)
        take = counts[start:stop]
        cols = np.arange(n_i)[None, :] < take[:, None]
        chosen = order[cols]
        u = np.repeat(np.arange(start, stop), take)
        a = aff[u - start, chosen]
        score = 2.4 + 1.6 * a + 0.25 * (log_pop[chosen] - log_pop.mean()) + rng.normal(0, 0.8, len(u))
        r = np.clip(np.rint(score), 1, 5)
        # timestamps: per user a start day and increasing gaps; in-cluster items drift later so order carries signal
        base = t0 + rng.integers(0, 400, stop - start) * 86_400
        gaps = rng.exponential(3_600 * 6, len(u)).astype(np.int64) + 1
        local = np.cumsum(gaps) - np.repeat(np.cumsum(gaps)[np.cumsum(take) - take] - gaps[np.cumsum(take) - take], take)
        users.append(u)
        items.append(chosen)
        ratings.append(r)
        times.append(np.repeat(base, take) + local)
    genres = np.zeros((n_i, len(ML1M_GENRES)), dtype=bool)
    primary = item_cluster % len(ML1M_GENRES)
    genres[np.arange(n_i), primary] = True
    extra = rng.integers(0, len(ML1M_GENRES), n_i)
    genres[np.arange(n_i), extra] |= rng.random(n_i) < 0.5
    return {
        "users": np.concatenate(users), "items": np.concatenate(items), "ratings": np.concatenate(ratings),
        "timestamps": np.concatenate(times), "item_genres": genres, "user_cluster": user_cluster,
        "item_cluster": item_cluster, "years": 1950 + rng.integers(0, 51, n_i),
        "title_words": rng.integers(0, len(_WORDS), (n_i, 2)),
    }


def write_synthetic(folder: str | Path, config: SyntheticConfig = SyntheticConfig()) -> Path:
    """Write ``ratings.dat.gz``, ``movies.dat`` and ``users.dat`` atomically into ``folder``."""
    folder = Path(folder)
    g = generate(config)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-synthetic-", dir=folder.parent))
    try:
        lines = np.char.add(np.char.add(np.char.add(np.char.add(np.char.add(np.char.add(
            (g["users"] + 1).astype(str), "::"), (g["items"] + 1).astype(str)), "::"),
            g["ratings"].astype(np.int64).astype(str)), "::"), g["timestamps"].astype(str))
        with gzip.open(tmp / "ratings.dat.gz", "wt", encoding="latin-1") as fh:
            fh.write("\n".join(lines.tolist()) + "\n")
        with open(tmp / "movies.dat", "w", encoding="latin-1") as fh:
            for i in range(config.n_items):
                w1, w2 = g["title_words"][i]
                names = "|".join(ML1M_GENRES[j] for j in np.flatnonzero(g["item_genres"][i]))
                fh.write(f"{i + 1}::The {_WORDS[w1]} {_WORDS[w2]} {i + 1} ({g['years'][i]})::{names}\n")
        with open(tmp / "users.dat", "w", encoding="latin-1") as fh:
            for u in range(config.n_users):
                fh.write(f"{u + 1}::{'MF'[u % 2]}::{(18, 25, 35, 45)[u % 4]}::{u % 21}::{10000 + u}\n")
        (tmp / "SOURCE.md").write_text(
            "Synthetic data written by fcpo.data.synthetic (not MovieLens).\n\n```json\n"
            + json.dumps(asdict(config), indent=2) + "\n```\n")
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder
