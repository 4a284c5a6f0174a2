"""Balanced clustering tree and TPGR tree policy: balance, unique paths, exact probabilities."""
import itertools
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fcpo.policies.base import SlateState
from fcpo.policies.tree import BalancedTree, TreePolicy, balanced_assign, build_balanced_tree, tree_shape


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny tensors: intra-op threads only add overhead (and stall on a shared machine)."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _state(b: int, obs_dim: int, seed: int = 0) -> SlateState:
    g = torch.Generator().manual_seed(seed)
    return SlateState(torch.randn(b, obs_dim, generator=g), torch.zeros(b, 1, dtype=torch.long), torch.arange(b))


def _random_policy(tree: BalancedTree, obs_dim: int = 6, seed: int = 0) -> TreePolicy:
    torch.manual_seed(seed)
    pol = TreePolicy(tree, obs_dim, hidden=8)
    with torch.no_grad():
        for p in list(pol.weights) + list(pol.biases):
            p.normal_(0, 1.0)
    return pol


@pytest.mark.parametrize("n", [2, 3, 7, 8, 9, 100, 1000, 3706, 10**6])
@pytest.mark.parametrize("depth", [1, 2, 3, 4])
def test_tree_shape_eq_7_12(n, depth):
    d, c = tree_shape(n, depth)
    assert d == depth and c >= 2
    assert c ** d >= n and (c == 2 or (c - 1) ** d < n)  # c = ceil(n^(1/d)), so c^(d-1) < n <= c^d
    assert c == max(2, math.ceil(round(n ** (1 / d), 9)))


def test_tree_shape_validation():
    with pytest.raises(ValueError, match="leaves"):
        tree_shape(100, depth=2, branching=5)
    with pytest.raises(ValueError, match="depth"):
        tree_shape(10, depth=0)
    with pytest.raises(ValueError, match="branching"):
        tree_shape(10, branching=1)
    with pytest.raises(ValueError, match="at least 2"):
        tree_shape(1)
    assert tree_shape(100, branching=3) == (5, 3)


def _check_balanced(tree: BalancedTree):
    c = tree.branching
    for level in range(tree.depth):
        children = tree.counts(level + 1).reshape(-1, c)
        assert torch.equal(children.sum(1), tree.counts(level))
        spread = children.max(1).values - children.min(1).values
        assert int(spread.max()) <= 1, f"level {level + 1}: sibling subtree sizes differ by more than 1"
    assert int(tree.counts(0)) == tree.n_items
    assert int(tree.counts(tree.depth).max()) <= 1


@settings(max_examples=25, deadline=None)
@given(n=st.integers(2, 300), depth=st.integers(1, 4), method=st.sampled_from(["pca", "kmeans"]),
       seed=st.integers(0, 1000))
def test_tree_is_balanced_and_every_item_has_one_path(n, depth, method, seed):
    x = torch.randn(n, 5, generator=torch.Generator().manual_seed(seed))
    tree = build_balanced_tree(x, depth=depth, method=method)
    _check_balanced(tree)
    # every root->leaf digit sequence names at most one item; every item is named by exactly one
    c, d = tree.branching, tree.depth
    seen = np.zeros(n, dtype=int)
    for digits in itertools.product(range(c), repeat=d) if c ** d <= 4096 else []:
        leaf = sum(dig * c ** (d - 1 - i) for i, dig in enumerate(digits))
        item = int(tree.leaf_item[leaf])
        if item >= 0:
            seen[item] += 1
            assert tree.paths(torch.tensor([item]))[0].tolist() == list(digits)
    if c ** d <= 4096:
        assert (seen == 1).all()
    assert torch.equal(tree.leaf_item[tree.item_leaf], torch.arange(n))


def test_n_internal_eq_7_18():
    tree = build_balanced_tree(torch.randn(100, 4), depth=3)
    c = tree.branching
    assert tree.n_internal == (c ** 3 - 1) // (c - 1) == 1 + c + c * c


def test_kmeans_recovers_separated_clusters():
    g = torch.Generator().manual_seed(0)
    centres = torch.tensor([[10.0, 0, 0], [-10, 0, 0], [0, 10, 0], [0, -10, 0]])
    truth = torch.arange(4).repeat_interleave(25)[torch.randperm(100, generator=g)]
    x = centres[truth] + 0.5 * torch.randn(100, 3, generator=g)
    tree = build_balanced_tree(x, depth=4, branching=4, method="kmeans")
    root_child = tree.ancestors(torch.arange(100), 1)
    for child in range(4):  # each child of the root holds exactly one true cluster
        assert truth[root_child == child].unique().numel() == 1
    _check_balanced(tree)


