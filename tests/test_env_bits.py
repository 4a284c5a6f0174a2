"""fcpo.envs.bits.PackedBoolMatrix against a dense bool matrix (hypothesis), and the env using it."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fcpo.envs.bits import PackedBoolMatrix


@settings(max_examples=60, deadline=None)
@given(rows=st.integers(1, 6), cols=st.integers(1, 37), seed=st.integers(0, 2 ** 31 - 1), ops=st.integers(1, 12))
def test_packed_matrix_equals_dense_reference(rows, cols, seed, ops):
    rng = np.random.default_rng(seed)
    packed, dense = PackedBoolMatrix(rows, cols), np.zeros((rows, cols), dtype=bool)
    for _ in range(ops):
        kind = rng.integers(4)
        r = rng.integers(0, rows, (rows, 1))
        c = rng.integers(0, cols, (rows, 3))  # repeats and shared bytes included
        if kind == 0:
            packed.set(r, c)
            dense[r, c] = True
        elif kind == 1:
            packed.set(r, c, False)
            dense[r, c] = False
        elif kind == 2:
            which = np.unique(rng.integers(0, rows, 2))
            packed.clear_rows(which)
            dense[which] = False
        else:
            lengths = rng.integers(0, 4, len(r))
            flat = rng.integers(0, cols, lengths.sum())
            packed.set_ragged(r.ravel(), lengths, flat)
            dense[np.repeat(r.ravel(), lengths), flat] = True
        np.testing.assert_array_equal(packed.dense(), dense)
        np.testing.assert_array_equal(packed.get(r, c), dense[r, c])
    np.testing.assert_array_equal(packed[0], dense[0])
    np.testing.assert_array_equal(packed[np.array([rows - 1, 0])], dense[[rows - 1, 0]])
    np.testing.assert_array_equal(packed.row_counts(), dense.sum(axis=1))
    assert packed.nbytes == rows * ((cols + 7) // 8)


def test_out_of_range_columns_are_refused():
    m = PackedBoolMatrix(2, 10)
    with pytest.raises(IndexError, match=r"\[0, 10\)"):
        m.set(np.array([0]), np.array([10]))
    with pytest.raises(IndexError):
        m.get(np.array([0]), np.array([-1]))


def test_env_without_dense_info_mask_steps_identically():
    """``action_mask_in_info=False`` drops only the info key; observations, rewards and costs are unchanged."""
    from fcpo.envs import EnvSpec

    spec = EnvSpec(kwargs={"dataset": "synthetic", "slate_size": 4, "horizon": 3})
    a = spec.make_vector(4)
    b = spec.make_vector(4, action_mask_in_info=False)
    _, info_a = a.reset(seed=1)
    _, info_b = b.reset(seed=1)
    assert "action_mask" in info_a and "action_mask" not in info_b
    rng = np.random.default_rng(0)
    for _ in range(3):
        mask = a.item_mask()
        np.testing.assert_array_equal(mask, b.item_mask())
        np.testing.assert_array_equal(info_a["action_mask"], mask)
        keys = np.where(mask, rng.random(mask.shape), -1.0)
        slates = np.argsort(-keys, axis=1)[:, :4]
        out_a, out_b = a.step(slates), b.step(slates)
        for x, y in zip(out_a[:4], out_b[:4]):
            np.testing.assert_array_equal(x, y)
        info_a = out_a[4]
    with pytest.raises(ValueError, match="action_mask_in_info"):
        spec.make_vector(2, action_mask_in_info="no")
