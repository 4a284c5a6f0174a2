"""Bring-your-own interactions: CSV/TSV/Parquet/DataFrame tables, RecBole atomic files, data cards, implicit logs."""
from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from fcpo.data import (ColumnMap, DataFormatError, MFConfig, RatingsData, fcpo_split, leave_one_out_split,
                       load_dataset, load_recbole, load_table, parse_columns, split_dataset, train_mf)
from fcpo.data.split import latest_rating_matrix

AMAZON = """reviewerID,asin,overall,reviewTime,summary
A1,B0001,5.0,2014-01-02,"great, really"
A1,B0002,4.0,2014-01-03,ok
A2,B0001,3.0,2014-02-01T10:00:00,meh
A2,B0003,5.0,2014-02-02,good
A1,B0002,4.0,2014-01-03,duplicate of line 3
"""
AMAZON_COLUMNS = "user=reviewerID,item=asin,rating=overall,timestamp=reviewTime"


def _amazon_log(n_users=12, n_items=30, per_user=12, seed=0) -> str:
    """A larger Amazon-style log: string ids, ISO dates, ratings 1..5, enough positives for a split."""
    rng = np.random.default_rng(seed)
    rows = ["reviewerID,asin,overall,reviewTime"]
    for u in range(n_users):
        for k, i in enumerate(rng.permutation(n_items)[:per_user]):
            rows.append(f"U{u:03d},ASIN{i:04d},{int(rng.integers(3, 6))}.0,2015-03-{k + 1:02d}")
    return "\n".join(rows) + "\n"


# ---------------------------------------------------------------- parse_columns

def test_parse_columns_text_and_dict():
    assert parse_columns("user=reviewerID, item=asin,rating=overall,timestamp=unixReviewTime") == ColumnMap(
        "reviewerID", "asin", "overall", "unixReviewTime")
    assert parse_columns({"user": "u", "item": "i"}) == ColumnMap("u", "i")
    assert parse_columns(None) is None
    assert ColumnMap("u", "i", "r").to_text() == "user=u,item=i,rating=r"


@pytest.mark.parametrize("text, message", [
    ("user=a,item", r"--columns 'user=a,item': 'item' is not ROLE=COLUMN"),
    ("user=a,thing=b,item=c", r"--columns .*unknown role 'thing'"),
    ("user=a,user=b,item=c", r"role 'user' is given twice"),
    ("user=a", r"--columns 'user=a': missing required role\(s\) item"),
    ("user=,item=b", r"role 'user' has an empty column name"),
])
def test_parse_columns_errors_name_the_flag_text(text, message):
    with pytest.raises(ValueError, match=message):
        parse_columns(text)


# ---------------------------------------------------------------- good inputs

def test_amazon_style_csv_string_ids_iso_dates(tmp_path, caplog):
    path = tmp_path / "reviews.csv"
    path.write_text(AMAZON)
    with caplog.at_level(logging.WARNING):
        d = load_table(path, AMAZON_COLUMNS, cache=False)
    # the exact duplicate (A1, B0002, 2014-01-03) on line 6 is dropped, keeping the last row (line 6)
    assert "dropped 1 duplicate (user, item, timestamp) row(s), keeping the last" in caplog.text
    assert d.n_ratings == 4 and not d.implicit
    assert d.user_raw_ids.tolist() == ["A1", "A2"] and d.item_raw_ids.tolist() == ["B0001", "B0002", "B0003"]
    assert d.users.tolist() == [0, 1, 1, 0] and d.items.tolist() == [0, 0, 2, 1]  # file order, line 3 removed
    assert d.ratings.tolist() == [5.0, 3.0, 5.0, 4.0]
    # 2014-01-02 = 1388620800, 2014-02-01T10:00 = 1391248800 (UTC)
    assert d.timestamps.tolist() == [1388620800, 1391248800, 1391299200, 1388707200]
    assert d.genre_names == () and d.item_genres.shape == (3, 0)
    assert d.item_titles.tolist() == ["<unknown>"] * 3


