"""Matrix-factorisation embeddings of users and items, trained on the train period only.

Two objectives, both fully vectorised over minibatches of interactions (torch):

* ``method="bpr"`` -- BPR-MF (Rendle et al., "BPR: Bayesian Personalized Ranking
  from Implicit Feedback", UAI 2009): every train interaction (rating >=
  ``positive_threshold``) is an implicit positive; for each one ``n_negatives``
  items the user did not interact with in the train period are sampled
  uniformly; loss ``-log sigmoid(u.i - u.j)`` + L2 on the rows used.  Made for
  top-K ranking; the default.
* ``method="svd"`` -- PureSVD (Cremonesi et al., "Performance of Recommender Algorithms
  on Top-N Recommendation Tasks", RecSys 2010): the rank-``dim`` truncated SVD of the
  binary train-positive matrix A ≈ U S Vᵀ, computed by randomized range finding with
  power iterations (Halko, Martinsson & Tropp, SIAM Review 2011, Algorithms 4.4 and 5.1);
  ``user = U S^½``, ``item = V S^½``, so ``user @ item.T`` is the rank-``dim``
  approximation of A.  No epochs: seconds at ML-20M size, where BPR's 60 epochs of
  minibatch Adam take most of an hour on one core.  ``method="auto"`` (the envs'
  default, :func:`resolve_method`) picks BPR up to :data:`AUTO_SVD_MIN_INTERACTIONS`
  train positives and PureSVD above.
* ``method="pmf"`` -- PMF (Mnih & Salakhutdinov, "Probabilistic Matrix
  Factorization", NIPS 2007): squared error of ``mu + u.i`` on the observed
  ratings + L2 on the rows used (``mu`` = global mean, a constant that does not
  change any ranking).  The representation the FCPO authors shipped.

Scores are plain dot products ``user[u] @ item[i]`` (:func:`mf_scores`), so the
arrays can be used as states / item features as they are.

:func:`load_embeddings` caches the result under
``cache_root()/embeddings/<key>.npz``, ``key`` = hash of the data content, the
split's ``train_mask`` and the config; the file is written atomically, by one
process among concurrent ones (a lock file under ``../.locks/``), and a
corrupted one is removed and retrained.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import time
import zipfile
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np

from fcpo.data.dataset import RatingsData
from fcpo.data.fileio import atomic_write, exclusive_lock
from fcpo.data.split import EpisodeSplit

log = logging.getLogger(__name__)

CACHE_VERSION = 1  # bump when training changes in a way the config does not capture
METHODS = ("bpr", "pmf", "svd")
AUTO = "auto"  # resolved per data set by resolve_method
DEFAULT_WEIGHT_DECAY = {"bpr": 3e-3, "pmf": 5e-2, "svd": 0.0}  # tuned on ml-100k (fcpo_split defaults), top-10 ranking
# above this many train positives "auto" trains PureSVD instead of BPR (ml-1m has ~0.8 M, ML-20M ~16 M):
# BPR's minibatch Adam costs ~60 epochs x n / 8192 dense steps (~45 s per million positives on one core),
# PureSVD a few sparse products (seconds)
AUTO_SVD_MIN_INTERACTIONS = 2_000_000
SVD_OVERSAMPLES = 10  # extra random directions of the range finder (Halko et al. 2011, sec. 4.2)
SVD_POWER_ITERATIONS = 4  # power iterations (ibid., Algorithm 4.4); singular values decay slowly in rating data


def resolve_method(method: str, n_train_positives: int) -> str:
    """The embedding method that ``method`` stands for: itself, or for ``"auto"`` BPR when the split has
    at most :data:`AUTO_SVD_MIN_INTERACTIONS` train positives and PureSVD above."""
    if method == AUTO:
        return "bpr" if n_train_positives <= AUTO_SVD_MIN_INTERACTIONS else "svd"
    if method not in METHODS:
        raise ValueError(f"embedding method must be one of {METHODS + (AUTO,)}, got {method!r}")
    return method


@dataclass(frozen=True)
class MFConfig:
    """Hyper-parameters of :func:`train_mf`.

    The defaults (BPR) were tuned on ml-100k under ``fcpo_split`` defaults for
    top-10 ranking of held-out positives; see ``benchmarks/embeddings_quality.py``.
    """

    method: str = "bpr"  # "bpr" (ranking, implicit positives), "svd" (PureSVD) or "pmf" (rating regression)
    dim: int = 32  # embedding size
    epochs: int = 60  # passes over the train interactions
    lr: float = 0.02  # Adam learning rate
    weight_decay: float | None = None  # L2 coefficient per embedding row used in a minibatch (mean over the
    #   batch); None -> the method's default, DEFAULT_WEIGHT_DECAY (bpr 3e-3, pmf 5e-2)
    batch_size: int = 8192  # interactions per minibatch
    n_negatives: int = 1  # BPR: sampled negatives per positive
    positive_threshold: float = 0.0  # BPR, SVD: train ratings >= this are positives (0: every rated item)
    init_std: float = 0.1  # std of the Gaussian initialisation
    seed: int = 0

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"MFConfig.method must be one of {METHODS}, got {self.method!r}")
        if self.weight_decay is None:
            object.__setattr__(self, "weight_decay", DEFAULT_WEIGHT_DECAY[self.method])
        for name in ("dim", "epochs", "batch_size", "n_negatives"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"MFConfig.{name} must be a positive integer, got {value!r}")
        for name in ("lr", "init_std"):
            if not getattr(self, name) > 0:
                raise ValueError(f"MFConfig.{name} must be > 0, got {getattr(self, name)!r}")
        if not self.weight_decay >= 0:
            raise ValueError(f"MFConfig.weight_decay must be >= 0, got {self.weight_decay!r}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "MFConfig":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in names})


@dataclass(frozen=True)
class Embeddings:
    """User and item factors; ``user[u] @ item[i]`` scores item ``i`` for dense user id ``u``."""

    user: np.ndarray  # float32 [n_users, dim]
    item: np.ndarray  # float32 [n_items, dim]
    config: MFConfig
    stats: dict = field(default_factory=dict)  # loss per epoch, seconds, interactions, ...
    cached: bool = False  # True when read from the cache

    @property
    def dim(self) -> int:
        return self.user.shape[1]


def mf_scores(emb: Embeddings, users: np.ndarray | int) -> np.ndarray:
    """Dot-product scores ``[len(users), n_items]`` (float32) of dense user ids ``users``."""
    users = np.atleast_1d(np.asarray(users, dtype=np.int64))
    return emb.user[users] @ emb.item.T


# ---------------------------------------------------------------- training

def _train_interactions(split: EpisodeSplit) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    coo = split.train_ratings.tocoo()
    order = np.lexsort((coo.col, coo.row))  # canonical order: the result does not depend on the csr layout
    return (coo.row[order].astype(np.int64), coo.col[order].astype(np.int64),
            coo.data[order].astype(np.float32))


def _sample_negatives(rng: np.random.Generator, users: np.ndarray, n_items: int, is_positive,
                      rounds: int = 10) -> np.ndarray:
    """Uniform items that are not ``users``' train positives (vectorised rejection; a few rounds).

    ``is_positive(keys)`` tells whether ``user * n_items + item`` is a train positive.
    """
    neg = rng.integers(0, n_items, len(users))
    todo = np.arange(len(users))
    for _ in range(rounds):
        clash = is_positive(users[todo] * n_items + neg[todo])
        todo = todo[clash]
        if len(todo) == 0:
            break
        neg[todo] = rng.integers(0, n_items, len(todo))
    return neg


def _positive_lookup(keys: np.ndarray, size: int):
    """Membership test for the sorted int64 ``keys`` in ``[0, size)``: a bitmap when small, else a binary search."""
    if size <= 1 << 27:
        table = np.zeros(size, dtype=bool)
        table[keys] = True
        return lambda q: table[q]

    def search(q):
        pos = np.minimum(np.searchsorted(keys, q), len(keys) - 1)
        return keys[pos] == q
    return search


def train_mf(split: EpisodeSplit, config: MFConfig = MFConfig(), progress: bool = True) -> Embeddings:
    """Fit MF on ``split.train_ratings`` (the train period of every user; dropped users included).

    Deterministic for a given ``config.seed`` (own numpy and torch generators;
    global RNG state is left alone).  Runs torch single-threaded (restored
    afterwards): the minibatch ops are small, and intra-op threads only add
    overhead, and collapse when the cores are shared.
    """
    import torch  # lazy: importing fcpo.data stays light

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _train_mf(split, config, progress)
    finally:
        torch.set_num_threads(threads)


def _train_mf(split: EpisodeSplit, config: MFConfig, progress: bool) -> Embeddings:
    import torch
    from tqdm.auto import tqdm

    start = time.perf_counter()
    if config.method == "svd":
        return _train_svd(split, config, start)
    users, items, ratings = _train_interactions(split)
    n_users, n_items = split.n_users, split.n_items
    if config.method == "bpr":
        keep = ratings >= config.positive_threshold
        users, items, ratings = users[keep], items[keep], ratings[keep]
    if len(users) == 0:
        raise ValueError("train_mf: the split has no train interactions to learn from")
    is_positive = _positive_lookup(users * n_items + items, n_users * n_items)  # keys sorted: lexsort (user, item)
    rng = np.random.default_rng(config.seed)
    gen = torch.Generator().manual_seed(config.seed)
    user_w = torch.nn.Parameter(torch.randn(n_users, config.dim, generator=gen) * config.init_std)
    item_w = torch.nn.Parameter(torch.randn(n_items, config.dim, generator=gen) * config.init_std)
    opt = torch.optim.Adam([user_w, item_w], lr=config.lr)
    mu = float(ratings.mean()) if config.method == "pmf" else 0.0
    n, bs, reg = len(users), config.batch_size, config.weight_decay
    losses = []
    bar = tqdm(range(config.epochs), desc={"bpr": "BPR-MF", "pmf": "PMF"}[config.method], disable=not progress,
               leave=False)
    emb = torch.nn.functional.embedding
    k = config.n_negatives
    for _ in bar:
        perm = rng.permutation(n)
        # one gather per epoch; minibatches are then contiguous slices
        u_ep, i_ep = torch.from_numpy(users[perm]), torch.from_numpy(items[perm])
        if config.method == "bpr":
            j_ep = torch.from_numpy(_sample_negatives(rng, np.repeat(users[perm], k), n_items, is_positive)
                                    .reshape(n, k))
        else:
            r_ep = torch.from_numpy(ratings[perm] - np.float32(mu))
        total = torch.zeros(())
        for lo in range(0, n, bs):
            sl = slice(lo, lo + bs)
            u, i = emb(u_ep[sl], user_w), emb(i_ep[sl], item_w)
            if config.method == "bpr":
                j = emb(j_ep[sl], item_w)  # [b, k, dim]
                diff = (u * i).sum(-1, keepdim=True) - (u.unsqueeze(1) * j).sum(-1)  # [b, k]
                data_loss = torch.nn.functional.softplus(-diff).mean()  # -log sigmoid(diff)
                penalty = (u.pow(2).sum() + i.pow(2).sum() + j.pow(2).sum() / k) / len(u)
            else:
                data_loss = ((u * i).sum(-1) - r_ep[sl]).pow(2).mean()
                penalty = (u.pow(2).sum() + i.pow(2).sum()) / len(u)
            loss = data_loss + reg * penalty
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += data_loss.detach() * len(u)
        losses.append(float(total) / n)
        bar.set_postfix(loss=f"{losses[-1]:.4f}")
    user = user_w.detach().numpy().astype(np.float32, copy=True)
    item = item_w.detach().numpy().astype(np.float32, copy=True)
    if not (np.isfinite(user).all() and np.isfinite(item).all()):
        raise FloatingPointError(f"train_mf diverged (non-finite factors); lower lr (now {config.lr})")
    stats = {
        "method": config.method, "loss": "bpr_logloss" if config.method == "bpr" else "mse",
        "epoch_loss": [float(x) for x in losses], "final_loss": float(losses[-1]), "interactions": int(n),
        "n_users": int(n_users), "n_items": int(n_items), "global_mean": mu,
        "seconds": time.perf_counter() - start, "torch": torch.__version__,
    }
    log.info("%s-MF: %d interactions, %d epochs, final loss %.4f, %.1f s", config.method.upper(), n,
             config.epochs, losses[-1], stats["seconds"])
    return Embeddings(user=user, item=item, config=config, stats=stats)


def randomized_svd(matrix, rank: int, seed: int = 0, oversamples: int = SVD_OVERSAMPLES,
                   power_iterations: int = SVD_POWER_ITERATIONS) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The top-``rank`` singular triplets ``(U, s, Vt)`` of a sparse or dense ``matrix`` [m, n] (float64 maths).

    Randomized range finder with power iterations, re-orthonormalised by QR after every product
    (Halko et al. 2011, Algorithm 4.4), then the SVD of the small projection B = QᵀA (Algorithm 5.1).
    Signs are fixed so that each right singular vector's largest-magnitude entry is positive, so the
    result is deterministic for a given ``seed``.
    """
    m, n = matrix.shape
    width = min(rank + oversamples, m, n)
    if rank < 1 or rank > min(m, n):
        raise ValueError(f"randomized_svd: rank must lie in [1, {min(m, n)}], got {rank}")
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(np.asarray(matrix @ rng.standard_normal((n, width))))
    for _ in range(power_iterations):
        z, _ = np.linalg.qr(np.asarray(matrix.T @ q))
        q, _ = np.linalg.qr(np.asarray(matrix @ z))
    b = np.asarray((matrix.T @ q).T)  # [width, n] = QᵀA
    u_small, s, vt = np.linalg.svd(b, full_matrices=False)
    u, s, vt = q @ u_small[:, :rank], s[:rank], vt[:rank]
    flip = np.sign(vt[np.arange(rank), np.abs(vt).argmax(axis=1)])
    flip[flip == 0] = 1.0
    return u * flip, s, vt * flip[:, None]


