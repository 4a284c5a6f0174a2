"""Balanced hierarchical clustering tree over items and the TPGR tree policy (Chen et al., "Large-scale
Interactive Recommendation with Tree-structured Policy Gradient", AAAI 2019; seed §7.2).

Tree (:func:`build_balanced_tree`).  A complete c-ary tree of depth d with
c = ceil(|I|^(1/d)), so that c^(d-1) < |I| <= c^d (seed eq. 7-12).  Every node
splits its n items into c children of sizes floor(n/c) or ceil(n/c), hence
sibling subtrees differ by at most one item and every level holds only two
node sizes; that lets each level be clustered for all its nodes at once
(padded [nodes, max size, dim] tensors, no loop over nodes):

* ``method="pca"``: sort the node's items by their projection on the node's
  first principal component and cut the order into the c balanced chunks;
* ``method="kmeans"``: balanced k-means -- Lloyd iterations (initialised at the
  PCA chunks' centroids) whose assignment step fills each child to exactly its
  size by deferred acceptance (items propose to centroids in order of distance,
  each centroid keeps its nearest proposers up to its capacity).

Nodes are numbered per level: node j of level l has children j*c + 0..c-1 on
level l+1, and level d holds the c^d leaf slots, at most one item each (empty
slots exist when |I| < c^d).  There are (c^d - 1)/(c - 1) non-leaf nodes (eq. 7-18).

Policy (:class:`TreePolicy`).  A shared state encoder h = MLP(obs) and, for every
non-leaf node v, a softmax head over its c children, pi_v(child | s) =
softmax(W_v h + b_v) (the paper gives each node its own network; sharing the
encoder keeps the same O(d * c) decision cost, eq. 7-17, and O(|I|) memory).
The heads of one level are one tensor [c^l, H, c], evaluated for a batch by a
gather + bmm, so the only Python loops are over tree depth and slate positions.
Children whose subtree holds no admissible item (empty slots, ``exclude``,
items already in the slate) are masked, so no item repeats, and

    log pi(item | s) = sum over the path root -> leaf of log pi_v(next node | s)   (exact)

``log_prob`` of a slate is the exact probability of drawing its items in order
without replacement (each later item's path renormalised over what is left).

Per-slate cap (``constraint="per-slate"``, FCPO eq. 7-9 per slate, :mod:`fcpo.policies.capped`).
With m = floor(α'K) < K, once a slate holds m G0 items the G0 leaves join the excluded items
for the remaining positions (unless no G1 item is left: then only the excluded and already
picked items stay masked, the rule of :mod:`fcpo.policies.capped`).  The same subtree-count
masking then renormalises every node softmax over the children that still hold an allowed
leaf, so sampling, greedy walks and ``log_prob`` agree and the log-probability stays exact.
``constraint="expected"`` or m >= K leave the policy exactly as above.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from fcpo.evaluate.constraint import per_slate_cap
from fcpo.policies.base import Policy, SlateState, check_alpha_prime, check_constraint_mode, plackett_luce_log_prob
from fcpo.policies.capped import cap_binds

TREE_METHODS = ("pca", "kmeans")


# --------------------------------------------------------------------------------------------- tree
def tree_shape(n_items: int, depth: int | None = None, branching: int | None = None) -> tuple[int, int]:
    """(depth d, branching c) with c^(d-1) < n_items <= c^d (eq. 7-12); c = ceil(n^(1/d)) given d."""
    if n_items < 2:
        raise ValueError(f"a tree needs at least 2 items, got {n_items}")
    if depth is None and branching is None:
        depth = 2
    if depth is not None and depth < 1:
        raise ValueError(f"depth must be >= 1, got {depth}")
    if branching is not None and branching < 2:
        raise ValueError(f"branching (children per node) must be >= 2, got {branching}")
    if branching is None:
        c = max(2, math.ceil(n_items ** (1.0 / depth)))
        while (c - 1) ** depth >= n_items and c > 2:  # float rounding guard: smallest c with c^d >= n
            c -= 1
        while c ** depth < n_items:
            c += 1
        return depth, c
    if depth is None:
        depth = 1
        while branching ** depth < n_items:
            depth += 1
        return depth, branching
    if branching ** depth < n_items:
        raise ValueError(f"branching {branching} and depth {depth} give {branching ** depth} leaves < {n_items} items; "
                         "raise one of them or leave branching unset (c = ceil(n^(1/d)))")
    return depth, branching


def _child_sizes(sizes: torch.Tensor, c: int) -> torch.Tensor:
    """Sizes of the c children of each node: floor(n/c) + (k < n mod c), row-major [nodes * c]."""
    k = torch.arange(c, device=sizes.device)
    return (sizes[:, None] // c + (k[None, :] < (sizes[:, None] % c)).long()).reshape(-1)


def _chunk_of_position(sizes: torch.Tensor, c: int, pos: torch.Tensor) -> torch.Tensor:
    """Child index of sorted position ``pos`` [m] in each node [nodes]: the first n mod c children
    hold floor(n/c) + 1 items, the others floor(n/c) (closed form of a search over the cumsum)."""
    q, r = (sizes // c)[:, None], (sizes % c)[:, None]
    p = pos[None, :]
    big = r * (q + 1)
    return torch.where(p < big, p // (q + 1), r + (p - big) // q.clamp(min=1))


def _principal_projection(x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Projection of each node's centred items on the node's first principal component; [nodes, m]."""
    w = valid.to(x.dtype)[..., None]
    cnt = w.sum(1, keepdim=True).clamp(min=1.0)
    xc = (x - (x * w).sum(1, keepdim=True) / cnt) * w
    cov = xc.transpose(1, 2) @ xc
    _, vecs = torch.linalg.eigh(cov.double())
    v = vecs[..., -1].to(x.dtype)  # eigenvector of the largest eigenvalue
    sign = torch.sign(torch.gather(v, 1, v.abs().argmax(1, keepdim=True)))  # deterministic orientation
    v = v * torch.where(sign == 0, torch.ones_like(sign), sign)
    return (xc @ v[..., None]).squeeze(-1)


