"""The FCPO split, leave-one-out, groups and the synthetic generator."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fcpo.data import (DynamicGrouping, RatingsData, StaticGrouping, SyntheticConfig, fcpo_split, leave_one_out_split,
                       load_dataset, popular_mask)
from fcpo.data.synthetic import generate


def _data(users, items, ratings, times, n_items=None):
    users, items = np.asarray(users), np.asarray(items)
    n_u, n_i = users.max() + 1, n_items or items.max() + 1
    return RatingsData("t", users, items, np.asarray(ratings, np.float32), np.asarray(times, np.int64),
                       np.arange(n_u), np.arange(n_i), np.array(["x"] * n_i, dtype=object),
                       np.zeros((n_i, 1), bool), ("g",), pd.DataFrame(index=range(n_u)))


def test_fcpo_split_hand_checked():
    # one user, 10 positives at times 10..1 (reverse file order) plus a 2-star rating in the middle
    items = list(range(10)) + [20]
    times = [100 - 10 * i for i in range(10)] + [55]
    ratings = [5] * 10 + [2]
    d = _data([0] * 11, items, ratings, times, n_items=21)
    s = fcpo_split(d, n_initial=2, threshold=4, train_ratio=0.75)
    # time order of positives: 9, 8, 7, 6, 5, 4, 3, 2, 1, 0 ; initial = [9, 8]; m = 8 -> 2 test, 6 train
    assert s.train_initial.tolist() == [[9, 8]]
    assert s.train_targets.row(0).tolist() == [7, 6, 5, 4, 3, 2]
    assert s.test_targets.row(0).tolist() == [1, 0]
    assert s.test_initial.tolist() == [[3, 2]]
    # items 0 and 1 (t=100, 90) are test targets; the 2-star rating at t=55 lies in the train period
    assert s.train_mask.tolist() == [False, False] + [True] * 8 + [True]
    assert s.train_ratings[0, 20] == 2 and s.test_ratings[0, 1] == 5 and s.train_ratings[0, 1] == 0


def test_ties_broken_by_item_id_and_threshold_zero_counts_everything():
    d = _data([0] * 6, [5, 3, 4, 0, 1, 2], [1, 1, 1, 1, 1, 1], [7, 7, 7, 1, 2, 3])
    with pytest.raises(AssertionError):
        assert fcpo_split(d, n_initial=2, threshold=4).n_episode_users == 1
    s = fcpo_split(d, n_initial=2, threshold=0, train_ratio=0.5)
    assert s.train_initial.tolist() == [[0, 1]]
    assert s.train_targets.row(0).tolist() == [2, 3] and s.test_targets.row(0).tolist() == [4, 5]


def test_users_with_too_few_positives_are_dropped_and_counted(caplog):
    d = _data([0, 0, 0, 1, 1, 1, 1, 1, 1, 1], list(range(3)) + list(range(7)), [5] * 10, list(range(10)))
    with caplog.at_level("INFO"):
        s = fcpo_split(d, n_initial=3, threshold=4)
    assert s.user_ids.tolist() == [1] and s.dropped_users == 1
    assert "dropped 1" in caplog.text


def test_leave_one_out():
    d = _data([0] * 8, list(range(8)), [5] * 8, list(range(8)))
    s = leave_one_out_split(d, n_initial=3)
    assert s.test_targets.row(0).tolist() == [7]
    assert s.train_targets.row(0).tolist() == [3, 4, 5, 6]
    assert s.test_initial.tolist() == [[4, 5, 6]]


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 10_000))
def test_split_properties_on_random_data(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(30, 200))
    d = _data(rng.integers(0, 6, n), rng.permutation(400)[:n], rng.integers(1, 6, n), rng.integers(0, 50, n), 400)
    s = fcpo_split(d, n_initial=3, threshold=3)
    for r, u in enumerate(s.user_ids):
        mine = (d.users == u)
        order = np.lexsort((d.items[mine], d.timestamps[mine]))
        pos = d.items[mine][order][d.ratings[mine][order] >= 3]
        seq = np.concatenate([s.train_initial[r], s.train_targets.row(r), s.test_targets.row(r)])
        assert seq.tolist() == pos.tolist()  # a partition of the positives, in time order
        assert s.test_initial[r].tolist() == np.concatenate([s.train_initial[r], s.train_targets.row(r)])[-3:].tolist()
        assert len(s.test_targets.row(r)) == max(1, min(round(0.2 * (len(pos) - 3)), len(pos) - 4))
    # the train period never contains a test target
    test_pairs = set(zip(np.repeat(s.user_ids, s.test_targets.lengths), s.test_targets.values))
    train_pairs = set(zip(d.users[s.train_mask], d.items[s.train_mask]))
    assert not (test_pairs & train_pairs)


def test_split_bad_arguments():
    d = _data([0] * 8, list(range(8)), [5] * 8, list(range(8)))
    with pytest.raises(ValueError, match="train_ratio"):
        fcpo_split(d, train_ratio=1.0)
    with pytest.raises(ValueError, match="n_initial"):
        fcpo_split(d, n_initial=0)


def test_real_ml100k_split(ml100k_dir):
    s = fcpo_split(load_dataset("ml-100k", data_dir=ml100k_dir))
    assert s.n_episode_users + s.dropped_users == 943
    assert s.n_episode_users > 900
    assert (s.test_initial[:, -1] == np.array([s.train_targets.row(r)[-1] for r in range(s.n_episode_users)])).all()


def test_popular_mask_and_groupings():
    counts = np.array([5, 1, 9, 9, 0, 3, 2, 8, 7, 4])
    assert np.flatnonzero(popular_mask(counts, 0.2)).tolist() == [2, 3]  # tie 9/9 kept, both in top 2
    assert np.flatnonzero(popular_mask(counts, 0.3)).tolist() == [2, 3, 7]
    static = StaticGrouping(counts, 0.2)
    static.record(np.array([[4, 4, 4]]))
    assert np.flatnonzero(static.is_popular).tolist() == [2, 3]
    dyn = DynamicGrouping(counts, 0.2, regroup_every=2)
    dyn.record(np.array([[4] * 10]))
    assert np.flatnonzero(dyn.is_popular).tolist() == [2, 3]  # not regrouped yet
    dyn.record(np.array([[4] * 5, [1] * 5]))
    # item 4: 0 + 15 = 15, item 1: 1 + 5 = 6 -> G0 = {4, 2} (9 ties with 3: lower id first)
    assert np.flatnonzero(dyn.is_popular).tolist() == [2, 4] and dyn.regroups == 1
    assert dyn.sizes() == (2, 8)
    dyn.reset()
    assert np.flatnonzero(dyn.is_popular).tolist() == [2, 3]
    with pytest.raises(ValueError, match="popular_ratio"):
        StaticGrouping(counts, 1.5)


def test_synthetic_is_deterministic_long_tailed_and_clustered(tmp_path):
    cfg = SyntheticConfig(n_users=200, n_items=300, seed=3)
    a, b = generate(cfg), generate(cfg)
    assert all(np.array_equal(a[k], b[k]) for k in ("users", "items", "ratings", "timestamps"))
    assert not np.array_equal(generate(SyntheticConfig(n_users=200, n_items=300, seed=4))["items"], a["items"])
    counts = np.sort(np.bincount(a["items"], minlength=300))[::-1]
    assert counts[:60].sum() > 0.4 * counts.sum()  # top 20 % of items take a large share: long tail
    same = a["user_cluster"][a["users"]] == a["item_cluster"][a["items"]]
    assert same.mean() > 3 / cfg.n_clusters  # taste clusters: far above the 1/8 chance rate
    assert a["ratings"][same].mean() > a["ratings"][~same].mean() + 0.5
    d = load_dataset("synthetic", data_dir=__import__("fcpo.data.synthetic", fromlist=["x"]).write_synthetic(tmp_path / "s", cfg))
    assert d.n_ratings == len(a["users"]) and d.item_titles[0].startswith("The ")


def test_successive_sampler_matches_the_gumbel_law():
    """Both samplers draw Plackett-Luce without replacement: same counts, distinct items, same taste statistics."""
    kw = dict(n_users=1500, n_items=300, mean_ratings_per_user=80, seed=5)  # many users near the n_items/2 cap
    a, b = generate(SyntheticConfig(sampler="successive", **kw)), generate(SyntheticConfig(sampler="gumbel", **kw))
    assert np.array_equal(np.bincount(a["users"]), np.bincount(b["users"]))  # same per-user counts
    keys = a["users"] * 300 + a["items"]
    assert len(np.unique(keys)) == len(keys)  # without replacement
    share = [(g["user_cluster"][g["users"]] == g["item_cluster"][g["items"]]).mean() for g in (a, b)]
    assert abs(share[0] - share[1]) < 0.01 and share[0] > 2 / 8
    pop = [np.sort(np.bincount(g["items"], minlength=300))[::-1][:30].sum() / len(g["items"]) for g in (a, b)]
    assert abs(pop[0] - pop[1]) < 0.01
    assert SyntheticConfig(n_users=20_000, n_items=20_000).resolved_sampler() == "successive"
    assert SyntheticConfig().resolved_sampler() == "gumbel"
