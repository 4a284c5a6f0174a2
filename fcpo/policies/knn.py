"""k nearest items of a query vector: the map g_k of Wolpertinger (Dulac-Arnold et al. 2015, eq. 2;
seed eq. 7-3, where g_k keeps the k items of *smallest* distance to the proto-action).

Two backends behind one :class:`KNNIndex`:

* ``"exact"`` (default): brute-force top-k in torch, chunked over items so a
  batch of B queries never materialises more than ``max_elements`` scores
  (a 10^6-item catalogue is one matrix product per chunk plus a running top-k
  merge); it follows the device of the keys and honours a dense ``exclude`` mask.
* ``"faiss"`` (optional, ``pip install faiss-cpu``): an IVF-Flat index
  (Jégou et al.'s inverted file, ``nlist`` k-means cells, ``nprobe`` visited);
  approximate and CPU-only.  ``exclude`` is honoured by over-fetching and
  filtering; rows that end up with fewer than k admissible items are padded
  with id -1 and score -inf.

Scores are "higher is nearer": the inner product for ``metric="ip"`` and the
negative squared Euclidean distance for ``metric="l2"``.
"""
from __future__ import annotations

import math

import numpy as np
import torch

METRICS = ("l2", "ip")
BACKENDS = ("exact", "faiss")


def faiss_available() -> bool:
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


def _check_inputs(queries: torch.Tensor, keys: torch.Tensor, k: int, metric: str, exclude) -> None:
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    if queries.dim() != 2 or keys.dim() != 2 or queries.shape[1] != keys.shape[1]:
        raise ValueError(f"queries [B, d] and keys [N, d] must share d; got {tuple(queries.shape)} and {tuple(keys.shape)}")
    if not 1 <= k <= keys.shape[0]:
        raise ValueError(f"k must lie in [1, {keys.shape[0]}] (number of keys), got {k}")
    if exclude is not None and tuple(exclude.shape) != (queries.shape[0], keys.shape[0]):
        raise ValueError(f"exclude must be a bool mask [B, N] = [{queries.shape[0]}, {keys.shape[0]}], "
                         f"got {tuple(exclude.shape)}")