def balanced_assign(dist: torch.Tensor, valid: torch.Tensor, capacity: torch.Tensor) -> torch.Tensor:
    """Assign items to clusters with exact capacities by deferred acceptance, batched over groups.

    dist [G, m, c] item-to-centroid distances, valid [G, m], capacity [G, c] with
    capacity.sum(1) == valid.sum(1).  Items propose to clusters in order of distance;
    each cluster keeps its ``capacity`` nearest proposers and rejects the rest, who
    propose to their next choice.  Returns labels [G, m] (-1 for invalid slots); the
    result is stable: no item and cluster both prefer each other to their match.
    """
    g, m, c = dist.shape
    if not torch.equal(capacity.sum(1), valid.sum(1)):
        raise ValueError("capacities must sum to the number of valid items in every group")
    pref = torch.argsort(dist, dim=2)  # each item's clusters, nearest first
    ptr = torch.zeros(g, m, dtype=torch.long, device=dist.device)
    label = torch.full((g, m), -1, dtype=torch.long, device=dist.device)
    group_base = (torch.arange(g, device=dist.device) * c)[:, None]
    sentinel = g * c
    cap_flat = torch.cat([capacity.reshape(-1), capacity.new_zeros(1)])
    for _ in range(m * c + 1):  # proposal rounds (terminates: each rejection advances a pointer)
        free = valid & (label < 0)
        if not bool(free.any()):
            return label
        cand = torch.where(free, torch.gather(pref, 2, ptr.clamp(max=c - 1)[..., None]).squeeze(-1), label)
        d = torch.gather(dist, 2, cand.clamp(min=0)[..., None]).squeeze(-1)
        key = torch.where(valid, group_base + cand, torch.full_like(cand, sentinel)).reshape(-1)
        order = torch.argsort(d.reshape(-1), stable=True)
        order = order[torch.argsort(key[order], stable=True)]  # lexicographic (cluster, distance)
        skey = key[order]
        idx = torch.arange(skey.numel(), device=dist.device)
        starts = torch.ones_like(skey, dtype=torch.bool)
        starts[1:] = skey[1:] != skey[:-1]
        first = torch.cummax(torch.where(starts, idx, torch.zeros_like(idx)), 0).values  # group start
        rank = idx - first
        accept_sorted = rank < cap_flat[skey]
        accept = torch.empty_like(accept_sorted)
        accept[order] = accept_sorted
        accept = accept.reshape(g, m) & valid
        rejected = valid & ~accept
        ptr = torch.where(rejected, ptr + 1, ptr)
        label = torch.where(accept, cand, torch.full_like(cand, -1))
    raise RuntimeError("balanced_assign did not converge")  # unreachable for consistent capacities


