"""TFDS datasets as a source: :class:`TfdsSource` over ``tfds.data_source`` and
:func:`load_tfds`, which builds this package's builders (and ``mnist``, ``fashion_mnist``,
``kmnist`` from IDX files, see :mod:`fcn_jax.data.idx`) on first use and explains how to
prepare any other dataset that is not prepared yet.
"""

from __future__ import annotations

import difflib
import importlib
import operator
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from fcn_jax.data import idx
from fcn_jax.data.sources import KNOWN_SOURCES, DataError, Dataset, Source, to_float
from fcn_jax.data.splits import resolve_split

# This package's builders: name -> module that registers it and defines `prepare(name, dir)`.
OWN_BUILDERS = {
    "procedural_digits": "fcn_jax.data.procedural_digits",
    "mnist1d": "fcn_jax.data.mnist1d_builder",
}


class TfdsSource(Source):
    """A ``tfds.data_source`` split with the image, label and optional bbox features picked."""

    def __init__(self, source, image_key: str, label_key: str, bbox_key: str | None, shape):
        self._source, self._keys = source, (image_key, label_key, bbox_key)
        self.spatial_dims, self.in_channels = len(shape) - 1, int(shape[-1])
        self.has_bbox = bbox_key is not None
        self._static = None if None in shape else tuple(shape[:-1])
        self._batched = hasattr(source, "__getitems__")

    def __len__(self) -> int:
        return len(self._source)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self._convert(self._source[operator.index(index)])

    def get_many(self, indices) -> list[dict[str, Any]]:
        # ArrayRecord reads a batch of records about twice as fast per record.
        return [self._convert(ex) for ex in self._read_many([int(i) for i in indices])]

    def _read_many(self, keys: list[int]) -> list[dict[str, Any]]:
        if self._batched:
            try:
                return self._source.__getitems__(keys)
            except TypeError:
                # tfds.testing.mock_data's `__getitems__` is not bound to its mock source.
                self._batched = False
        return [self._source[k] for k in keys]

    def _convert(self, ex: dict[str, Any]) -> dict[str, Any]:
        image_key, label_key, bbox_key = self._keys
        image = np.asarray(ex[image_key])
        out = {"image": to_float(image, image_key), "label": int(ex[label_key])}
        if bbox_key is not None:
            box = np.asarray(ex[bbox_key])
            if np.issubdtype(box.dtype, np.floating):  # tfds BBoxFeature: normalized floats
                box = np.rint(box * np.tile(image.shape[:2], 2))
            out["bbox"] = box.astype(np.int32)
        return out

    def _compute_sizes(self):
        if self._static is not None:
            return np.broadcast_to(self._static, (len(self), self.spatial_dims))
        key, chunk = self._keys[0], 1024
        return [
            np.shape(ex[key])[:-1]
            for start in range(0, len(self), chunk)
            for ex in self._read_many(list(range(start, min(start + chunk, len(self)))))
        ]


