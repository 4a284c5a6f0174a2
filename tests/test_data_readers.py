"""MovieLens readers on hand-written files, and the real data when present."""
from __future__ import annotations

import gzip

import numpy as np
import pytest

from fcpo.data import load_dataset, read_ml1m, read_ml100k


def _write_ml1m(folder, ratings, gz=False):
    folder.mkdir(parents=True, exist_ok=True)
    text = "".join(f"{u}::{i}::{r}::{t}\n" for u, i, r, t in ratings)
    if gz:
        with gzip.open(folder / "ratings.dat.gz", "wt") as fh:
            fh.write(text)
    else:
        (folder / "ratings.dat").write_text(text)
    (folder / "movies.dat").write_bytes("10::Amélie (2001)::Comedy|Romance\n20::Heat (1995)::Action|Crime|Thriller\n"
                                        "30::Unrated (1990)::Drama\n".encode("latin-1"))
    (folder / "users.dat").write_text("7::F::25::3::12345\n9::M::35::7::54321\n")


@pytest.mark.parametrize("gz", [False, True])
def test_ml1m_reader_dense_ids_titles_genres(tmp_path, gz):
    _write_ml1m(tmp_path, [(9, 20, 5, 100), (7, 10, 3, 50), (9, 10, 4, 90)], gz=gz)
    d = read_ml1m(tmp_path)
    # users {7, 9} -> {0, 1}; rated items {10, 20} -> {0, 1} (item 30 is unrated and not in the universe)
    assert d.users.tolist() == [1, 0, 1] and d.items.tolist() == [1, 0, 0]
    assert d.user_raw_ids.tolist() == [7, 9] and d.item_raw_ids.tolist() == [10, 20]
    assert d.item_titles.tolist() == ["Amélie (2001)", "Heat (1995)"]
    assert d.genre_names[:2] == ("Action", "Adventure")
    assert sorted(np.array(d.genre_names)[d.item_genres[1]]) == ["Action", "Crime", "Thriller"]
    assert d.ratings.tolist() == [5.0, 3.0, 4.0] and d.timestamps.tolist() == [100, 50, 90]
    assert d.user_attributes.loc[0, "gender"] == "F" and d.user_attributes.loc[1, "age"] == 35


def test_ml1m_reader_names_file_and_line_on_bad_input(tmp_path):
    _write_ml1m(tmp_path, [(1, 10, 5, 100)])
    (tmp_path / "ratings.dat").write_text("1::10::5::100\n1::20::x::5\n")
    with pytest.raises(ValueError, match=r"ratings.dat.*line 2"):
        read_ml1m(tmp_path)
    (tmp_path / "ratings.dat").write_text("1::10::5::100\n1::20::9::5\n")
    with pytest.raises(ValueError, match=r"ratings.dat, line 2: rating 9"):
        read_ml1m(tmp_path)
    (tmp_path / "ratings.dat").unlink()
    with pytest.raises(FileNotFoundError, match="ratings.dat"):
        read_ml1m(tmp_path)


def test_ml100k_reader(tmp_path):
    (tmp_path / "u.data").write_text("2\t5\t4\t881250949\n1\t3\t1\t881250000\n")
    (tmp_path / "u.genre").write_text("unknown|0\nAction|1\nComedy|2\n\n")
    (tmp_path / "u.item").write_bytes("3|Three (1995)|01-Jan-1995||http://x|0|1|1\n5|Five (1996)|01-Jan-1996||http://y|1|0|0\n".encode("latin-1"))
    (tmp_path / "u.user").write_text("1|24|M|technician|85711\n2|53|F|other|94043\n")
    d = read_ml100k(tmp_path)
    assert d.genre_names == ("unknown", "Action", "Comedy")
    assert d.item_genres.tolist() == [[False, True, True], [True, False, False]]
    assert d.item_titles.tolist() == ["Three (1995)", "Five (1996)"]
    assert d.users.tolist() == [1, 0] and d.items.tolist() == [1, 0]
    assert d.user_attributes.loc[1, "occupation"] == "other"


def test_real_ml100k_counts(ml100k_dir):
    d = read_ml100k(ml100k_dir)
    assert (d.n_users, d.n_items, d.n_ratings) == (943, 1682, 100_000)
    assert np.bincount(d.ratings.astype(int), minlength=6)[1:].tolist() == [6110, 11370, 27145, 34174, 21201]


def test_real_ml1m_matches_paper_table(ml1m_dir):
    d = read_ml1m(ml1m_dir)
    s = d.summary()
    # FCPO paper's data table: 6040 users, 3706 items, 1,000,209 ratings, density 4.468 %
    assert (s["users"], s["items"], s["ratings"]) == (6040, 3706, 1_000_209)
    assert round(s["density_percent"], 3) == 4.468


def test_load_dataset_errors(monkeypatch, tmp_path):
    with pytest.raises(ValueError, match="unknown dataset 'ml-2m'"):
        load_dataset("ml-2m")
    with pytest.raises(FileNotFoundError, match="--data-dir"):
        load_dataset("ml-100k", data_dir=tmp_path)
    monkeypatch.setenv("FCPO_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("FCPO_DATA_DIR", raising=False)
    with pytest.raises(FileNotFoundError) as err:
        load_dataset("ml-1m", download=False)
    msg = str(err.value)
    assert "--data-dir" in msg and "FCPO_DATA_DIR" in msg and "download" in msg


def test_fcpo_data_dir_env(monkeypatch, tmp_path):
    _write_ml1m(tmp_path / "ml-1m", [(1, 10, 5, 100)])
    monkeypatch.setenv("FCPO_DATA_DIR", str(tmp_path))
    assert load_dataset("ml-1m").n_ratings == 1