def _kmeans_order(x, valid, sizes, c, init_labels, iters):
    """Balanced k-means labels [nodes, m] with child k holding exactly its balanced size."""
    capacity = _child_sizes(sizes, c).reshape(-1, c)
    labels = init_labels
    w = valid.to(x.dtype)
    for _ in range(iters):
        onehot = torch.nn.functional.one_hot(labels.clamp(min=0), c).to(x.dtype) * w[..., None]  # [G, m, c]
        cnt = onehot.sum(1)  # [G, c]
        cent = (onehot.transpose(1, 2) @ x) / cnt.clamp(min=1.0)[..., None]  # [G, c, dim]
        dist = (x * x).sum(-1, keepdim=True) - 2 * x @ cent.transpose(1, 2) + (cent * cent).sum(-1)[:, None, :]
        dist = dist.masked_fill((cnt == 0)[:, None, :], float("inf"))  # children of size 0 take nobody
        new = balanced_assign(dist, valid, capacity)
        if torch.equal(new, labels):
            break
        labels = new
    return labels


def build_balanced_tree(embeddings: torch.Tensor, depth: int | None = None, branching: int | None = None,
                        method: str = "pca", kmeans_iters: int = 10, max_elements: int = 1 << 25) -> "BalancedTree":
    """Balanced hierarchical clustering of the rows of ``embeddings`` [N, dim] (see module docstring).

    Deterministic for given embeddings.  ``method="kmeans"`` holds [nodes, m, c] distances per
    level, i.e. N * c numbers; above ``max_elements`` it refuses and suggests ``pca`` or a deeper tree.
    """
    if method not in TREE_METHODS:
        raise ValueError(f"method must be one of {TREE_METHODS}, got {method!r}")
    if embeddings.dim() != 2:
        raise ValueError(f"embeddings must be [n_items, dim], got shape {tuple(embeddings.shape)}")
    if not bool(torch.isfinite(embeddings).all()):
        raise ValueError("embeddings contain NaN or inf")
    x_all = embeddings.detach().float()
    n = x_all.shape[0]
    d, c = tree_shape(n, depth, branching)
    if method == "kmeans" and n * c > max_elements:
        raise ValueError(f"balanced k-means over {n} items with c={c} needs {n * c:,} distances per level "
                         f"(> max_elements={max_elements:,}); use method='pca' or a deeper tree")
    dev = x_all.device
    order = torch.arange(n, device=dev)  # items, grouped contiguously by node of the current level
    sizes = torch.tensor([n], device=dev)
    for _ in range(d):  # levels: every node of a level is clustered in one batched pass
        m = int(sizes.max())
        starts = torch.cumsum(sizes, 0) - sizes
        pos = torch.arange(m, device=dev)
        valid = pos[None, :] < sizes[:, None]
        slot = (starts[:, None] + pos[None, :]).clamp(max=n - 1)
        items = torch.where(valid, order[slot], torch.full_like(slot, -1))
        if m > 1:
            x = x_all[items.clamp(min=0)] * valid[..., None]
            proj = _principal_projection(x, valid).masked_fill(~valid, float("inf"))
            rank_order = torch.argsort(proj, dim=1, stable=True)
            if method == "kmeans":
                # initial labels = the PCA chunks, then balanced Lloyd iterations
                init_sorted = _chunk_of_position(sizes, c, pos)
                init = torch.empty_like(init_sorted)
                init.scatter_(1, rank_order, init_sorted)
                init = torch.where(valid, init.clamp(max=c - 1), torch.full_like(init, -1))
                labels = _kmeans_order(x, valid, sizes, c, init, kmeans_iters)
                key = torch.where(valid, labels, torch.full_like(labels, c)).double() * (m + 1) + pos.double()
                rank_order = torch.argsort(key, dim=1)
            items = torch.gather(items, 1, rank_order)
            valid = torch.gather(valid, 1, rank_order)
        order = items[valid]
        sizes = _child_sizes(sizes, c)
    return BalancedTree.from_leaf_order(order, sizes, n, d, c)


