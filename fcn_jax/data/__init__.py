"""Data: sources (TFDS, npz, IDX, image folders), size policies and buckets, train/eval loaders.

Importing this package does not import ``tensorflow_datasets`` nor the TFDS builders;
``load_dataset`` imports them on use.
"""

from fcn_jax.data.buckets import (
    BucketSpec,
    assign_buckets,
    auto_buckets,
    padding_efficiency,
    parse_buckets,
    resolve_buckets,
)
from fcn_jax.data.load import load_dataset
from fcn_jax.data.loader import EvalLoader, TrainLoader
from fcn_jax.data.policies import SizePolicy, parse_size_policy
from fcn_jax.data.resize import (
    place_on_canvas,
    resize,
)
from fcn_jax.data.sources import DataError, Dataset, Source, Subset

__all__ = [
    "BucketSpec",
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
    "parse_buckets",
    "parse_size_policy",
    "place_on_canvas",
    "resize",
    "resolve_buckets",
]