def test_amazon_log_loads_splits_and_embeds(tmp_path):
    path = tmp_path / "reviews.csv"
    path.write_text(_amazon_log())
    d = load_dataset(path, columns=AMAZON_COLUMNS)
    assert d.n_users == 12 and d.n_items <= 30 and d.n_ratings == 144
    s = split_dataset(d, "fcpo", n_initial=3, threshold=4.0)
    assert s.n_episode_users > 0
    # every kept user's partition is its positives in time order
    r, u = 0, s.user_ids[0]
    mine = d.users == u
    order = np.lexsort((d.items[mine], d.timestamps[mine]))
    pos = d.items[mine][order][d.ratings[mine][order] >= 4]
    assert np.concatenate([s.train_initial[r], s.train_targets.row(r), s.test_targets.row(r)]).tolist() == pos.tolist()
    emb = train_mf(s, MFConfig(dim=4, epochs=2, batch_size=64), progress=False)
    assert emb.user.shape == (12, 4) and emb.item.shape == (d.n_items, 4) and np.isfinite(emb.item).all()


def test_item_metadata_titles_and_categories(tmp_path, caplog):
    (tmp_path / "r.csv").write_text(AMAZON)
    (tmp_path / "items.csv").write_text("asin,title,categories\nB0001,Book One,Fiction|Drama\nB0003,Book Three,\n")
    with caplog.at_level(logging.WARNING):
        d = load_table(tmp_path / "r.csv", AMAZON_COLUMNS, cache=False,
                       item_metadata={"path": tmp_path / "items.csv",
                                      "columns": {"item": "asin", "title": "title", "genres": "categories"}})
    assert d.item_titles.tolist() == ["Book One", "<unknown>", "Book Three"]
    assert d.genre_names == ("Drama", "Fiction") and d.item_genres.tolist() == [[True, True], [False, False],
                                                                                [False, False]]
    assert "1 item(s) have interactions but no metadata row (first: 'B0002')" in caplog.text


def test_implicit_feedback_log(tmp_path):
    rows = ["user\titem\tts"] + [f"{u}\t{i}\t{10 * k}" for u in range(3) for k, i in enumerate(range(u, u + 9))]
    (tmp_path / "clicks.tsv").write_text("\n".join(rows) + "\n")
    d = load_dataset(tmp_path / "clicks.tsv", columns="user=user,item=item,timestamp=ts")
    assert d.implicit and d.positive_threshold == 1.0 and (d.ratings == 1.0).all()
    assert d.user_raw_ids.dtype == np.int64 and d.user_raw_ids.tolist() == [0, 1, 2]
    s = fcpo_split(d, n_initial=3)  # threshold from the data: every interaction is a positive
    assert s.threshold == 1.0 and s.n_episode_users == 3
    assert s.train_initial[0].tolist() == [0, 1, 2] and s.test_targets.row(0).tolist() == [8]  # round(0.2 * 6) = 1
    assert leave_one_out_split(d, n_initial=3).test_targets.row(2).tolist() == [10]
    with pytest.raises(ValueError, match=r"implicit feedback.*threshold 4.0 would leave no positives"):
        fcpo_split(d, n_initial=3, threshold=4.0)


def test_no_timestamp_means_file_order(tmp_path):
    (tmp_path / "x.csv").write_text("u,i\n1,5\n1,3\n2,5\n")
    d = load_table(tmp_path / "x.csv", "user=u,item=i", cache=False)
    assert d.timestamps.tolist() == [0, 1, 2] and d.implicit


def test_recbole_inter_and_item(tmp_path):
    inter = ["user_id:token\titem_id:token\trating:float\ttimestamp:float"]
    inter += [f"{u}\t{100 + (u * 3 + k) % 11}\t{4 + (k % 2)}\t{1000 + k}" for u in range(1, 5) for k in range(9)]
    (tmp_path / "ml.inter").write_text("\n".join(inter) + "\n")
    (tmp_path / "ml.item").write_text("item_id:token\tmovie_title:token_seq\trelease_year:token\tgenre:token_seq\n"
                                      "100\tToy Story\t1995\tAnimation Comedy\n101\tHeat\t1995\tAction Crime\n")
    d = load_dataset(tmp_path / "ml.inter")
    assert d.n_users == 4 and d.n_ratings == 36 and d.user_raw_ids.tolist() == [1, 2, 3, 4]
    assert d.item_titles[0] == "Toy Story" and d.item_titles[1] == "Heat" and d.item_titles[2] == "<unknown>"
    assert d.genre_names == ("Action", "Animation", "Comedy", "Crime")
    assert d.item_genres[0].tolist() == [False, True, True, False]
    s = split_dataset(d, "leave-one-out", n_initial=2)
    assert s.n_episode_users == 4
    emb = train_mf(s, MFConfig(dim=3, epochs=1), progress=False)
    assert emb.item.shape == (d.n_items, 3)
    assert load_recbole(tmp_path / "ml.inter", cache=False).n_ratings == 36