class BalancedTree(nn.Module):
    """Index arrays of a complete c-ary tree of depth d whose leaves hold the items (buffers only).

    ``leaf_item`` [c^d] (item id or -1), ``item_leaf`` [N], ``count_l`` [c^l] = items under each
    node of level l (``counts(l)``), for l = 0..d.
    """

    def __init__(self, item_leaf: torch.Tensor, depth: int, branching: int):
        super().__init__()
        n = int(item_leaf.numel())
        self.n_items, self.depth, self.branching = n, int(depth), int(branching)
        self.n_leaves = self.branching ** self.depth
        if item_leaf.min() < 0 or item_leaf.max() >= self.n_leaves or torch.unique(item_leaf).numel() != n:
            raise ValueError("item_leaf must map the items to distinct leaf slots in [0, c^d)")
        leaf_item = torch.full((self.n_leaves,), -1, dtype=torch.long, device=item_leaf.device)
        leaf_item[item_leaf] = torch.arange(n, device=item_leaf.device)
        self.register_buffer("item_leaf", item_leaf.long().clone())
        self.register_buffer("leaf_item", leaf_item)
        count = (leaf_item >= 0).long()
        for level in range(self.depth, -1, -1):
            self.register_buffer(f"count_{level}", count)
            count = count.reshape(-1, self.branching).sum(1) if level > 0 else count

    @classmethod
    def from_leaf_order(cls, order: torch.Tensor, leaf_sizes: torch.Tensor, n: int, depth: int, c: int):
        slots = torch.nonzero(leaf_sizes, as_tuple=True)[0]  # leaves holding one item, in item order
        item_leaf = torch.empty(n, dtype=torch.long, device=order.device)
        item_leaf[order] = slots
        return cls(item_leaf, depth, c)

    def counts(self, level: int) -> torch.Tensor:
        return getattr(self, f"count_{level}")

    @property
    def n_internal(self) -> int:
        """Non-leaf nodes (c^d - 1)/(c - 1) (seed eq. 7-18, errata)."""
        return (self.branching ** self.depth - 1) // (self.branching - 1)

    def ancestors(self, items: torch.Tensor, level: int) -> torch.Tensor:
        """Node id on ``level`` (0 = root) of the path to each item."""
        return self.item_leaf[items] // (self.branching ** (self.depth - level))

    def paths(self, items: torch.Tensor) -> torch.Tensor:
        """Child digits root -> leaf, [..., d] in [0, c)."""
        leaf = self.item_leaf[items]
        pw = self.branching ** torch.arange(self.depth - 1, -1, -1, device=leaf.device)
        return (leaf[..., None] // pw) % self.branching

    def excluded_counts(self, exclude: torch.Tensor) -> list[torch.Tensor | None]:
        """Per level l = 0..d-1, the number of excluded items under each node: [B, c^l] (dense mask in)."""
        b = exclude.shape[0]
        rows, items = torch.nonzero(exclude, as_tuple=True)
        leaf = self.item_leaf[items]
        out: list[torch.Tensor | None] = []
        for level in range(self.depth):
            width = self.branching ** level
            node = leaf // (self.branching ** (self.depth - level))
            cnt = torch.zeros(b * width, dtype=torch.long, device=exclude.device)
            cnt.index_add_(0, rows * width + node, torch.ones_like(node))
            out.append(cnt.reshape(b, width))
        return out


# ------------------------------------------------------------------------------------------- policy
class TreePolicy(Policy):
    """TPGR policy over a :class:`BalancedTree`; ``log_prob`` is the exact path probability."""

    log_prob_kind = "exact tree-path softmax (sum of per-node log-softmax along the path; slates without replacement)"

    def __init__(self, tree: BalancedTree, obs_dim: int, hidden: int = 64, encoder_layers: int = 1,
                 alpha_prime: float = 1.0, constraint: str = "per-slate", deploy_mode: str = "greedy"):
        super().__init__()
        self.tree = tree
        self.alpha_prime = check_alpha_prime(alpha_prime, "TreePolicy")
        self.constraint = check_constraint_mode(constraint, "TreePolicy")
        if deploy_mode not in ("greedy", "sample"):
            raise ValueError(f"TreePolicy: deploy_mode must be 'greedy' or 'sample', got {deploy_mode!r}")
        self.deploy_mode = deploy_mode  # how the evaluator acts with this policy by default
        self.register_buffer("is_popular", torch.zeros(tree.n_items, dtype=torch.bool), persistent=False)
        self.has_groups = False
        self.hidden = int(hidden)
        layers: list[nn.Module] = []
        width = obs_dim
        for _ in range(encoder_layers):
            layers += [nn.Linear(width, hidden), nn.Tanh()]
            width = hidden
        self.encoder = nn.Sequential(*layers) if layers else nn.Identity()
        if not layers:
            self.hidden = obs_dim
        c = tree.branching
        # zero heads: the initial policy is uniform over the admissible children of every node
        self.weights = nn.ParameterList([nn.Parameter(torch.zeros(c ** lv, self.hidden, c)) for lv in range(tree.depth)])
        self.biases = nn.ParameterList([nn.Parameter(torch.zeros(c ** lv, c)) for lv in range(tree.depth)])

    # -- per-slate cap
    def set_groups(self, is_popular) -> None:
        """Set G0 (bool [n_items]); dynamic groupings call this whenever G0 changes."""
        mask = torch.as_tensor(is_popular, device=self.is_popular.device)
        if mask.dtype != torch.bool or mask.shape != (self.tree.n_items,):
            raise ValueError(f"is_popular must be a bool mask of shape [{self.tree.n_items}], "
                             f"got dtype {mask.dtype} shape {list(mask.shape)}")
        self.is_popular.copy_(mask)
        self.has_groups = True

    def cap_for(self, k: int) -> int | None:
        """m = floor(α'k) G0 items per k-item slate in per-slate mode; None (no cap) in expected mode."""
        return per_slate_cap(self.alpha_prime, k) if self.constraint == "per-slate" else None

    def _groups(self, is_popular: torch.Tensor | None, b: int) -> torch.Tensor:
        """The G0 mask of one call as [B, n]: the override ([n] or [B, n]) or the policy's own groups."""
        if is_popular is None:
            if not self.has_groups:
                raise RuntimeError("TreePolicy in per-slate mode needs the popular group: call set_groups() "
                                   "or pass is_popular=")
            is_popular = self.is_popular
        pop = torch.as_tensor(is_popular, device=self.is_popular.device)
        n = self.tree.n_items
        if pop.dtype != torch.bool or pop.shape not in ((n,), (b, n)):
            raise ValueError(f"is_popular must be a bool mask [{n}] or [{b}, {n}], got {pop.dtype} {list(pop.shape)}")
        return pop.expand(b, n)

    @staticmethod
    def capped_exclusion(blocked: torch.Tensor, pop: torch.Tensor, popular_so_far: torch.Tensor,
                         cap: int) -> torch.Tensor:
        """Items a slate position may not take ([B, n]): ``blocked`` (excluded or already picked),
        plus G0 once ``popular_so_far >= cap`` -- unless that leaves no item (no G1 left), then ``blocked``."""
        capped = blocked | (pop & (popular_so_far >= cap)[:, None])
        return torch.where((~capped).any(1, keepdim=True), capped, blocked)

    # -- helpers
    def _level_logits(self, h: torch.Tensor, level: int) -> torch.Tensor:
        """Logits of every node of ``level`` at once: one GEMM, [B, c^l, c]."""
        w, b = self.weights[level], self.biases[level]
        return (h @ w.permute(1, 0, 2).reshape(w.shape[1], -1)).reshape(h.shape[0], -1, w.shape[-1]) + b

    def _use_level_gemm(self, level: int, nodes_per_row: int, rows: int) -> bool:
        """One GEMM over all c^l heads beats gathering each asked node's head (a memory-bound copy,
        ~30x slower per flop) while c^l <= 32 * nodes asked per state, and fits in 2^26 floats."""
        width = self.weights[level].shape[0]
        return width <= 32 * nodes_per_row and rows * width * self.tree.branching <= 1 << 26

    def _node_logits(self, h: torch.Tensor, level: int, nodes: torch.Tensor | None,
                     full: torch.Tensor | None = None) -> torch.Tensor:
        """Logits of the children of ``nodes`` [B, ...] of ``level`` for states h [B, H] -> [B, ..., c].

        Exact either way: gather each node's head and bmm (O(B * k * H * c), the decision-time path,
        eq. 7-17), or pick rows of the level's full logits ``full`` / :meth:`_level_logits`.
        """
        w, b = self.weights[level], self.biases[level]
        if level == 0:
            out = h @ w[0] + b[0]
            return out if nodes is None else out.reshape(h.shape[0], *([1] * (nodes.dim() - 1)), -1).expand(*nodes.shape, -1)
        bsz, c = h.shape[0], w.shape[-1]
        flat = nodes.reshape(bsz, -1)
        if full is None and self._use_level_gemm(level, flat.shape[1], bsz):
            full = self._level_logits(h, level)
        if full is not None:
            return torch.gather(full, 1, flat[..., None].expand(-1, -1, c)).reshape(*nodes.shape, c)
        hk = h[:, None, :].expand(bsz, flat.shape[1], h.shape[-1]).reshape(-1, 1, h.shape[-1])
        out = torch.bmm(hk, w[flat.reshape(-1)]).squeeze(1) + b[flat.reshape(-1)]
        return out.reshape(*nodes.shape, c)

    def _admissible(self, level: int, child: torch.Tensor, exclude, excl_counts, taken=None) -> torch.Tensor:
        """Bool mask of children (ids on level+1, shape [B, ..., c]) whose subtree still holds an item."""
        tree = self.tree
        avail = tree.counts(level + 1)[child]
        if exclude is not None:
            b = child.shape[0]
            if level + 1 < tree.depth:
                flat = child.reshape(b, -1)
                avail = avail - torch.gather(excl_counts[level + 1], 1, flat).reshape(child.shape)
            else:
                item = tree.leaf_item[child]
                flat = item.clamp(min=0).reshape(b, -1)
                avail = avail & ~torch.gather(exclude, 1, flat).reshape(child.shape)
        if taken is not None:
            avail = avail - taken
        return avail > 0

    def _check(self, state: SlateState, k: int, exclude):
        n = self.tree.n_items
        if exclude is not None:
            if exclude.shape != (len(state), n):
                raise ValueError(f"exclude must be a bool mask [B, n_items] = [{len(state)}, {n}], got {tuple(exclude.shape)}")
            left = n - exclude.sum(1)
            if bool((left < k).any()):
                raise ValueError(f"a row has only {int(left.min())} admissible items for a slate of k={k}")
        elif k > n:
            raise ValueError(f"k={k} exceeds the catalogue ({n} items)")

    # -- Policy contract
    def scores(self, state: SlateState) -> torch.Tensor:
        """log pi(item | s) for every item, [B, N] (full catalogue, O(|I|) per user; no exclusion)."""
        h = self.encoder(state.obs)
        c = self.tree.branching
        logp = torch.zeros(h.shape[0], 1, device=h.device, dtype=h.dtype)
        for level in range(self.tree.depth):  # all nodes of the level at once
            logits = torch.einsum("bh,nhc->bnc", h, self.weights[level]) + self.biases[level]
            empty = (self.tree.counts(level + 1) == 0).reshape(1, -1, c)
            logits = logits.masked_fill(empty, float("-inf"))
            logp = (logp[..., None] + torch.log_softmax(logits, -1)).reshape(h.shape[0], -1)
            logp = torch.nan_to_num(logp, nan=float("-inf"))  # rows of fully-empty nodes
        return logp[:, self.tree.item_leaf]

    @torch.no_grad()
    def act(self, state: SlateState, k: int, mode: str = "greedy", exclude: torch.Tensor | None = None,
            generator: torch.Generator | None = None, is_popular: torch.Tensor | None = None) -> torch.Tensor:
        """k distinct items per row, walking root -> leaf k times.

        ``sample``: each step draws from the masked node softmax (so the slate has exactly
        probability exp(log_prob)); ``greedy``: the most probable admissible child at every
        node (beam width 1 -- the mode of the path, not necessarily of the item).  In per-slate
        mode G0 leaves are masked once the cap is reached (groups: ``is_popular`` [n] / [B, n]
        or the policy's own, :meth:`set_groups`).
        """
        if mode not in ("greedy", "sample"):
            raise ValueError(f"mode must be 'greedy' or 'sample', got {mode!r}")
        self._check(state, k, exclude)
        tree, c, d = self.tree, self.tree.branching, self.tree.depth
        h = self.encoder(state.obs)
        b = h.shape[0]
        cap = self.cap_for(k)
        if cap_binds(cap, k):
            return self._act_capped(h, k, mode, exclude, generator, cap, self._groups(is_popular, b))
        excl = tree.excluded_counts(exclude) if exclude is not None else None
        ar = torch.arange(c, device=h.device)
        leaves = torch.zeros(b, 0, dtype=torch.long, device=h.device)
        root_logits = self._node_logits(h, 0, None)  # the root's softmax is shared by all slate positions
        # narrow levels: all their heads in one GEMM, reused by every slate position
        full = [None] + [self._level_logits(h, lv) if self._use_level_gemm(lv, k, b) else None for lv in range(1, d)]
        for _ in range(k):  # slate positions
            node = torch.zeros(b, dtype=torch.long, device=h.device)
            for level in range(d):  # tree depth
                child = node[:, None] * c + ar
                prefix = leaves // (c ** (d - level - 1))  # earlier picks' nodes on level+1
                taken = (prefix[:, :, None] == child[:, None, :]).sum(1)
                ok = self._admissible(level, child, exclude, excl, taken)
                logits = root_logits if level == 0 else self._node_logits(h, level, node, full[level])
                logits = logits.masked_fill(~ok, float("-inf"))
                if mode == "sample":
                    u = torch.rand(logits.shape, device=h.device, generator=generator).clamp_(1e-20, 1.0)
                    logits = logits - torch.log(-torch.log(u))
                node = torch.gather(child, 1, logits.argmax(1, keepdim=True)).squeeze(1)
            leaves = torch.cat([leaves, node[:, None]], 1)
        return tree.leaf_item[leaves]

    def _walk(self, h, exclude, mode, generator, full) -> torch.Tensor:
        """One root -> leaf walk per row avoiding the items of ``exclude`` [B, n]; the leaf ids [B]."""
        tree, c, d = self.tree, self.tree.branching, self.tree.depth
        excl = tree.excluded_counts(exclude)
        ar = torch.arange(c, device=h.device)
        node = torch.zeros(h.shape[0], dtype=torch.long, device=h.device)
        for level in range(d):  # tree depth
            child = node[:, None] * c + ar
            ok = self._admissible(level, child, exclude, excl)
            logits = self._node_logits(h, level, None if level == 0 else node, full[level])
            if level == 0:
                logits = logits.expand(h.shape[0], c)
            logits = logits.masked_fill(~ok, float("-inf"))
            if mode == "sample":
                u = torch.rand(logits.shape, device=h.device, generator=generator).clamp_(1e-20, 1.0)
                logits = logits - torch.log(-torch.log(u))
            node = torch.gather(child, 1, logits.argmax(1, keepdim=True)).squeeze(1)
        return node

    def _act_capped(self, h, k, mode, exclude, generator, cap: int, pop: torch.Tensor) -> torch.Tensor:
        """:meth:`act` under the per-slate cap: position j walks the tree with the items of
        :meth:`capped_exclusion` masked (excluded, picked, and G0 at the cap)."""
        b, n = pop.shape
        rows = torch.arange(b, device=h.device)
        blocked = torch.zeros(b, n, dtype=torch.bool, device=h.device) if exclude is None else exclude.clone()
        popular_so_far = torch.zeros(b, dtype=torch.long, device=h.device)
        full = [None] + [self._level_logits(h, lv) if self._use_level_gemm(lv, k, b) else None
                         for lv in range(1, self.tree.depth)]
        picks = []
        for _ in range(k):  # slate positions
            item = self.tree.leaf_item[self._walk(h, self.capped_exclusion(blocked, pop, popular_so_far, cap),
                                                  mode, generator, full)]
            picks.append(item)
            blocked[rows, item] = True
            popular_so_far += pop[rows, item]
        return torch.stack(picks, 1)

    def _capped_log_prob(self, h, items, exclude, cap: int, pop: torch.Tensor) -> torch.Tensor:
        """Per-position exact log-probabilities [B, k] under the cap (position j: one path over the
        items :meth:`capped_exclusion` leaves allowed given positions < j)."""
        b, n = pop.shape
        rows = torch.arange(b, device=h.device)
        blocked = torch.zeros(b, n, dtype=torch.bool, device=h.device) if exclude is None else exclude.clone()
        popular_so_far = torch.zeros(b, dtype=torch.long, device=h.device)
        terms = []
        for j in range(items.shape[1]):  # slate positions, vectorised over rows
            allowed_mask = self.capped_exclusion(blocked, pop, popular_so_far, cap)
            terms.append(self._path_log_prob(h, items[:, j:j + 1], allowed_mask, sequential=False)[:, 0])
            blocked = blocked.clone()
            blocked[rows, items[:, j]] = True
            popular_so_far = popular_so_far + pop[rows, items[:, j]]
        return torch.stack(terms, 1)

    def _path_log_prob(self, h, items, exclude, sequential: bool) -> torch.Tensor:
        """Sum of per-node log-softmax along the paths of ``items`` [B, k] -> [B, k].

        ``sequential``: position j also masks the subtrees used up by positions < j.
        """
        tree, c, d = self.tree, self.tree.branching, self.tree.depth
        b, k = items.shape
        leaves = tree.item_leaf[items]
        excl = tree.excluded_counts(exclude) if exclude is not None else None
        ar = torch.arange(c, device=h.device)
        earlier = torch.ones(k, k, dtype=torch.bool, device=h.device).tril(-1)  # [j, i]: i < j
        total = torch.zeros(b, k, device=h.device, dtype=h.dtype)
        for level in range(d):  # tree depth; all slate positions at once
            node = leaves // (c ** (d - level))
            child = node[..., None] * c + ar  # [B, k, c]
            nxt = leaves // (c ** (d - level - 1))
            digit = nxt - node * c
            taken = None
            if sequential and k > 1:
                same = (nxt[:, None, :, None] == child[:, :, None, :]) & earlier[None, :, :, None]
                taken = same.sum(2)
            ok = self._admissible(level, child, exclude, excl, taken)
            # a node with no admissible child (only reachable by an inadmissible slate) scores -inf, not NaN
            dead = ~ok.any(-1, keepdim=True)
            logits = self._node_logits(h, level, node).masked_fill(~ok & ~dead, float("-inf"))
            lsm = torch.log_softmax(logits, -1).masked_fill(~ok, float("-inf"))
            total = total + torch.gather(lsm, 2, digit[..., None]).squeeze(-1)
        return total

    def log_prob(self, state: SlateState, items: torch.Tensor, candidates: torch.Tensor | None = None,
                 exclude: torch.Tensor | None = None, is_popular: torch.Tensor | None = None) -> torch.Tensor:
        """Exact log-probability [B] of drawing the slate ``items`` [B, k] in order, without replacement,
        with ``exclude`` masked (and, in per-slate mode, G0 masked at the cap under the groups
        ``is_popular`` or the policy's own).  With ``candidates`` [B, C]: Plackett-Luce over the
        candidates with weights pi(item | s) (the item marginals of the tree; no cap)."""
        h = self.encoder(state.obs)
        cap = self.cap_for(items.shape[1])
        if candidates is None and cap_binds(cap, items.shape[1]):
            return self._capped_log_prob(h, items, exclude, cap, self._groups(is_popular, h.shape[0])).sum(1)
        if candidates is not None:
            s_c = self._path_log_prob(h, candidates, exclude, sequential=False)
            pos = (candidates[:, :, None] == items[:, None, :]).float().argmax(dim=1)
            return plackett_luce_log_prob(s_c, pos)
        return self._path_log_prob(h, items, exclude, sequential=True).sum(1)

    def item_log_probs(self, state: SlateState, items: torch.Tensor, exclude: torch.Tensor | None = None):
        """log pi(item | s) [B, M] of single draws (no slate interaction)."""
        return self._path_log_prob(self.encoder(state.obs), items, exclude, sequential=False)

    def memory_bytes(self) -> int:
        return sum(p.numel() * p.element_size() for p in self.parameters()) + \
            sum(b.numel() * b.element_size() for b in self.buffers())
