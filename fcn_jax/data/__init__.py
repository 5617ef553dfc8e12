"""Data: sources (TFDS, npz, image folders), size policies and buckets, train/eval loaders.

Importing this package does not import the TFDS builders; ``load_dataset`` imports them on use.
"""

from fcn_jax.data.loader import EvalLoader, TrainLoader
from fcn_jax.data.policies import (
    SizePolicy,
    assign_buckets,
    auto_buckets,
    padding_efficiency,
    parse_size_policy,
    place_on_canvas,
    resize,
    resolve_buckets,
)
from fcn_jax.data.sources import DataError, Dataset, Source, Subset, load_dataset

__all__ = [
    "DataError",
    "Dataset",
    "EvalLoader",
    "SizePolicy",
    "Source",
    "Subset",
    "TrainLoader",
    "assign_buckets",
    "auto_buckets",
    "load_dataset",
    "padding_efficiency",
    "parse_size_policy",
    "place_on_canvas",
    "resize",
    "resolve_buckets",
]