def test_parquet_and_dataframe_give_the_same_data(tmp_path):
    pytest.importorskip("pyarrow")
    frame = pd.DataFrame({"u": ["x", "y", "x", "z"], "i": [10, 20, 30, 10], "r": [5, 4, 3, 2],
                          "t": pd.to_datetime(["2020-01-01", "2020-01-02", "2020-01-03", "2020-01-04"])})
    frame.to_parquet(tmp_path / "log.parquet")
    a = load_dataset(tmp_path / "log.parquet", columns={"user": "u", "item": "i", "rating": "r", "timestamp": "t"})
    b = load_table(frame, {"user": "u", "item": "i", "rating": "r", "timestamp": "t"})
    for field in ("users", "items", "ratings", "timestamps", "user_raw_ids", "item_raw_ids"):
        assert np.array_equal(getattr(a, field), getattr(b, field)), field
    assert a.item_raw_ids.tolist() == [10, 20, 30] and a.timestamps[1] - a.timestamps[0] == 86400


def test_data_card(tmp_path):
    (tmp_path / "r.csv").write_text(AMAZON)
    (tmp_path / "card.yaml").write_text("name: books\npath: r.csv\ncolumns: {user: reviewerID, item: asin, "
                                        "rating: overall, timestamp: reviewTime}\nthreshold: 3.5\n")
    d = load_dataset(tmp_path / "card.yaml")
    assert d.name == "books" and d.positive_threshold == 3.5 and d.n_ratings == 4
    assert fcpo_split(d, n_initial=1).threshold == 3.5
    (tmp_path / "bad.yaml").write_text("path: r.csv\ncolumns: user=reviewerID,item=asin\ncolour: red\n")
    with pytest.raises(DataFormatError, match=r"bad.yaml: unknown key\(s\) colour"):
        load_dataset(tmp_path / "bad.yaml")


def test_ids_are_exact_integers_beyond_2_53(tmp_path):
    big = 2 ** 53
    (tmp_path / "x.csv").write_text(f"u,i,r\n{big},1,5\n{big + 1},1,4\n{2 ** 63 - 1},2,3\n")
    d = load_table(tmp_path / "x.csv", "user=u,item=i,rating=r", cache=False)
    assert d.n_users == 3 and d.user_raw_ids.tolist() == [big, big + 1, 2 ** 63 - 1]


# ---------------------------------------------------------------- bad inputs

def _csv(tmp_path, text, name="log.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize("text, columns, message", [
    ("u,i,r\n1,2,5\n", "user=u,item=item,rating=r",
     r"log.csv: column 'item' \(mapped to item\) is not in the table; columns are 'u', 'i', 'r'"),
    ("u,i,r\n1,2,5\n,3,4\n", "user=u,item=i,rating=r", r"log.csv, line 3, column 'u': empty id"),
    ("u,i,r\n1,2,5\n1,3,great\n", "user=u,item=i,rating=r", r"log.csv, line 3, column 'r': rating 'great' is not a number"),
    ("u,i,r\n1,2,5\n1,3,nan\n", "user=u,item=i,rating=r", r"log.csv, line 3, column 'r': rating nan is not a finite"),
    ("u,i,t\n1,2,2020-01-01\n1,3,yesterday\n", "user=u,item=i,timestamp=t",
     r"log.csv, line 3, column 't': timestamp 'yesterday' is neither a number"),
    ("", "user=u,item=i", r"log.csv: the file is empty"),
    ("u,i,r\n", "user=u,item=i,rating=r", r"log.csv: no interactions \(the table has a header but no rows\)"),
    ("u,i\n1,2\n2.5,3\n", "user=u,item=i", None),  # generic tables: '2.5' is a string id, not user 2
])
def test_bad_tables_name_file_column_and_line(tmp_path, text, columns, message):
    path = _csv(tmp_path, text)
    if message is None:
        d = load_table(path, columns, cache=False)
        assert d.user_raw_ids.tolist() == ["1", "2.5"]
        with pytest.raises(DataFormatError, match=r"log.csv, line 3, column 'u': id '2.5' is not an integer"):
            load_table(path, columns, cache=False, integer_ids=True)
        return
    with pytest.raises(DataFormatError, match=message):
        load_table(path, columns, cache=False)


