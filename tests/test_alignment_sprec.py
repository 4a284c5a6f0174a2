"""Tests for fcpo.alignment.data (samples, candidate lists, negatives), the DPO/S-DPO trainer and SPRec."""
import copy

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fcpo.alignment import (
    PreferenceData,
    SPRecConfig,
    TrainConfig,
    candidate_lists,
    history_state,
    next_item_samples,
    run_sprec,
    sample_negatives,
    seen_items,
    self_play_negatives,
    train_preference,
    train_sft,
    with_candidates,
)
from fcpo.data import Ragged, fcpo_split, load_dataset
from fcpo.policies.sequential import SequentialPolicy

FAST = settings(max_examples=30, deadline=None)


@pytest.fixture(scope="module")
def split():
    return fcpo_split(load_dataset("synthetic"))


@pytest.fixture(scope="module")
def sft_policy(split):
    pol = SequentialPolicy(split.n_items, 16, seed=0)
    train_sft(pol, next_item_samples(split, "train"), TrainConfig(epochs=1, batch_size=128, lr=1e-2))
    return pol


# ---------------------------------------------------------------- samples
def test_next_item_samples_match_a_loop(split):
    data = next_item_samples(split, "train", history_len=3)
    expected_h, expected_p, expected_r = [], [], []
    for r in range(split.n_episode_users):
        seq = list(split.train_initial[r]) + list(split.train_targets.row(r))
        for j in range(split.n_initial, len(seq)):
            expected_h.append(seq[j - 3:j])
            expected_p.append(seq[j])
            expected_r.append(r)
    np.testing.assert_array_equal(data.history, np.array(expected_h))
    np.testing.assert_array_equal(data.positive, expected_p)
    np.testing.assert_array_equal(data.row, expected_r)
    np.testing.assert_array_equal(data.user, split.user_ids[expected_r])


def test_test_samples_use_test_initial_and_first_last(split):
    first = next_item_samples(split, "test", per_user="first")
    assert len(first) == split.n_episode_users
    np.testing.assert_array_equal(first.history, split.test_initial)
    np.testing.assert_array_equal(first.positive, split.test_targets.values[split.test_targets.indptr[:-1]])
    last = next_item_samples(split, "train", per_user="last", rows=np.array([2, 0]))
    np.testing.assert_array_equal(last.row, [0, 2])
    np.testing.assert_array_equal(last.positive, [split.train_targets.row(0)[-1], split.train_targets.row(2)[-1]])
    with pytest.raises(ValueError, match="history_len"):
        next_item_samples(split, "train", history_len=split.n_initial + 1)


# ---------------------------------------------------------- candidate lists
@FAST
@given(st.integers(0, 10_000), st.integers(2, 8))
def test_candidate_lists_properties(seed, n_candidates):
    rng = np.random.default_rng(seed)
    n_items, n_users = 15, 4
    seen_rows = [np.sort(rng.choice(n_items, rng.integers(0, 6), replace=False)) for _ in range(n_users)]
    seen = Ragged(np.r_[0, np.cumsum([len(s) for s in seen_rows])].astype(np.int64),
                  np.concatenate(seen_rows).astype(np.int64))
    rows = rng.integers(0, n_users, 10)
    positive = rng.integers(0, n_items, 10)
    c = candidate_lists(positive, rows, seen, n_items, n_candidates, seed=seed)
    assert c.shape == (10, n_candidates)
    for i in range(10):
        assert len(set(c[i])) == n_candidates
        assert (c[i] == positive[i]).sum() == 1
        negs = set(c[i]) - {positive[i]}
        assert not negs & set(seen_rows[rows[i]])
    np.testing.assert_array_equal(c, candidate_lists(positive, rows, seen, n_items, n_candidates, seed=seed))