def test_balanced_assign_capacities_and_stability():
    g = torch.Generator().manual_seed(0)
    dist = torch.rand(3, 12, 4, generator=g)
    valid = torch.ones(3, 12, dtype=torch.bool)
    valid[2, 10:] = False
    cap = torch.tensor([[3, 3, 3, 3], [6, 2, 2, 2], [3, 3, 2, 2]])
    lab = balanced_assign(dist, valid, cap)
    for gi in range(3):
        counts = torch.bincount(lab[gi][valid[gi]], minlength=4)
        assert torch.equal(counts, cap[gi])
        assert bool((lab[gi][~valid[gi]] == -1).all())
        # stability: no (item, cluster) pair that both prefer each other to their assignment
        for i in torch.nonzero(valid[gi]).flatten().tolist():
            mine = dist[gi, i, lab[gi, i]]
            for cl in range(4):
                if dist[gi, i, cl] < mine:
                    members = torch.nonzero(lab[gi] == cl).flatten()
                    assert bool((dist[gi, members, cl] <= dist[gi, i, cl]).all()), "blocking pair"


def test_build_validation():
    with pytest.raises(ValueError, match="method"):
        build_balanced_tree(torch.randn(10, 2), method="ward")
    with pytest.raises(ValueError, match="NaN"):
        build_balanced_tree(torch.full((10, 2), float("nan")))
    with pytest.raises(ValueError, match="max_elements"):
        build_balanced_tree(torch.randn(1000, 2), depth=2, method="kmeans", max_elements=1000)


# ------------------------------------------------------------------------------------------ policy
def _reference_item_log_probs(pol: TreePolicy, state: SlateState) -> torch.Tensor:
    """Independent loop: log pi(item) = sum over its path of log-softmax over the non-empty children."""
    tree, c, d = pol.tree, pol.tree.branching, pol.tree.depth
    h = pol.encoder(state.obs)
    out = torch.full((len(state), tree.n_items), float("-inf"), dtype=torch.float64)
    for item in range(tree.n_items):
        digits = tree.paths(torch.tensor([item]))[0].tolist()
        node, total = 0, torch.zeros(len(state), dtype=torch.float64)
        for level, dig in enumerate(digits):
            logits = (h @ pol.weights[level][node] + pol.biases[level][node]).double()
            nonempty = tree.counts(level + 1)[node * c: node * c + c] > 0
            logits = logits.masked_fill(~nonempty, float("-inf"))
            total = total + torch.log_softmax(logits, -1)[:, dig]
            node = node * c + dig
        out[:, item] = total
    return out