def test_duplicates_error_policy_names_the_line(tmp_path):
    path = _csv(tmp_path, AMAZON)
    with pytest.raises(DataFormatError, match=r"log.csv, line 3: duplicate \(user, item, timestamp\)"):
        load_table(path, AMAZON_COLUMNS, cache=False, duplicates="error")


def test_dataframe_errors_name_the_row_label():
    frame = pd.DataFrame({"u": [1, 2, None], "i": [1, 2, 3]}, index=[10, 11, 12])
    with pytest.raises(DataFormatError, match=r"DataFrame, row 12, column 'u': empty id"):
        load_table(frame, "user=u,item=i")
    frame = pd.DataFrame({"u": [1.0, 2.5], "i": [1, 2]})
    with pytest.raises(DataFormatError, match=r"DataFrame, row 1, column 'u': id 2.5 is not an exact integer"):
        load_table(frame, "user=u,item=i")


def test_no_user_has_enough_positives_is_a_clear_error(tmp_path):
    path = _csv(tmp_path, "u,i,r\n1,1,5\n1,2,5\n2,1,2\n")
    d = load_table(path, "user=u,item=i,rating=r", cache=False)
    with pytest.raises(ValueError, match=r"log.csv\): no user has enough positives .*n_initial=5 .*rating >= 4.0; "
                                         r"the most any user has is 2"):
        split_dataset(d)


def test_load_dataset_path_errors(tmp_path):
    path = _csv(tmp_path, "u,i\n1,2\n")
    with pytest.raises(ValueError, match=r"--columns is required for .csv files"):
        load_dataset(path)
    with pytest.raises(FileNotFoundError, match=r"nope.csv does not exist"):
        load_dataset(tmp_path / "nope.csv", columns="user=u,item=i")
    assert load_dataset("log.csv", data_dir=tmp_path, columns="user=u,item=i").n_ratings == 1
    with pytest.raises(ValueError, match=r"unknown dataset 'ml-2m'.*\.csv"):
        load_dataset("ml-2m")


# ---------------------------------------------------------------- rating matrices never sum

def test_repeated_pairs_keep_the_latest_rating_never_a_sum():
    # user 0 rates item 1 three times: 5 at t=3, 5 at t=1, 2 at t=2 -> latest (t=3) is 5, not 12
    d = RatingsData("t", np.array([0, 0, 0, 0]), np.array([1, 1, 1, 0]), np.array([5, 5, 2, 4], np.float32),
                    np.array([3, 1, 2, 0]), np.arange(1), np.arange(2), np.array(["a", "b"], object),
                    np.zeros((2, 0), bool), (), pd.DataFrame(index=range(1)))
    m = latest_rating_matrix(d, np.ones(4, bool))
    assert m[0, 1] == 5 and m[0, 0] == 4 and m.nnz == 2 and m.max() <= 5
    m = latest_rating_matrix(d, np.array([False, True, True, True]))
    assert m[0, 1] == 2  # latest of t=1 (5) and t=2 (2)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 4), st.integers(1, 5), st.integers(0, 6)),
                min_size=1, max_size=40))
def test_latest_rating_matrix_matches_brute_force(rows):
    u, i, r, t = (np.array(x) for x in zip(*rows))
    d = RatingsData("t", u, i, r.astype(np.float32), t, np.arange(4), np.arange(5), np.array(["x"] * 5, object),
                    np.zeros((5, 0), bool), (), pd.DataFrame(index=range(4)))
    expected = np.zeros((4, 5))
    best = {}
    for row, (uu, ii, rr, tt) in enumerate(rows):
        if (uu, ii) not in best or (tt, row) >= best[(uu, ii)][0]:
            best[(uu, ii)] = ((tt, row), rr)
    for (uu, ii), (_, rr) in best.items():
        expected[uu, ii] = rr
    got = latest_rating_matrix(d, np.ones(len(rows), bool))
    assert isinstance(got, sp.csr_matrix) and np.array_equal(got.toarray(), expected)