def _train_svd(split: EpisodeSplit, config: MFConfig, start: float) -> "Embeddings":
    """PureSVD factors of the binary train-positive matrix (module docstring)."""
    import scipy.sparse as sp

    users, items, ratings = _train_interactions(split)
    keep = ratings >= config.positive_threshold
    if not keep.any():
        raise ValueError("train_mf: the split has no train interactions to learn from")
    a = sp.csr_matrix((np.ones(int(keep.sum())), (users[keep], items[keep])), shape=(split.n_users, split.n_items))
    a.sum_duplicates()
    a.data[:] = 1.0
    dim = min(config.dim, min(a.shape))
    u, s, vt = randomized_svd(a, dim, seed=config.seed)
    root = np.sqrt(s)
    user = np.zeros((split.n_users, config.dim), np.float32)
    item = np.zeros((split.n_items, config.dim), np.float32)
    user[:, :dim], item[:, :dim] = u * root, vt.T * root
    stats = {"method": "svd", "loss": "frobenius", "singular_values": [float(x) for x in s],
             "interactions": int(a.nnz), "n_users": int(split.n_users), "n_items": int(split.n_items),
             "power_iterations": SVD_POWER_ITERATIONS, "oversamples": SVD_OVERSAMPLES,
             "seconds": time.perf_counter() - start}
    log.info("PureSVD: %d train positives, rank %d, %.1f s", a.nnz, dim, stats["seconds"])
    return Embeddings(user=user, item=item, config=config, stats=stats)


