"""Data: any interaction table, MovieLens readers, the data set registry, download, caches, splits, groups,
embeddings, synthetic data."""
from fcpo.data.cache import cached_split
from fcpo.data.columns import ColumnMap, parse_columns
from fcpo.data.dataset import RatingsData
from fcpo.data.download import download_dataset
from fcpo.data.embeddings import Embeddings, MFConfig, load_embeddings, mf_scores, train_mf
from fcpo.data.fileio import DataFormatError
from fcpo.data.groups import DynamicGrouping, StaticGrouping, make_grouping, popular_mask
from fcpo.data.movielens import read_ml1m, read_ml100k, read_ml_csv
from fcpo.data.recbole import load_recbole
from fcpo.data.registry import REGISTRY, DatasetEntry, list_datasets, register_dataset
from fcpo.data.sources import DATASETS, is_file_source, load_dataset, resolve_data_dir
from fcpo.data.split import SPLITS, EpisodeSplit, Ragged, fcpo_split, leave_one_out_split, split_dataset
from fcpo.data.synthetic import SyntheticConfig, write_synthetic, write_synthetic_table
from fcpo.data.table import load_table, read_item_metadata

__all__ = [
    "RatingsData", "DynamicGrouping", "StaticGrouping", "make_grouping", "popular_mask", "read_ml1m", "read_ml100k",
    "read_ml_csv", "DATASETS", "load_dataset", "resolve_data_dir", "is_file_source", "SPLITS", "EpisodeSplit",
    "Ragged", "fcpo_split", "leave_one_out_split", "split_dataset", "SyntheticConfig", "write_synthetic",
    "write_synthetic_table", "download_dataset", "Embeddings", "MFConfig", "load_embeddings", "mf_scores", "train_mf",
    "ColumnMap", "parse_columns", "DataFormatError", "load_table", "read_item_metadata", "load_recbole",
    "REGISTRY", "DatasetEntry", "list_datasets", "register_dataset", "cached_split",
]
