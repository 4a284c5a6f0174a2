"""A deterministic synthetic data set written in the MovieLens-1M file format.

Used by unit tests and by users without the real data (``dataset="synthetic"``).
It has what a recommender needs to learn something and what a fairness
constraint needs to bite: a long-tail item popularity (Zipf), multi-label
genres, titles, timestamps, and user taste clusters that tie each user's
positives to a cluster of items, so a policy that reads the history can beat
a popularity ranking.

Two samplers draw each user's items without replacement with probability
proportional to ``exp(log popularity + taste * affinity)`` (Plackett-Luce):
``gumbel`` (Gumbel top-k over the full user x item score matrix, in chunks; the
original, exact and cheap for small sets) and ``successive`` (repeated draws
from the user's cluster distribution, repeats rejected -- the same law, cost
proportional to the interactions, for ML-20M-size sets).  ``auto`` picks gumbel
up to 2e8 user-item cells.

Writing is safe under concurrency: :func:`write_synthetic` holds a lock file
beside the folder, builds into a temporary folder and renames it into place;
a folder whose ``synthetic.json`` matches the config is reused, never deleted
under a reader.
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

from fcpo.data.fileio import exclusive_lock
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
    sampler: str = "auto"  # "gumbel", "successive" or "auto" (gumbel up to 2e8 user x item cells)

    def __post_init__(self):
        if self.sampler not in ("auto", "gumbel", "successive"):
            raise ValueError(f"SyntheticConfig.sampler must be auto, gumbel or successive, got {self.sampler!r}")
        if self.n_users < 1 or self.n_items < 2 * self.min_ratings_per_user:
            raise ValueError(f"SyntheticConfig: need n_users >= 1 and n_items >= 2*min_ratings_per_user, got {self}")
        if self.n_clusters < 1:
            raise ValueError(f"SyntheticConfig: n_clusters must be >= 1, got {self.n_clusters}")

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:12]

    def resolved_sampler(self) -> str:
        if self.sampler != "auto":
            return self.sampler
        return "gumbel" if self.n_users * self.n_items <= 2e8 else "successive"


def generate(config: SyntheticConfig) -> dict[str, np.ndarray]:
    """Draw users, items and ratings (vectorised; Plackett-Luce sampling without replacement)."""
    if config.resolved_sampler() == "successive":
        return _generate_successive(config)
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


def _successive_draws(rng, cluster_of_user: np.ndarray, logw: np.ndarray, counts: np.ndarray,
                      rounds: int = 8) -> np.ndarray:
    """Per user ``counts[u]`` distinct items in draw order, Plackett-Luce with log-weights ``logw[cluster]``.

    Successive draws with repeats rejected *is* Plackett-Luce sampling without
    replacement; it is vectorised over all users for ``rounds`` rounds.  Users
    whose counts are near the catalogue size (rejection gets slow) finish with
    the exact Gumbel top-k over the items they do not have yet, which continues
    the same law.
    """
    n_users, n_items = len(counts), logw.shape[1]
    w = np.exp(logw - logw.max(axis=1, keepdims=True))
    cdfs = np.cumsum(w, axis=1)
    cdfs /= cdfs[:, -1:]
    kept_u, kept_i, kept_o = (np.zeros(0, np.int64),) * 3
    order_base = 0
    need = counts.copy()
    for _ in range(rounds):
        todo = np.flatnonzero(need > 0)
        if len(todo) == 0:
            break
        users = np.repeat(todo, np.ceil(need[todo] * 1.3).astype(np.int64) + 4)
        r = rng.random(len(users))
        draws = np.empty(len(users), dtype=np.int64)
        u_cluster = cluster_of_user[users]
        for c in np.unique(u_cluster):  # one searchsorted per taste cluster
            sel = u_cluster == c
            draws[sel] = np.minimum(np.searchsorted(cdfs[c], r[sel], side="right"), n_items - 1)
        all_u, all_i = np.r_[kept_u, users], np.r_[kept_i, draws]
        all_o = np.r_[kept_o, order_base + np.arange(len(users))]
        order_base += len(users)
        _, first = np.unique(all_u * n_items + all_i, return_index=True)  # the first draw of each (user, item)
        first = first[np.argsort(all_o[first], kind="stable")]
        kept_u, kept_i, kept_o = all_u[first], all_i[first], all_o[first]
        need = np.maximum(counts - np.bincount(kept_u, minlength=n_users), 0)
    sort = np.lexsort((kept_o, kept_u))
    kept_u, kept_i = kept_u[sort], kept_i[sort]
    start = np.r_[0, np.cumsum(np.bincount(kept_u, minlength=n_users))[:-1]]
    keep = (np.arange(len(kept_u)) - start[kept_u]) < counts[kept_u]
    kept_u, kept_i = kept_u[keep], kept_i[keep]
    left = np.flatnonzero(need > 0)
    if len(left) == 0:
        return kept_i
    extra_u, extra_i = [], []
    for lo in range(0, len(left), 256):  # exact Gumbel top-k over the items each straggler does not have yet
        rows = left[lo:lo + 256]
        keys = logw[cluster_of_user[rows]] + rng.gumbel(size=(len(rows), n_items))
        have = np.isin(kept_u, rows)
        keys[np.searchsorted(rows, kept_u[have]), kept_i[have]] = -np.inf
        top = np.argsort(-keys, axis=1)
        take = np.arange(n_items)[None, :] < need[rows][:, None]
        extra_u.append(np.repeat(rows, need[rows]))
        extra_i.append(top[take])
    all_u = np.r_[kept_u, np.concatenate(extra_u)]
    all_i = np.r_[kept_i, np.concatenate(extra_i)]
    return all_i[np.argsort(all_u, kind="stable")]


def _generate_successive(config: SyntheticConfig) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(config.seed)
    n_u, n_i, n_c = config.n_users, config.n_items, config.n_clusters
    item_cluster = rng.integers(0, n_c, n_i)
    rank = rng.permutation(n_i)
    log_pop = -config.zipf_exponent * np.log1p(rank)
    user_cluster = rng.integers(0, n_c, n_u)
    affinity = np.eye(n_c) + 0.35 * np.roll(np.eye(n_c), 1, axis=1)
    counts = np.maximum(config.min_ratings_per_user,
                        rng.lognormal(np.log(config.mean_ratings_per_user) - 0.3, 0.75, n_u)).astype(np.int64)
    counts = np.minimum(counts, n_i // 2)
    logits = log_pop[None, :] + config.taste_strength * affinity[:, item_cluster]  # [n_c, n_i]
    chosen = _successive_draws(rng, user_cluster, logits, counts)
    u = np.repeat(np.arange(n_u), counts)
    a = affinity[user_cluster[u], item_cluster[chosen]]
    score = 2.4 + 1.6 * a + 0.25 * (log_pop[chosen] - log_pop.mean()) + rng.normal(0, 0.8, len(u))
    r = np.clip(np.rint(score), 1, 5)
    t0 = 956_700_000
    base = t0 + rng.integers(0, 400, n_u) * 86_400
    gaps = rng.exponential(3_600 * 6, len(u)).astype(np.int64) + 1
    first = np.cumsum(counts) - counts
    cum = np.cumsum(gaps)
    local = cum - np.repeat(cum[first] - gaps[first], counts)
    genres = np.zeros((n_i, len(ML1M_GENRES)), dtype=bool)
    genres[np.arange(n_i), item_cluster % len(ML1M_GENRES)] = True
    genres[np.arange(n_i), rng.integers(0, len(ML1M_GENRES), n_i)] |= rng.random(n_i) < 0.5
    return {
        "users": u, "items": chosen, "ratings": r, "timestamps": np.repeat(base, counts) + local,
        "item_genres": genres, "user_cluster": user_cluster, "item_cluster": item_cluster,
        "years": 1950 + rng.integers(0, 51, n_i), "title_words": rng.integers(0, len(_WORDS), (n_i, 2)),
    }


_STAMP = "synthetic.json"  # written last inside the temp folder: its match means the folder is complete


def _config_json(config: SyntheticConfig) -> str:
    return json.dumps(asdict(config), sort_keys=True)


def is_complete(folder: str | Path, config: SyntheticConfig) -> bool:
    stamp = Path(folder) / _STAMP
    try:
        return stamp.read_text() == _config_json(config)
    except OSError:
        return False


def ensure_synthetic(folder: str | Path, config: SyntheticConfig = SyntheticConfig()) -> Path:
    """``folder`` holding the synthetic set of ``config``: reused when complete, else written once."""
    folder = Path(folder)
    if is_complete(folder, config):
        return folder
    return write_synthetic(folder, config)


def _titles(g: dict, n_items: int) -> list[str]:
    return [f"The {_WORDS[w1]} {_WORDS[w2]} {i + 1} ({g['years'][i]})"
            for i, (w1, w2) in enumerate(g["title_words"][:n_items])]


def write_synthetic(folder: str | Path, config: SyntheticConfig = SyntheticConfig()) -> Path:
    """Write ``ratings.dat.gz``, ``movies.dat``, ``users.dat`` into ``folder`` -- once, atomically.

    Concurrent callers serialise on ``.<folder>.lock`` beside it; the first
    generates into a temporary folder and renames it into place, the others
    find the complete folder (``synthetic.json`` equal to ``config``) and
    return.  A stale folder of another config is moved aside in one rename
    before the new one is renamed in, so no reader ever sees a partial folder.
    """
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(folder.parent / f".{folder.name}.lock"):
        if is_complete(folder, config):
            return folder
        _write_synthetic_locked(folder, config)
    return folder


def _write_synthetic_locked(folder: Path, config: SyntheticConfig) -> None:
    g = generate(config)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-synthetic-", dir=folder.parent))
    try:
        lines = np.char.add(np.char.add(np.char.add(np.char.add(np.char.add(np.char.add(
            (g["users"] + 1).astype(str), "::"), (g["items"] + 1).astype(str)), "::"),
            g["ratings"].astype(np.int64).astype(str)), "::"), g["timestamps"].astype(str))
        with gzip.open(tmp / "ratings.dat.gz", "wt", encoding="latin-1") as fh:
            fh.write("\n".join(lines.tolist()) + "\n")
        titles = _titles(g, config.n_items)
        with open(tmp / "movies.dat", "w", encoding="latin-1") as fh:
            for i in range(config.n_items):
                names = "|".join(ML1M_GENRES[j] for j in np.flatnonzero(g["item_genres"][i]))
                fh.write(f"{i + 1}::{titles[i]}::{names}\n")
        with open(tmp / "users.dat", "w", encoding="latin-1") as fh:
            for u in range(config.n_users):
                fh.write(f"{u + 1}::{'MF'[u % 2]}::{(18, 25, 35, 45)[u % 4]}::{u % 21}::{10000 + u}\n")
        (tmp / "SOURCE.md").write_text(
            "Synthetic data written by fcpo.data.synthetic (not MovieLens).\n\n```json\n"
            + json.dumps(asdict(config), indent=2) + "\n```\n")
        (tmp / _STAMP).write_text(_config_json(config))
        if folder.exists():  # a stale or partial folder from an older fcpo: move it aside in one rename
            trash = Path(tempfile.mkdtemp(prefix=".old-synthetic-", dir=folder.parent))
            os.replace(folder, trash / "old")
            os.replace(tmp, folder)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_synthetic_table(path: str | Path, config: SyntheticConfig, items_path: str | Path | None = None) -> Path:
    """The synthetic log as one CSV ``user,item,rating,timestamp`` (ids from 1), written atomically.

    ``items_path`` (optional) gets ``item,title,genres``.  Uses pyarrow's CSV
    writer when installed (fast for ML-20M-size logs), else pandas.
    """
    import pandas as pd

    from fcpo.data.fileio import atomic_write

    path = Path(path)
    g = generate(config)
    frame = pd.DataFrame({"user": g["users"] + 1, "item": g["items"] + 1, "rating": g["ratings"].astype(np.int8),
                          "timestamp": g["timestamps"]})
    del g["users"], g["timestamps"]

    def write(fh):
        try:
            import pyarrow as pa
            import pyarrow.csv as pacsv
        except ImportError:
            frame.to_csv(fh, index=False)
            return
        pacsv.write_csv(pa.Table.from_pandas(frame, preserve_index=False), fh)

    atomic_write(path, write)
    if items_path is not None:
        genres = ["|".join(ML1M_GENRES[j] for j in np.flatnonzero(row)) for row in g["item_genres"]]
        items = pd.DataFrame({"item": np.arange(1, config.n_items + 1), "title": _titles(g, config.n_items),
                              "genres": genres})
        atomic_write(Path(items_path), lambda fh: items.to_csv(fh, index=False))
    return path