# ---------------------------------------------------------------- cache

def data_digest(data: RatingsData) -> str:
    """SHA-256 of the interactions (users, items, ratings, timestamps) and the id universe sizes."""
    h = hashlib.sha256()
    h.update(f"{data.n_users}:{data.n_items}:{data.n_ratings}".encode())
    for arr, dtype in ((data.users, "<i8"), (data.items, "<i8"), (data.ratings, "<f4"), (data.timestamps, "<i8")):
        h.update(np.ascontiguousarray(arr, dtype=dtype).tobytes())
    return h.hexdigest()


def cache_key(data: RatingsData, split: EpisodeSplit, config: MFConfig) -> str:
    h = hashlib.sha256()
    h.update(f"fcpo-embeddings-v{CACHE_VERSION}\n{data_digest(data)}\n".encode())
    h.update(np.packbits(np.asarray(split.train_mask, dtype=bool)).tobytes())
    h.update(f"\n{split.n_users}:{split.n_items}\n".encode())
    h.update(json.dumps(config.to_dict(), sort_keys=True).encode())
    return h.hexdigest()[:24]


def _default_cache_dir() -> Path:
    from fcpo.data.sources import cache_root

    return cache_root() / "embeddings"


def _save(path: Path, emb: Embeddings, key: str) -> None:
    atomic_write(path, lambda fh: np.savez(fh, user=emb.user, item=emb.item, key=np.array(key),
                                           config=np.array(json.dumps(emb.config.to_dict(), sort_keys=True)),
                                           stats=np.array(json.dumps(emb.stats, sort_keys=True))))


