"""MovieLens readers: issue 19's data defects, the CSV releases (ML-20M/25M/32M), and the registry."""
from __future__ import annotations

import gzip
import logging

import numpy as np
import pytest

from fcpo.data import (REGISTRY, DataFormatError, fcpo_split, list_datasets, load_dataset, read_ml1m, read_ml_csv)
from fcpo.data.registry import DatasetEntry, register_dataset

MOVIES = "10::Heat (1995)::Action|Crime\n20::Amélie (2001)::Comedy|Romance\n"


def _ml1m(folder, ratings: str, movies: str | bytes = MOVIES):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "ratings.dat").write_text(ratings)
    if isinstance(movies, str):
        (folder / "movies.dat").write_text(movies, encoding="utf-8")
    else:
        (folder / "movies.dat").write_bytes(movies)
    return folder


def test_fractional_id_is_rejected_not_truncated(tmp_path):
    _ml1m(tmp_path, "1::10::5::100\n2.5::20::4::101\n")
    with pytest.raises(DataFormatError, match=r"ratings.dat, line 2, column 'UserID': id '2.5' is not an integer"):
        read_ml1m(tmp_path)


def test_ids_beyond_2_53_stay_distinct(tmp_path):
    big = 2 ** 53
    _ml1m(tmp_path, f"{big}::10::5::100\n{big + 1}::10::4::101\n")
    d = read_ml1m(tmp_path)
    assert d.n_users == 2 and d.user_raw_ids.tolist() == [big, big + 1]


def test_negative_id_is_rejected(tmp_path):
    _ml1m(tmp_path, "1::10::5::100\n1::-20::4::101\n")
    with pytest.raises(DataFormatError, match=r"ratings.dat, line 2, column 'MovieID': negative id -20"):
        read_ml1m(tmp_path)


@pytest.mark.parametrize("which", ["ratings.dat", "movies.dat"])
def test_empty_files_are_named(tmp_path, which):
    _ml1m(tmp_path, "1::10::5::100\n")
    (tmp_path / which).write_text("\n" if which == "movies.dat" else "")
    with pytest.raises(DataFormatError, match=rf"{which}: the file is empty"):
        read_ml1m(tmp_path)


def test_malformed_line_is_named(tmp_path):
    _ml1m(tmp_path, "1::10::5::100\n1::20::4\n")
    with pytest.raises(DataFormatError, match=r"ratings.dat, line 2: expected 4 '::'-separated fields"):
        read_ml1m(tmp_path)


def test_rating_of_an_unknown_movie_is_kept_with_a_warning(tmp_path, caplog):
    _ml1m(tmp_path, "1::10::5::100\n1::99::4::101\n")
    with caplog.at_level(logging.WARNING):
        d = read_ml1m(tmp_path)
    assert d.item_titles.tolist() == ["Heat (1995)", "<unknown>"] and not d.item_genres[1].any()
    assert "1 item(s) have interactions but no metadata row (first: 99)" in caplog.text


def test_utf8_and_latin1_movie_files_decode(tmp_path):
    _ml1m(tmp_path / "utf8", "1::20::5::100\n")
    assert read_ml1m(tmp_path / "utf8").item_titles.tolist() == ["Amélie (2001)"]
    _ml1m(tmp_path / "latin1", "1::20::5::100\n", MOVIES.encode("latin-1"))
    assert read_ml1m(tmp_path / "latin1").item_titles.tolist() == ["Amélie (2001)"]