def test_candidate_lists_are_uniform_and_positions_random():
    seen = Ragged(np.array([0, 2], dtype=np.int64), np.array([0, 1], dtype=np.int64))
    c = candidate_lists(np.full(6000, 2), np.zeros(6000, dtype=np.int64), seen, 10, 4, seed=1)
    counts = np.bincount(c.ravel(), minlength=10)
    assert counts[0] == counts[1] == 0 and counts[2] == 6000
    # 3 negatives from the 7 free items: each appears 6000 * 3 / 7 ~ 2571 times
    assert np.all(np.abs(counts[3:] - 6000 * 3 / 7) < 200)
    position = (c == 2).argmax(axis=1)
    assert np.all(np.abs(np.bincount(position, minlength=4) - 1500) < 150)
    with pytest.raises(ValueError, match="unrated"):
        candidate_lists(np.array([2]), np.array([0]), seen, 10, 9, seed=0)


def test_sample_negatives_and_with_candidates(split):
    data = next_item_samples(split, "train")
    d3 = with_candidates(data, split, 20, 3, seed=5)
    d8 = with_candidates(data, split, 20, 8, seed=5)
    np.testing.assert_array_equal(d3.candidates, d8.candidates)  # the lists do not depend on M
    assert d3.negatives.shape == (len(data), 3) and d8.negatives.shape == (len(data), 8)
    for d in (d3, d8):
        assert np.all((d.negatives[:, :, None] == d.candidates[:, None, :]).any(axis=2))
        assert not np.any(d.negatives == d.positive[:, None])
        assert all(len(set(r)) == len(r) for r in d.negatives[:50])
    seen = seen_items(split)
    mask = seen.to_mask(split.n_items, d3.row[:200])
    in_list = np.take_along_axis(mask, d3.candidates[:200], axis=1)
    negatives_seen = in_list & (d3.candidates[:200] != d3.positive[:200, None])
    assert not negatives_seen.any()
    with pytest.raises(ValueError, match="m must"):
        sample_negatives(d3.candidates, d3.positive, 20)
    with pytest.raises(ValueError, match="positive"):
        PreferenceData(data.history[:1], data.user[:1], data.row[:1], data.positive[:1],
                       negatives=data.positive[:1, None])