def _load(path: Path, key: str, config: MFConfig, n_users: int, n_items: int) -> Embeddings:
    with np.load(path, allow_pickle=False) as z:
        if str(z["key"]) != key:
            raise ValueError(f"key {str(z['key'])!r} != {key!r}")
        user, item = z["user"], z["item"]
        stats = json.loads(str(z["stats"]))
        stored = json.loads(str(z["config"]))
    if stored != config.to_dict():
        raise ValueError("stored config differs")
    for name, arr, rows in (("user", user, n_users), ("item", item, n_items)):
        if arr.dtype != np.float32 or arr.shape != (rows, config.dim) or not np.isfinite(arr).all():
            raise ValueError(f"{name} array has dtype {arr.dtype}, shape {arr.shape}, expected float32 "
                             f"{(rows, config.dim)} and finite")
    return Embeddings(user=user, item=item, config=config, stats=stats, cached=True)


def load_embeddings(data: RatingsData, split: EpisodeSplit, config: MFConfig = MFConfig(),
                    cache_dir: str | os.PathLike | None = None, progress: bool = True) -> Embeddings:
    """Embeddings for ``split`` of ``data``: from the cache, else trained with :func:`train_mf` and cached.

    ``cache_dir`` defaults to ``fcpo.data.sources.cache_root() / "embeddings"``.
    A cache file that cannot be read or does not match is removed and retrained.
    """
    if len(split.train_mask) != data.n_ratings or (split.n_users, split.n_items) != (data.n_users, data.n_items):
        raise ValueError(f"the split does not belong to data set {data.name!r} "
                         f"({len(split.train_mask)} vs {data.n_ratings} ratings)")
    key = cache_key(data, split, config)
    folder = Path(cache_dir).expanduser() if cache_dir is not None else _default_cache_dir()
    path = folder / f"{key}.npz"

    def cached():
        if not path.exists():
            return None
        try:
            emb = _load(path, key, config, data.n_users, data.n_items)
            log.info("embeddings for %s read from %s", data.name, path)
            return emb
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, json.JSONDecodeError) as exc:
            log.warning("embeddings cache %s is unreadable (%s); removing it and retraining", path, exc)
            path.unlink(missing_ok=True)
            return None

    emb = cached()
    if emb is not None:
        return emb
    # one trainer among concurrent processes: the others wait, then read its file (lock kept outside the folder)
    with exclusive_lock(folder.parent / ".locks" / f"{folder.name}-{key}.lock"):
        emb = cached()
        if emb is None:
            emb = train_mf(split, config, progress=progress)
            _save(path, emb, key)
    return emb


