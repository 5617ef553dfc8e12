"""The interface of dataset sources: :class:`Source` (random access to the examples of one
split), :class:`Dataset` (a train and a test source with their metadata), :class:`Subset`,
:class:`Slice`, :class:`DataError`, and :func:`to_float`, the pixel conversion the kinds share.

The kinds live in modules of their own, which import this one: in-memory arrays (``npz:``) in
:mod:`fcn_jax.data.arrays`, IDX files (``idx:``) in :mod:`fcn_jax.data.idx`, image folders
(``folder:``) in :mod:`fcn_jax.data.folder`, TFDS in :mod:`fcn_jax.data.tfds_source`.
:func:`fcn_jax.data.load.load_dataset` opens one from a ``--dataset`` spec.

Every example is ``{"image": float32 (*spatial, C), "label": int}`` plus ``"bbox": int32 (4,)``
``[y0, x0, y1, x1)`` where the dataset has one. uint8 pixels are scaled to [0, 1]; float data is
kept as is.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import Any

import numpy as np

# The prefixed kinds of ``--dataset`` spec; any other spec is a TFDS name.
SOURCE_PREFIXES = ("npz:", "idx:", "folder:", "ts:", "ucr:")
KNOWN_SOURCES = "npz:PATH, idx:DIR, folder:PATH, ts:PATH/NAME, ucr:NAME or a TFDS name"


class DataError(ValueError):
    """Missing, malformed or unprepared data; the message says what and where in one line."""


class Source(abc.ABC):
    """Random access to the examples of one split.

    ``len(src)``; ``src[i]`` -> example dict; ``src.sizes()`` -> ``(N, spatial_dims)`` extents.

    Attributes:
      spatial_dims: 1 or 2.
      in_channels: C.
      has_bbox: whether examples carry ``"bbox"``.
      skipped: unreadable files left out (``skip_corrupt=True``).
    """

    spatial_dims: int
    in_channels: int
    has_bbox: bool = False
    skipped: int = 0
    _sizes: np.ndarray | None = None

    @abc.abstractmethod
    def __len__(self) -> int: ...

    @abc.abstractmethod
    def __getitem__(self, index: int) -> dict[str, Any]: ...

    def get_many(self, indices) -> list[dict[str, Any]]:
        """``[self[i] for i in indices]``; sources with batched reads override it."""
        return [self[int(i)] for i in indices]

    def sizes(self) -> np.ndarray:
        """``(N, spatial_dims)`` int64 spatial extent of every example (computed once)."""
        if self._sizes is None:
            sizes = np.asarray(self._compute_sizes(), np.int64)
            self._sizes = sizes.reshape(len(self), self.spatial_dims)
        return self._sizes

    def common_size(self) -> tuple[int, ...] | None:
        """The one spatial size every example has, or None when sizes differ."""
        sizes = self.sizes()
        return tuple(int(v) for v in sizes[0]) if (sizes == sizes[0]).all() else None

    def _compute_sizes(self):
        return [self[i]["image"].shape[:-1] for i in range(len(self))]


@dataclasses.dataclass(frozen=True)
class Dataset:
    """A train and a test source with their shared metadata; ``class_names`` holds one
    string per class (the indices as strings where the data names none)."""

    name: str
    train: Source
    test: Source
    num_classes: int
    in_channels: int
    spatial_dims: int
    class_names: tuple[str, ...] = ()
    # Real-valued series (ucr:, ts:): never resampled to fit a model, so a series shorter
    # than the model's minimum is an error rather than silently stretched.
    series: bool = False

    def __post_init__(self):
        names = tuple(str(n) for n in self.class_names) or tuple(map(str, range(self.num_classes)))
        if len(names) != self.num_classes:
            raise DataError(f"{self.name}: {len(names)} class names for {self.num_classes} classes")
        object.__setattr__(self, "class_names", names)

    def facts(self) -> dict:
        """What a run records of its data (config.json's ``dataset``)."""
        return {
            "name": self.name,
            "num_classes": self.num_classes,
            "class_names": list(self.class_names),
            "in_channels": self.in_channels,
            "spatial_dims": self.spatial_dims,
            "train_examples": len(self.train),
            "test_examples": len(self.test),
        }


def to_float(image: np.ndarray, where: str) -> np.ndarray:
    """uint8 -> float32 in [0, 1]; float -> float32."""
    if image.dtype == np.uint8:
        return image.astype(np.float32) / 255.0
    if np.issubdtype(image.dtype, np.floating):
        return image.astype(np.float32, copy=False)
    raise DataError(f"{where}: image dtype {image.dtype} is neither uint8 nor float")


class Slice(Source):
    """Examples ``start`` to ``stop`` (exclusive) of a source: a sliced split
    (``--train_split=train[:50000]``, see :mod:`fcn_jax.data.splits`)."""

    def __init__(self, source: Source, start: int, stop: int):
        self.source, self.start, self.stop = source, start, stop
        self.spatial_dims, self.in_channels = source.spatial_dims, source.in_channels
        self.has_bbox, self.skipped = source.has_bbox, source.skipped

    def __len__(self) -> int:
        return self.stop - self.start

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < len(self):
            raise IndexError(index)
        return self.source[self.start + index]

    def get_many(self, indices) -> list[dict[str, Any]]:
        return self.source.get_many([self.start + int(i) for i in indices])

    def sizes(self) -> np.ndarray:
        return self.source.sizes()[self.start : self.stop]


class Subset(Slice):
    """The first ``n`` examples of a source (evaluation on part of a large test split)."""

    def __init__(self, source: Source, n: int):
        super().__init__(source, 0, min(n, len(source)))