def test_corrupt_gzip_names_the_file(tmp_path):
    _ml1m(tmp_path, "1::10::5::100\n")
    good = gzip.compress(b"1::10::5::100\n" * 50)
    (tmp_path / "ratings.dat").unlink()
    (tmp_path / "ratings.dat.gz").write_bytes(good[: len(good) // 2])  # truncated
    with pytest.raises(DataFormatError, match=r"ratings.dat.gz: corrupt or truncated gzip file"):
        read_ml1m(tmp_path)
    (tmp_path / "ratings.dat.gz").write_bytes(b"not gzip at all")
    with pytest.raises(DataFormatError, match=r"ratings.dat.gz: corrupt or truncated gzip file"):
        read_ml1m(tmp_path)


def test_re_rated_movie_is_not_summed_in_the_split(tmp_path, caplog):
    # user 1 rates movie 10 twice (5 then 5, different times) + an exact duplicate row
    rows = "".join(f"1::{m}::5::{t}\n" for t, m in enumerate([10, 20, 30, 40, 50, 60, 70, 80, 90, 10]))
    rows += "1::90::5::8\n"  # exact duplicate of (1, 90, 8): dropped with a warning
    movies = "".join(f"{m}::M{m}::Drama\n" for m in range(10, 100, 10))
    _ml1m(tmp_path, rows, movies)
    with caplog.at_level(logging.WARNING):
        d = read_ml1m(tmp_path)
    assert d.n_ratings == 10 and "dropped 1 duplicate" in caplog.text
    s = fcpo_split(d, n_initial=2, threshold=4)
    both = s.train_ratings + s.test_ratings
    assert s.train_ratings.max() == 5 and s.test_ratings.max() == 5 and both.max() <= 10
    assert (s.train_ratings.data <= 5).all() and (s.test_ratings.data <= 5).all()


# ---------------------------------------------------------------- ML-20M/25M/32M CSV format

def test_ml_csv_reader(tmp_path):
    (tmp_path / "ratings.csv").write_text("userId,movieId,rating,timestamp\n1,2,3.5,1112486027\n1,29,4.0,1112484676\n"
                                          "7,2,0.5,1112484000\n")
    (tmp_path / "movies.csv").write_text('movieId,title,genres\n2,Jumanji (1995),Adventure|Children\'s|Fantasy\n'
                                         '29,"City of Lost Children, The (1995)",Adventure|Drama|IMAX\n'
                                         '30,Nothing (2000),(no genres listed)\n')
    d = read_ml_csv(tmp_path, "ml-20m")
    assert d.user_raw_ids.tolist() == [1, 7] and d.item_raw_ids.tolist() == [2, 29]
    assert d.ratings.tolist() == [3.5, 4.0, 0.5]
    assert d.item_titles.tolist() == ["Jumanji (1995)", "City of Lost Children, The (1995)"]
    assert d.genre_names[:18][0] == "Action" and d.genre_names[18:] == ("IMAX",)
    names = np.array(d.genre_names)
    assert sorted(names[d.item_genres[1]]) == ["Adventure", "Drama", "IMAX"]
    # the registry finds it under a parent folder and caches the parsed result
    (tmp_path / "parent").mkdir()
    (tmp_path / "ratings.csv").rename(tmp_path / "parent" / "ratings.csv")
    (tmp_path / "parent" / "ml-25m").mkdir()
    (tmp_path / "parent" / "ratings.csv").rename(tmp_path / "parent" / "ml-25m" / "ratings.csv")
    assert load_dataset("ml-25m", data_dir=tmp_path / "parent").n_ratings == 3


def test_ml_csv_bad_rating_names_line(tmp_path):
    (tmp_path / "ratings.csv").write_text("userId,movieId,rating,timestamp\n1,2,3.5,1\n1,3,7,2\n")
    with pytest.raises(DataFormatError, match=r"ratings.csv, line 3: rating 7 is outside 0..5"):
        read_ml_csv(tmp_path)


def test_registry_lists_every_release_with_its_download_facts():
    names = list_datasets()
    assert {"ml-100k", "ml-1m", "ml-10m", "ml-20m", "ml-25m", "ml-32m", "synthetic"} <= set(names)
    assert "20,000,263 ratings" in names["ml-20m"]
    for name in ("ml-10m", "ml-20m", "ml-25m", "ml-32m"):
        entry = REGISTRY[name]
        assert entry.url == f"https://files.grouplens.org/datasets/movielens/{name}.zip"
        assert "research" in entry.licence
    assert REGISTRY["ml-10m"].sha256 is None and REGISTRY["ml-32m"].sha256 is None  # not verifiable offline
    assert REGISTRY["ml-10m"].folder_names == ("ml-10M100K",)
    with pytest.raises(ValueError, match="already registered"):
        register_dataset(REGISTRY["ml-1m"])
    with pytest.raises(ValueError, match="64 lower-case hex"):
        register_dataset(DatasetEntry("x", "x", read_ml1m, "ratings.dat", (), sha256="abc"))