@pytest.mark.parametrize("n,depth", [(2, 1), (7, 3), (10, 2), (27, 3), (50, 4)])
def test_path_probabilities_sum_to_one_and_match_loop(n, depth):
    tree = build_balanced_tree(torch.randn(n, 4, generator=torch.Generator().manual_seed(n)), depth=depth)
    pol = _random_policy(tree)
    state = _state(5, 6)
    with torch.no_grad():
        scores = pol.scores(state)
        torch.testing.assert_close(scores.double().exp().sum(1), torch.ones(5, dtype=torch.float64))
        torch.testing.assert_close(scores.double(), _reference_item_log_probs(pol, state), atol=1e-5, rtol=1e-5)
        single = pol.item_log_probs(state, torch.arange(n).expand(5, n))
        torch.testing.assert_close(single, scores, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("k", [1, 2, 3])
def test_slate_log_prob_is_a_distribution_with_exclusion(k):
    n = 7
    tree = build_balanced_tree(torch.randn(n, 3, generator=torch.Generator().manual_seed(1)), depth=3)
    pol = _random_policy(tree, seed=1)
    state = _state(3, 6, seed=1)
    exclude = torch.zeros(3, n, dtype=torch.bool)
    exclude[1, [0, 2]] = True
    exclude[2, [3, 4, 5]] = True  # exhausts a subtree
    slates = torch.tensor(list(itertools.permutations(range(n), k)))
    with torch.no_grad():
        total = torch.zeros(3, dtype=torch.float64)
        for s in slates:
            lp = pol.log_prob(state, s.expand(3, k), exclude=exclude)
            bad = exclude[:, s].any(1)
            assert bool(torch.isneginf(lp[bad]).all()), "a slate with an excluded item must have probability 0"
            total += lp.double().exp()
    torch.testing.assert_close(total, torch.ones(3, dtype=torch.float64), atol=1e-5, rtol=1e-5)


def test_sampling_matches_log_prob():
    n, k, draws = 6, 2, 20000
    tree = build_balanced_tree(torch.randn(n, 3, generator=torch.Generator().manual_seed(2)), depth=2)
    pol = _random_policy(tree, seed=2)
    one = _state(1, 6, seed=2)
    state = SlateState(one.obs.expand(draws, -1), one.history.expand(draws, -1), one.user.expand(draws))
    exclude = torch.zeros(draws, n, dtype=torch.bool)
    exclude[:, 4] = True
    slates = pol.act(state, k, "sample", exclude, torch.Generator().manual_seed(0))
    assert not bool(torch.gather(exclude, 1, slates).any())
    assert bool((slates[:, 0] != slates[:, 1]).all())
    codes = slates[:, 0] * n + slates[:, 1]
    freq = torch.bincount(codes, minlength=n * n).double() / draws
    pairs = torch.tensor([[a, b] for a in range(n) for b in range(n) if a != b])
    with torch.no_grad():
        p = pol.log_prob(SlateState(one.obs.expand(len(pairs), -1), one.history.expand(len(pairs), -1),
                                    one.user.expand(len(pairs))), pairs, exclude=exclude[: len(pairs)]).double().exp()
    emp = freq[pairs[:, 0] * n + pairs[:, 1]]
    assert float((emp - p).abs().max()) < 4 * math.sqrt(0.25 / draws) + 1e-3


def test_act_never_repeats_nor_returns_excluded_items():
    n = 200
    tree = build_balanced_tree(torch.randn(n, 8, generator=torch.Generator().manual_seed(3)), depth=3, method="kmeans")
    pol = _random_policy(tree, seed=3)
    state = _state(64, 6, seed=3)
    g = torch.Generator().manual_seed(3)
    exclude = torch.rand(64, n, generator=g) < 0.6
    exclude[0] = True
    exclude[0, :10] = False  # exactly k admissible items left
    for mode in ("greedy", "sample"):
        slates = pol.act(state, 10, mode, exclude, g)
        assert slates.shape == (64, 10)
        assert not bool(torch.gather(exclude, 1, slates).any())
        assert bool((torch.sort(slates, 1).values.diff(dim=1) > 0).all())
        assert set(slates[0].tolist()) == set(range(10))
        lp = pol.log_prob(state, slates, exclude=exclude)
        assert bool(torch.isfinite(lp).all())
    assert torch.equal(pol.act(state, 5, "greedy", exclude), pol.act(state, 5, "greedy", exclude))
    with pytest.raises(ValueError, match="admissible"):
        pol.act(state, 11, "sample", exclude, g)


def test_log_prob_gradients_are_finite_and_reach_the_heads():
    tree = build_balanced_tree(torch.randn(30, 4), depth=2)
    pol = _random_policy(tree)
    state = _state(8, 6)
    exclude = torch.zeros(8, 30, dtype=torch.bool)
    exclude[:, :5] = True
    slates = pol.act(state, 3, "sample", exclude, torch.Generator().manual_seed(0))
    pol.log_prob(state, slates, exclude=exclude).sum().backward()
    grads = [p.grad for p in pol.parameters()]
    assert all(g_ is not None and bool(torch.isfinite(g_).all()) for g_ in grads)
    assert float(pol.weights[1].grad.abs().sum()) > 0


def test_log_prob_with_candidates_renormalises_item_marginals():
    tree = build_balanced_tree(torch.randn(20, 4), depth=2)
    pol = _random_policy(tree)
    state = _state(2, 6)
    cand = torch.tensor([[0, 3, 5, 7], [1, 2, 4, 6]])
    with torch.no_grad():
        marg = pol.item_log_probs(state, cand)
        lp = pol.log_prob(state, cand[:, :1], candidates=cand)
    torch.testing.assert_close(lp, marg[:, 0] - torch.logsumexp(marg, 1))


def test_snapshot_is_frozen_copy():
    tree = build_balanced_tree(torch.randn(20, 4), depth=2)
    pol = _random_policy(tree)
    snap = pol.snapshot()
    with torch.no_grad():
        pol.weights[0].add_(1.0)
    assert not torch.equal(snap.weights[0], pol.weights[0])
    assert not any(p.requires_grad for p in snap.parameters())