def _tfds_builder(spec: str, data_dir: str | None):
    base, _, config = spec.partition("/")
    if base in OWN_BUILDERS:
        importlib.import_module(OWN_BUILDERS[base])  # registers the builder
    try:
        return tfds.builder(spec, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError:
        names = tfds.list_builders(with_community_datasets=False) + list(OWN_BUILDERS)
        close = difflib.get_close_matches(base, names, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise DataError(f"unknown dataset {spec!r}: not {KNOWN_SOURCES}{hint}") from None
    except ValueError as e:
        configs = [c.name for c in getattr(tfds.builder_cls(base), "BUILDER_CONFIGS", [])]
        if config and config not in configs:
            raise DataError(
                f"dataset {base!r} has no config {config!r}; available: {', '.join(configs)}"
            ) from e
        raise DataError(f"cannot open dataset {spec!r}: {str(e).splitlines()[0]}") from e


def _pick_features(features, spec: str) -> tuple[str, str, str | None]:
    """(image, label, bbox or None) keys: the ``image``-named or Image-typed feature, the
    ``label``-named or first ClassLabel, and a top-level ``bbox`` of shape (4,)."""

    def first(kind):
        return next((k for k, f in features.items() if isinstance(f, kind)), None)

    named = features["image"] if "image" in features else None
    # This package's builders store images as plain tensors named "image".
    image_types = (tfds.features.Image, tfds.features.Tensor)
    image = "image" if isinstance(named, image_types) else first(tfds.features.Image)
    label = first(tfds.features.ClassLabel)
    if "label" in features and isinstance(features["label"], tfds.features.ClassLabel):
        label = "label"
    if image is None or label is None:
        raise DataError(
            f"dataset {spec!r} needs an image feature and a ClassLabel; it has {list(features)}"
        )
    shape = features[image].shape
    if len(shape) not in (2, 3) or shape[-1] is None:
        raise DataError(f"dataset {spec!r}: image feature shape {shape} is not (*spatial, C)")
    bbox = "bbox" if "bbox" in features and tuple(features["bbox"].shape) == (4,) else None
    return image, label, bbox


def _prepare_hint(spec: str, root: str) -> str:
    code = (
        f'import tensorflow_datasets as tfds; tfds.builder("{spec}", data_dir="{root}", '
        'file_format="array_record").download_and_prepare()'
    )
    return f"`pip install tensorflow && python -c '{code}'`"


def load_tfds(
    spec: str,
    data_dir: str | None = None,
    train_split: str | None = None,
    test_split: str | None = None,
) -> Dataset:
    """Dataset from TFDS: this package's builders are built on first use, and so are ``mnist``,
    ``fashion_mnist`` and ``kmnist`` where their IDX files are found in ``data_dir`` (see
    :func:`fcn_jax.data.idx.prepare_tfds`); other datasets must already be prepared as
    ArrayRecord in ``data_dir`` (preparing needs network and TensorFlow). A run trains on
    ``train_split`` (default ``train``) and tests on ``test_split`` (default ``test``, or
    ``validation`` where there is no ``test``), each checked by
    :func:`fcn_jax.data.splits.resolve_split` and then given to TFDS, which slices it."""
    builder = _tfds_builder(spec, data_dir)
    base = spec.partition("/")[0]
    if base in OWN_BUILDERS:
        importlib.import_module(OWN_BUILDERS[base]).prepare(spec, data_dir)
    if builder.name in idx.TFDS_NAMES and not builder.is_prepared():
        if idx.prepare_tfds(builder.name, data_dir):
            builder = _tfds_builder(spec, data_dir)  # sees the splits just written
    features = builder.info.features
    image_key, label_key, bbox_key = _pick_features(features, spec)
    split_texts = _split_texts(builder, train_split, test_split)
    root = data_dir or tfds.core.constants.DATA_DIR
    try:
        raw = [
            tfds.data_source(spec, split=s, data_dir=data_dir, download=False) for s in split_texts
        ]
    except Exception as e:
        if not builder.is_prepared():
            raise DataError(
                f"dataset {spec!r} is not prepared in {root}; preparing it needs network access "
                f"and TensorFlow: run {_prepare_hint(spec, root)} on a machine with network, "
                f"then copy {root} here{idx.tfds_hint(builder.name, root)}"
            ) from e
        if builder.info.file_format not in tfds.core.FileFormat.with_random_access():
            raise DataError(
                f"dataset {spec!r} in {root} is stored as {builder.info.file_format.value}, "
                f"which has no random access; delete {builder.data_dir} and re-prepare it as "
                f"ArrayRecord with {_prepare_hint(spec, root)}"
            ) from e
        raise DataError(
            f"cannot read dataset {spec!r} from {root}: {str(e).splitlines()[0]}"
        ) from e
    shape = features[image_key].shape
    train, test = (TfdsSource(r, image_key, label_key, bbox_key, shape) for r in raw)
    name = builder.name + (f"/{builder.builder_config.name}" if builder.builder_config else "")
    return Dataset(
        name=name,
        train=train,
        test=test,
        num_classes=int(features[label_key].num_classes),
        in_channels=train.in_channels,
        spatial_dims=train.spatial_dims,
        class_names=tuple(features[label_key].names),
    )


def _split_texts(builder, train_split: str | None, test_split: str | None) -> tuple[str, str]:
    """The TFDS split strings to read: the flags' (checked against the prepared splits' sizes),
    else ``train`` and ``test`` (``validation`` where there is no ``test``). An unprepared
    dataset has no split sizes yet: its splits are checked once it is prepared."""
    lengths = {name: info.num_examples for name, info in builder.info.splits.items()}
    default_test = "validation" if "test" not in lengths and "validation" in lengths else "test"
    texts = []
    for flag, text, default in (
        ("train_split", train_split, "train"),
        ("test_split", test_split, default_test),
    ):
        if text is not None and lengths:
            resolve_split(text, flag, lengths)
        texts.append(default if text is None else text)
    return texts[0], texts[1]