# ---------------------------------------------------------------- quality check

def popularity_scores(split: EpisodeSplit) -> np.ndarray:
    """Train-period interaction counts per item (the popularity ranker), float32 [n_items]."""
    return split.train_item_counts().astype(np.float32)


def topk_quality(score_fn, split: EpisodeSplit, k: int = 10, batch: int = 1024) -> dict:
    """Recall@k, Precision@k and NDCG@k of a ranker on the test targets of the kept users.

    ``score_fn(users) -> [len(users), n_items]`` scores dense user ids; each
    user's train items (``split.train_items()``) are excluded.  Recall divides
    by the number of test targets, NDCG's ideal DCG uses ``min(k, targets)``.
    """
    train, test = split.train_items(), split.test_targets
    n_rows = split.n_episode_users
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    ideal = np.cumsum(discounts)
    recall = precision = ndcg = 0.0
    for lo in range(0, n_rows, batch):
        rows = np.arange(lo, min(lo + batch, n_rows))
        scores = np.array(score_fn(split.user_ids[rows]), dtype=np.float32, copy=True)
        scores[train.to_mask(split.n_items, rows)] = -np.inf
        top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        top = np.take_along_axis(top, np.argsort(-np.take_along_axis(scores, top, 1), axis=1, kind="stable"), 1)
        targets = test.to_mask(split.n_items, rows)
        hits = np.take_along_axis(targets, top, 1)
        n_targets = test.lengths[rows]
        recall += float((hits.sum(1) / n_targets).sum())
        precision += float(hits.sum() / k)
        ndcg += float(((hits * discounts).sum(1) / ideal[np.minimum(n_targets, k) - 1]).sum())
    return {"recall": recall / n_rows, "precision": precision / n_rows, "ndcg": ndcg / n_rows, "k": k,
            "users": int(n_rows)}


def compare_rankers(split: EpisodeSplit, emb: Embeddings, k: int = 10, random_draws: int = 5, seed: int = 0) -> dict:
    """``topk_quality`` of MF, random (mean over ``random_draws``) and popularity rankers."""
    pop = popularity_scores(split)
    rng = np.random.default_rng(seed)
    draws = [topk_quality(lambda u: rng.random((len(u), split.n_items), dtype=np.float32), split, k)
             for _ in range(random_draws)]
    random = {m: float(np.mean([d[m] for d in draws])) for m in ("recall", "precision", "ndcg")}
    random.update(k=k, users=draws[0]["users"])
    return {
        "mf": topk_quality(lambda u: mf_scores(emb, u), split, k),
        "random": random,
        "popularity": topk_quality(lambda u: np.broadcast_to(pop, (len(u), len(pop))), split, k),
    }


__all__ = ["MFConfig", "Embeddings", "train_mf", "load_embeddings", "mf_scores", "data_digest", "cache_key",
           "popularity_scores", "topk_quality", "compare_rankers", "METHODS", "AUTO", "resolve_method",
           "randomized_svd", "AUTO_SVD_MIN_INTERACTIONS"]