def exact_knn(queries: torch.Tensor, keys: torch.Tensor, k: int, metric: str = "l2",
              exclude: torch.Tensor | None = None, key_sq_norms: torch.Tensor | None = None,
              max_elements: int = 1 << 24) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact top-k neighbours of each query row: ``(scores [B, k], ids [B, k])``, nearest first.

    ``l2``: argmin_i ||q - x_i||^2 = argmax_i (2 q.x_i - ||x_i||^2) (seed eq. 7-3); the returned
    score is the true ``-||q - x_i||^2``.  ``exclude`` [B, N] (True = not allowed) removes items
    before the top-k, so every returned id is admissible as long as k admissible items exist
    (otherwise the tail holds excluded ids with score -inf).  Items are processed in chunks
    of ``max(k, max_elements // B)`` so memory stays O(B * chunk).
    """
    _check_inputs(queries, keys, k, metric, exclude)
    b, n = queries.shape[0], keys.shape[0]
    if metric == "l2" and key_sq_norms is None:
        key_sq_norms = (keys * keys).sum(1)
    chunk = max(k, max_elements // max(b, 1))
    best_s = best_i = None
    for start in range(0, n, chunk):  # bounded-memory chunks over items; each chunk is one matmul
        stop = min(start + chunk, n)
        s = queries @ keys[start:stop].T
        if metric == "l2":
            s = 2.0 * s - key_sq_norms[start:stop]
        if exclude is not None:
            s = s.masked_fill(exclude[:, start:stop], float("-inf"))
        top = torch.topk(s, min(k, stop - start), dim=1)
        ids = top.indices + start
        if best_s is None:
            best_s, best_i = top.values, ids
        else:
            merged = torch.topk(torch.cat([best_s, top.values], 1), k, dim=1)
            best_s = merged.values
            best_i = torch.gather(torch.cat([best_i, ids], 1), 1, merged.indices)
    if metric == "l2":
        best_s = best_s - (queries * queries).sum(1, keepdim=True)
    return best_s, best_i


class KNNIndex:
    """Nearest-item index over a fixed item-embedding matrix ``keys`` [N, d].

    ``search(queries, k, exclude=None) -> (scores [B, k], ids [B, k])`` nearest first.
    ``backend="exact"`` is :func:`exact_knn`; ``backend="faiss"`` an IVF-Flat index with
    ``nlist`` cells (default ~4 sqrt(N)) of which ``nprobe`` are visited (raised
    automatically so that the visited cells hold at least 2x the requested neighbours).
    """

    def __init__(self, keys: torch.Tensor, metric: str = "l2", backend: str = "exact", nlist: int | None = None,
                 nprobe: int = 8, seed: int = 0, max_elements: int = 1 << 24):
        if metric not in METRICS:
            raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        if keys.dim() != 2 or keys.shape[0] < 1:
            raise ValueError(f"keys must be a non-empty [N, d] matrix, got shape {tuple(keys.shape)}")
        self.keys = keys.detach().float()
        self.metric, self.backend = metric, backend
        self.n, self.dim = keys.shape
        self.max_elements = int(max_elements)
        self.key_sq_norms = (self.keys * self.keys).sum(1) if metric == "l2" else None
        self._faiss = None
        if backend == "faiss":
            self._build_faiss(nlist, nprobe, seed)

    def _build_faiss(self, nlist: int | None, nprobe: int, seed: int) -> None:
        try:
            import faiss
        except ImportError as exc:
            raise ImportError("backend='faiss' needs the optional package faiss-cpu: pip install faiss-cpu "
                              "(or use backend='exact')") from exc
        x = np.ascontiguousarray(self.keys.cpu().numpy(), dtype=np.float32)
        self.nlist = int(nlist) if nlist else max(1, min(int(4 * math.sqrt(self.n)), self.n // 39))
        self.nprobe = max(1, min(int(nprobe), self.nlist))
        faiss_metric = faiss.METRIC_L2 if self.metric == "l2" else faiss.METRIC_INNER_PRODUCT
        quantizer = faiss.IndexFlatL2(self.dim) if self.metric == "l2" else faiss.IndexFlatIP(self.dim)
        index = faiss.IndexIVFFlat(quantizer, self.dim, self.nlist, faiss_metric)
        rng = np.random.default_rng(seed)
        n_train = min(self.n, 64 * self.nlist)
        train = x if n_train == self.n else x[rng.choice(self.n, n_train, replace=False)]
        index.cp.seed = int(seed)
        index.train(train)
        index.add(x)
        self._faiss = (faiss, index, quantizer)

    def to(self, device) -> "KNNIndex":
        self.keys = self.keys.to(device)
        if self.key_sq_norms is not None:
            self.key_sq_norms = self.key_sq_norms.to(device)
        return self

    def search(self, queries: torch.Tensor, k: int, exclude: torch.Tensor | None = None):
        if self.backend == "exact":
            return exact_knn(queries, self.keys, k, self.metric, exclude, self.key_sq_norms, self.max_elements)
        return self._search_faiss(queries, k, exclude)

    def _search_faiss(self, queries: torch.Tensor, k: int, exclude: torch.Tensor | None):
        _check_inputs(queries, self.keys, k, self.metric, exclude)
        faiss, index, _ = self._faiss
        extra = 0 if exclude is None else int(exclude.sum(1).max().item())
        fetch = min(self.n, k + extra)
        index.nprobe = min(self.nlist, max(self.nprobe, math.ceil(2 * fetch * self.nlist / self.n)))
        q = np.ascontiguousarray(queries.detach().float().cpu().numpy())
        dist, ids = index.search(q, fetch)
        ids_t = torch.from_numpy(ids).to(queries.device)
        scores = torch.from_numpy(dist).to(queries.device)
        scores = -scores if self.metric == "l2" else scores  # faiss L2 returns squared distances
        bad = ids_t < 0
        if exclude is not None:
            bad = bad | torch.gather(exclude, 1, ids_t.clamp(min=0))
        scores = scores.masked_fill(bad, float("-inf"))
        ids_t = ids_t.masked_fill(bad, -1)
        if fetch > k or bad.any():
            # keep the k best admissible in score order (stable: faiss output is already sorted)
            order = torch.sort(scores, dim=1, descending=True, stable=True).indices[:, :k]
            scores, ids_t = torch.gather(scores, 1, order), torch.gather(ids_t, 1, order)
        return scores, ids_t

    def memory_bytes(self) -> int:
        """Bytes held by the index (keys + norms; faiss: its inverted lists and centroids)."""
        total = self.keys.numel() * 4 + (0 if self.key_sq_norms is None else self.key_sq_norms.numel() * 4)
        if self._faiss is not None:
            total += self.n * (self.dim * 4 + 8) + self.nlist * self.dim * 4
        return total
