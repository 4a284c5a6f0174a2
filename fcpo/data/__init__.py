"""Data: MovieLens readers, download, splits, item groups, embeddings, synthetic data."""
from fcpo.data.dataset import RatingsData
from fcpo.data.download import download_dataset
from fcpo.data.embeddings import Embeddings, MFConfig, load_embeddings, mf_scores, train_mf
from fcpo.data.groups import DynamicGrouping, StaticGrouping, make_grouping, popular_mask
from fcpo.data.movielens import read_ml1m, read_ml100k
from fcpo.data.sources import DATASETS, load_dataset, resolve_data_dir
from fcpo.data.split import SPLITS, EpisodeSplit, Ragged, fcpo_split, leave_one_out_split
from fcpo.data.synthetic import SyntheticConfig, write_synthetic

__all__ = [
    "RatingsData", "DynamicGrouping", "StaticGrouping", "make_grouping", "popular_mask", "read_ml1m", "read_ml100k",
    "DATASETS", "load_dataset", "resolve_data_dir", "SPLITS", "EpisodeSplit", "Ragged", "fcpo_split",
    "leave_one_out_split", "SyntheticConfig", "write_synthetic",
    "download_dataset", "Embeddings", "MFConfig", "load_embeddings", "mf_scores", "train_mf",
]
