"""Exact k-NN equals brute force; the optional faiss index agrees with it (skipped without faiss)."""
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fcpo.policies.knn import KNNIndex, exact_knn, faiss_available


def brute_force(q: np.ndarray, x: np.ndarray, k: int, metric: str, exclude=None):
    """Independent reference: a Python loop over queries with numpy distances and a full sort."""
    ids, scores = [], []
    for b in range(q.shape[0]):
        s = -((x - q[b]) ** 2).sum(1) if metric == "l2" else x @ q[b]
        allowed = np.arange(x.shape[0]) if exclude is None else np.flatnonzero(~exclude[b])
        order = allowed[np.argsort(-s[allowed], kind="stable")][:k]
        ids.append(order)
        scores.append(s[order])
    return np.array(ids), np.array(scores)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 60), b=st.integers(1, 6), dim=st.integers(1, 8), data=st.data(),
       metric=st.sampled_from(["l2", "ip"]), chunk=st.sampled_from([1, 7, 1 << 20]), seed=st.integers(0, 10**6))
def test_exact_knn_equals_brute_force(n, b, dim, data, metric, chunk, seed):
    k = data.draw(st.integers(1, n))
    rng = np.random.default_rng(seed)
    x, q = rng.normal(size=(n, dim)), rng.normal(size=(b, dim))
    use_exclude = data.draw(st.booleans())
    exclude = None
    if use_exclude:
        exclude = rng.random((b, n)) < 0.3
        exclude[:, :k] = False  # keep at least k admissible items per row
    ref_ids, ref_scores = brute_force(q, x, k, metric, exclude)
    s, i = exact_knn(torch.tensor(q), torch.tensor(x), k, metric,
                     None if exclude is None else torch.tensor(exclude), max_elements=chunk * b)
    # continuous random data: no ties, so the ordered ids must agree exactly
    np.testing.assert_array_equal(i.numpy(), ref_ids)
    np.testing.assert_allclose(s.numpy(), ref_scores, rtol=1e-9, atol=1e-9)


def test_exact_knn_is_argmin_of_distance():
    """eq. 7-3 (errata): the k items of *smallest* L2 distance, nearest first."""
    g = torch.Generator().manual_seed(0)
    x, q = torch.randn(500, 16, generator=g, dtype=torch.float64), torch.randn(9, 16, generator=g, dtype=torch.float64)
    s, i = exact_knn(q, x, 10, "l2", max_elements=64)
    d = torch.cdist(q, x)
    assert torch.equal(i, torch.argsort(d, dim=1)[:, :10])
    torch.testing.assert_close(-s, torch.gather(d, 1, i) ** 2)


def test_exact_knn_validates_inputs():
    x, q = torch.randn(5, 3), torch.randn(2, 3)
    with pytest.raises(ValueError, match="k must lie"):
        exact_knn(q, x, 6)
    with pytest.raises(ValueError, match="metric"):
        exact_knn(q, x, 2, "cosine")
    with pytest.raises(ValueError, match="exclude"):
        exact_knn(q, x, 2, exclude=torch.zeros(2, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="share d"):
        exact_knn(torch.randn(2, 4), x, 2)
    with pytest.raises(ValueError, match="backend"):
        KNNIndex(x, backend="annoy")


def test_index_exact_backend_matches_function():
    g = torch.Generator().manual_seed(1)
    x, q = torch.randn(300, 8, generator=g), torch.randn(4, 8, generator=g)
    exclude = torch.rand(4, 300, generator=g) < 0.5
    for metric in ("l2", "ip"):
        idx = KNNIndex(x, metric, max_elements=100)
        s1, i1 = idx.search(q, 20, exclude)
        s2, i2 = exact_knn(q, x, 20, metric, exclude)
        assert torch.equal(i1, i2)
        torch.testing.assert_close(s1, s2)
        assert not bool(torch.gather(exclude, 1, i1).any())


@pytest.mark.skipif(not faiss_available(), reason="faiss-cpu not installed (optional)")
@pytest.mark.parametrize("metric", ["l2", "ip"])
def test_faiss_index_exhaustive_probe_equals_exact(metric):
    g = torch.Generator().manual_seed(2)
    x, q = torch.randn(2000, 16, generator=g), torch.randn(8, 16, generator=g)
    idx = KNNIndex(x, metric, "faiss", nlist=16, nprobe=16)  # visiting every cell = exact search
    s, i = idx.search(q, 25)
    s_ref, i_ref = exact_knn(q, x, 25, metric)
    assert torch.equal(i, i_ref)
    torch.testing.assert_close(s, s_ref, rtol=1e-4, atol=1e-4)


@pytest.mark.skipif(not faiss_available(), reason="faiss-cpu not installed (optional)")
def test_faiss_index_honours_exclude_and_recall():
    g = torch.Generator().manual_seed(3)
    centres = torch.randn(40, 16, generator=g)
    x = centres[torch.randint(40, (4000,), generator=g)] + 0.2 * torch.randn(4000, 16, generator=g)
    q = x[:32] + 0.05 * torch.randn(32, 16, generator=g)
    exclude = torch.zeros(32, 4000, dtype=torch.bool)
    exclude[:, :100] = True  # the query's own neighbourhood start is masked
    idx = KNNIndex(x, "l2", "faiss", nprobe=4)
    s, i = idx.search(q, 50, exclude)
    assert bool((i >= 0).all()) and not bool(torch.gather(exclude, 1, i).any())
    assert bool((s[:, :-1] >= s[:, 1:]).all())  # nearest first
    _, ref = exact_knn(q, x, 50, "l2", exclude)
    recall = (i[:, :, None] == ref[:, None, :]).any(2).float().mean()
    assert recall > 0.9