# ---------------------------------------------------------------- trainer
def test_sdpo_with_one_negative_trains_exactly_like_dpo(split, sft_policy):
    data = with_candidates(next_item_samples(split, "train"), split, 20, 1, seed=0).subset(np.arange(600))
    cfg = TrainConfig(epochs=1, batch_size=64, lr=1e-3, beta=0.5, seed=3)
    a, b = copy.deepcopy(sft_policy), copy.deepcopy(sft_policy)
    log_a = train_preference(a, sft_policy.snapshot(), data, cfg, "dpo")
    log_b = train_preference(b, sft_policy.snapshot(), data, cfg, "sdpo")
    np.testing.assert_allclose([r["loss"] for r in log_a], [r["loss"] for r in log_b], rtol=1e-5)
    for pa, pb in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(pa, pb, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("loss,m,accuracy", [("dpo", 1, 0.7), ("sdpo", 3, 0.45)])
def test_preference_training_separates_chosen_from_rejected(split, sft_policy, loss, m, accuracy):
    data = with_candidates(next_item_samples(split, "train"), split, 20, m, seed=0)
    pol = copy.deepcopy(sft_policy)
    log = train_preference(pol, sft_policy.snapshot(), data, TrainConfig(epochs=2, batch_size=128, lr=1e-2, beta=1.0),
                           loss)
    assert log[0]["reward_chosen"] == pytest.approx(0.0, abs=1e-5)  # policy == reference at the start
    assert log[0]["loss"] == pytest.approx(np.log1p(m), rel=1e-4)  # -log sigma(-log M) = log(1 + M)
    # chance is 1 / (1 + M): the chosen item must beat every rejected one
    assert np.mean([r["reward_accuracy"] for r in log[-5:]]) > accuracy
    assert np.mean([r["loss"] for r in log[-5:]]) < log[0]["loss"] - 0.2


# ------------------------------------------------------------------ SPRec
def test_self_play_negatives_greedy_is_argmax_without_positive_and_history(split, sft_policy):
    data = next_item_samples(split, "train").subset(np.arange(300))
    neg = self_play_negatives(sft_policy, data, "greedy")
    with torch.no_grad():
        s = sft_policy.scores(history_state(data, np.arange(len(data))))
    s[np.arange(len(data)), data.positive] = -np.inf
    s.scatter_(1, torch.as_tensor(data.history), -np.inf)
    np.testing.assert_array_equal(neg[:, 0], s.argmax(1).numpy())
    sampled = self_play_negatives(sft_policy, data, "sample", seed=1)
    assert not np.any(sampled[:, 0] == data.positive)
    assert not np.any((sampled == data.history).any(axis=1))
    assert not np.array_equal(sampled, neg)
    np.testing.assert_array_equal(sampled, self_play_negatives(sft_policy, data, "sample", seed=1))


@pytest.mark.parametrize("mode", ["greedy", "sample"])
def test_sprec_loop(split, sft_policy, mode):
    data = next_item_samples(split, "train")
    pol = copy.deepcopy(sft_policy)
    before = copy.deepcopy(pol)
    cfg = SPRecConfig(iterations=2, negatives=mode, samples_per_iteration=500, keep_negatives=True, seed=0,
                      sft=TrainConfig(epochs=1, batch_size=128, lr=1e-3),
                      dpo=TrainConfig(epochs=1, batch_size=128, lr=1e-3, beta=1.0))
    seen_iters, log = [], []
    records = run_sprec(pol, data, cfg, log=log.append, on_iteration=lambda t, p: seen_iters.append(t) or {"t": t})
    assert seen_iters == [0, 1, 2]
    assert [r["iteration"] for r in records] == [0, 1, 2]
    assert all(r["negatives"] == mode and r["samples"] == 500 for r in records[1:])
    # iteration 1's negatives come from the starting model (pi_0) on the same subset
    sub = data.subset(np.sort(np.random.default_rng(0).choice(len(data), 500, replace=False)))
    expected = self_play_negatives(before, sub, mode, seed=cfg.seed + 1)
    np.testing.assert_array_equal(records[1]["negative_items"], expected)
    # each DPO stage starts from its post-SFT snapshot: zero implicit reward at its first step
    for t in (1, 2):
        first = next(r for r in log if r.get("stage") == f"sprec{t}/dpo")
        assert first["reward_chosen"] == pytest.approx(0.0, abs=1e-5)
        assert first["reward_rejected"] == pytest.approx(0.0, abs=1e-5)
    assert any(not torch.equal(a, b) for a, b in zip(pol.parameters(), before.parameters()))
    with pytest.raises(ValueError, match="negatives"):
        SPRecConfig(negatives="beam")


# -------------------------------------------------------------------- CLI
def test_fcpo_align_cli_writes_a_repeatable_run_folder(tmp_path, capsys):
    import json

    import yaml

    from fcpo.alignment.experiment import config_from_dict
    from fcpo.cli.align import main

    argv = ["--method", "sprec", "--dataset", "synthetic", "--iterations", "1", "--sprec-negatives", "sample",
            "--sft-epochs", "1", "--sft-lr", "0.01", "--pref-epochs", "0.5", "--max-test-users", "50", "--dim", "16",
            "--runs-dir", str(tmp_path), "--name", "run1"]
    assert main(argv) == 0
    folder = tmp_path / "run1"
    assert "run folder" in capsys.readouterr().out
    cfg = yaml.safe_load((folder / "config.yaml").read_text())
    assert cfg["method"] == "sprec" and cfg["sprec_negatives"] == "sample" and cfg["sft"]["lr"] == 0.01
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["method"]["sprec"]["negatives"] == "sample"
    assert [it["iteration"] for it in metrics["method"]["iterations"]] == [0, 1]
    assert metrics["test_users"] == 50 and 0 <= metrics["final"]["ndcg@10"] <= 1
    lines = (folder / "log.jsonl").read_text().splitlines()
    assert any(json.loads(x)["stage"] == "sprec1/dpo" for x in lines)
    assert (folder / "policy.pt").is_file()
    assert not list(folder.glob(".*.tmp"))  # atomic writes leave no temporary files
    again = config_from_dict(cfg)
    assert again.to_dict() == cfg
    with pytest.raises(SystemExit):
        main(["--method", "sdpo", "--negatives", "30", "--dataset", "synthetic"])