def test_source_fingerprint_follows_file_content_and_options(tmp_path):
    from fcpo.data.sources import source_fingerprint

    path = _csv(tmp_path, "u,i\n1,2\n")
    a = source_fingerprint(path, columns="user=u,item=i")
    assert source_fingerprint(path, columns={"user": "u", "item": "i"}) == a
    assert source_fingerprint(path, columns="user=i,item=u") != a
    path.write_text("u,i\n1,3\n")
    assert source_fingerprint(path, columns="user=u,item=i") != a
    assert source_fingerprint("ml-1m") == source_fingerprint("ml-1m") != source_fingerprint("ml-100k")


def test_gzipped_table_and_corrupt_gzip(tmp_path):
    import gzip

    (tmp_path / "r.csv.gz").write_bytes(gzip.compress(AMAZON.encode()))
    assert load_dataset(tmp_path / "r.csv.gz", columns=AMAZON_COLUMNS).n_ratings == 4
    (tmp_path / "bad.csv.gz").write_bytes(gzip.compress(AMAZON.encode())[:40])
    with pytest.raises(DataFormatError, match=r"bad.csv.gz: corrupt or truncated gzip file"):
        load_dataset(tmp_path / "bad.csv.gz", columns=AMAZON_COLUMNS)


def test_registered_names_take_no_columns():
    with pytest.raises(ValueError, match="columns/table options apply to data files"):
        load_dataset("ml-1m", columns="user=a,item=b")


def test_leading_zero_ids_stay_distinct_strings(tmp_path):
    path = _csv(tmp_path, "u,i\n007,1\n7,1\n+7,2\n")
    d = load_table(path, "user=u,item=i", cache=False)
    assert d.user_raw_ids.tolist() == ["+7", "007", "7"] and d.n_users == 3
    assert load_table(path, "user=u,item=i", cache=False, integer_ids=True).user_raw_ids.tolist() == [7]


def test_csv_without_pyarrow_gives_the_same_data(tmp_path, monkeypatch):
    import sys

    path = tmp_path / "reviews.csv"
    path.write_text(_amazon_log(n_users=5))
    with_arrow = load_table(path, AMAZON_COLUMNS, cache=False)
    for mod in ("pyarrow", "pyarrow.csv", "pyarrow.parquet"):
        monkeypatch.setitem(sys.modules, mod, None)  # import pyarrow -> ImportError: the pandas path
    without = load_table(path, AMAZON_COLUMNS, cache=False)
    for field in ("users", "items", "ratings", "timestamps", "user_raw_ids", "item_raw_ids"):
        assert np.array_equal(getattr(with_arrow, field), getattr(without, field)), field
    bad = _csv(tmp_path, "u,i,r\n1,2,5\n1,3,great\n")
    with pytest.raises(DataFormatError, match=r"log.csv, line 3, column 'r': rating 'great' is not a number"):
        load_table(bad, "user=u,item=i,rating=r", cache=False)


def test_metadata_with_duplicate_ids_uses_the_first_row(tmp_path):
    (tmp_path / "r.csv").write_text("u,i\n1,7\n1,8\n")
    (tmp_path / "m.csv").write_text("item,title\n8,Eight\n7,Seven\n8,Other eight\n")
    d = load_table(tmp_path / "r.csv", "user=u,item=i", item_metadata=tmp_path / "m.csv", cache=False)
    assert d.item_titles.tolist() == ["Seven", "Eight"]


def test_dataframe_with_nullable_and_categorical_columns():
    frame = pd.DataFrame({"u": pd.array([3, 1, 3], dtype="Int64"), "i": pd.Categorical(["b", "a", "a"]),
                          "r": [4.0, 5.0, 3.0]})
    d = load_table(frame, "user=u,item=i,rating=r")
    assert d.user_raw_ids.tolist() == [1, 3] and d.item_raw_ids.tolist() == ["a", "b"]
    assert d.users.tolist() == [1, 0, 1] and d.items.tolist() == [1, 0, 0]
