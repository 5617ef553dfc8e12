"""Datasets as random-access sources of examples, from TFDS, ``.npz`` files or image folders.

``load_dataset(spec)`` accepts:

* ``procedural_digits[/CONFIG]``, ``mnist1d[/CONFIG]``: this package's TFDS builders, built on
  first use in ``data_dir``.
* ``npz:PATH``: arrays ``train_images``, ``train_labels``, ``test_images``, ``test_labels``
  (see :func:`load_npz`).
* ``idx:DIR`` (or ``idx:DIR/PREFIX``): the four MNIST-style IDX files, plain or gzipped (see
  :func:`fcn_jax.data.idx.load_idx`).
* ``folder:PATH``: one subfolder of PNG/JPEG files per class (see :func:`load_folder`).
* any other TFDS name (``mnist``, ``cifar10``, ``imagenette/160px``...), read with
  ``tfds.data_source`` from an ArrayRecord copy already prepared in ``data_dir``; ``mnist``,
  ``fashion_mnist`` and ``kmnist`` are built there from their IDX files when those are found in
  ``data_dir`` (see :func:`fcn_jax.data.idx.prepare_tfds`).

Every example is ``{"image": float32 (*spatial, C), "label": int}`` plus ``"bbox": int32 (4,)``
``[y0, x0, y1, x1)`` where the dataset has one. uint8 pixels are scaled to [0, 1]; float data is
kept as is.
"""

from __future__ import annotations

import abc
import concurrent.futures
import dataclasses
import difflib
import hashlib
import importlib
import logging
import operator
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

log = logging.getLogger(__name__)

# This package's builders: name -> module that registers it and defines `prepare(name, dir)`.
OWN_BUILDERS = {
    "procedural_digits": "fcn_jax.data.procedural_digits",
    "mnist1d": "fcn_jax.data.mnist1d_builder",
}
SOURCE_PREFIXES = ("npz:", "idx:", "folder:")
_KNOWN_SOURCES = ", ".join(p + "PATH" for p in SOURCE_PREFIXES) + " or a TFDS name"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
FOLDER_TEST_FRACTION = 0.2


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


def load_dataset(
    spec: str,
    data_dir: str | None = None,
    *,
    skip_corrupt: bool = False,
    pixel_range: tuple[float, float] = (0.0, 1.0),
) -> Dataset:
    """Open the dataset named by ``spec`` (see the module docstring).

    Args:
      spec: ``npz:PATH``, ``idx:DIR[/PREFIX]``, ``folder:PATH`` or a TFDS name with optional
        ``/config``.
      data_dir: TFDS data directory (default: TFDS's own default).
      skip_corrupt: folder datasets: leave out unreadable image files (counted in
        ``Source.skipped``, and logged) instead of raising.
      pixel_range: npz and idx datasets: the range float pixel values must lie in.
    Raises:
      DataError: with a one-line message naming the file, key or dataset at fault.
    """
    prefix, colon, path = spec.partition(":")
    if not colon or re.fullmatch(r"[\d*]+(\.[\d*]+)*", path):  # none, or a TFDS version
        return load_tfds(spec, data_dir)
    if prefix == "npz":
        return load_npz(path, pixel_range)
    if prefix == "idx":
        from fcn_jax.data.idx import load_idx  # idx imports this module

        return load_idx(path, pixel_range)
    if prefix == "folder":
        return load_folder(path, skip_corrupt=skip_corrupt)
    raise DataError(
        f"--dataset={spec}: unknown source prefix {prefix + ':'!r}; known: {_KNOWN_SOURCES}"
    )


def _to_float(image: np.ndarray, where: str) -> np.ndarray:
    """uint8 -> float32 in [0, 1]; float -> float32."""
    if image.dtype == np.uint8:
        return image.astype(np.float32) / 255.0
    if np.issubdtype(image.dtype, np.floating):
        return image.astype(np.float32, copy=False)
    raise DataError(f"{where}: image dtype {image.dtype} is neither uint8 nor float")


# --- in-memory arrays (npz) ----------------------------------------------------------------


class ArraySource(Source):
    """Examples held in memory: one ``(N, *spatial, C)`` array or a list of ``(*spatial, C)``."""

    def __init__(self, images, labels: np.ndarray, spatial_dims: int):
        self._images, self._labels = images, labels
        self.spatial_dims = spatial_dims
        self.in_channels = int(images[0].shape[-1])

    def __len__(self) -> int:
        return len(self._labels)

    def __getitem__(self, index: int) -> dict[str, Any]:
        image = self._images[operator.index(index)]
        return {"image": _to_float(image, "array"), "label": int(self._labels[index])}

    def _compute_sizes(self):
        if isinstance(self._images, np.ndarray):  # one shape for all: no per-example work
            return np.broadcast_to(self._images.shape[1:-1], (len(self), self.spatial_dims))
        return [im.shape[:-1] for im in self._images]


def load_npz(path: str, pixel_range: tuple[float, float] = (0.0, 1.0)) -> Dataset:
    """Dataset from an ``.npz`` file.

    Keys ``{train,test}_images``: uint8 or float, either one array ``(N, H, W)`` (2-D, C=1),
    ``(N, H, W, C)``, ``(N, L)`` (1-D, C=1), ``(N, L, C)``, or an object array of per-example
    arrays of different shapes (same rules without N). ``(N, L, C)`` and ``(N, H, W)`` look alike:
    an optional ``spatial_dims`` key settles it (default: 3-D arrays are 2-D grayscale).
    ``{train,test}_labels``: ints in ``[0, num_classes)``; ``num_classes`` or ``class_names``
    are optional keys, else the count is max label + 1 (a class without training examples is
    then a warning). Float pixel values must lie in ``pixel_range`` (uint8 is divided by 255).
    At least 2 classes. Object arrays are unpickled: only load trusted files.
    """
    where = f"npz:{path}"
    if not os.path.isfile(path):
        raise DataError(f"{where}: no such file")
    try:
        npz = np.load(path, allow_pickle=True)
    except Exception as e:
        raise DataError(f"{where}: not a readable .npz file ({e})") from e
    with npz:
        missing = [
            k
            for k in ("train_images", "train_labels", "test_images", "test_labels")
            if k not in npz
        ]
        if missing:
            raise DataError(f"{where}: missing key(s) {', '.join(missing)} (have {list(npz)})")
        dims = int(npz["spatial_dims"]) if "spatial_dims" in npz else None
        if dims not in (None, 1, 2):
            raise DataError(f"{where}: key spatial_dims must be 1 or 2, got {dims}")
        num_classes = _npz_class_count(npz, where)
        names = tuple(str(n) for n in npz["class_names"]) if "class_names" in npz else ()
        splits = [
            _array_split(
                npz[f"{split}_images"],
                npz[f"{split}_labels"],
                (f"{where}: {split}_images", f"{where}: {split}_labels"),
                dims=dims,
                num_classes=num_classes,
                pixel_range=pixel_range,
            )
            for split in ("train", "test")
        ]
    return _array_dataset(where, splits, num_classes, names)


def _array_split(images, labels, where: tuple[str, str], *, dims, num_classes, pixel_range):
    """Validated ``(images, labels (N,) int64, spatial_dims)`` of one split; ``where`` names
    the images and the labels in messages. Images as :func:`_npz_images` returns them."""
    images, dims = _npz_images(images, dims, where[0])
    _check_range(images, pixel_range, where[0])
    return images, _npz_labels(labels, len(images), num_classes, where[1]), dims


def _array_dataset(where: str, splits, num_classes: int | None, names=()) -> Dataset:
    """Dataset of in-memory train and test splits (from :func:`_array_split`), after checking
    that they agree; ``num_classes`` None: max label + 1 (warns of classes never trained)."""
    (tr_im, tr_lab, tr_dims), (te_im, te_lab, te_dims) = splits
    if tr_dims != te_dims:
        raise DataError(f"{where}: train_images are {tr_dims}-D but test_images are {te_dims}-D")
    c_train, c_test = tr_im[0].shape[-1], te_im[0].shape[-1]
    if c_train != c_test:
        raise DataError(f"{where}: train_images have {c_train} channels, test_images {c_test}")
    if num_classes is None:
        num_classes = int(max(tr_lab.max(), te_lab.max())) + 1
        if empty := sorted(set(range(num_classes)) - set(tr_lab.tolist())):
            log.warning("%s: class(es) %s have no training examples", where, empty)
    if num_classes < 2:
        raise DataError(f"{where}: {num_classes} class; a classifier needs at least 2")
    return Dataset(
        name=where,
        train=ArraySource(tr_im, tr_lab, tr_dims),
        test=ArraySource(te_im, te_lab, te_dims),
        num_classes=num_classes,
        in_channels=int(c_train),
        spatial_dims=tr_dims,
        class_names=names,
    )


def _npz_class_count(npz, where: str) -> int | None:
    """The class count the file states (``num_classes``, ``class_names``), or None."""
    counts = {}
    if "num_classes" in npz:
        counts["num_classes"] = int(npz["num_classes"])
    if "class_names" in npz:
        counts["class_names"] = len(npz["class_names"])
    if len(set(counts.values())) > 1:
        raise DataError(f"{where}: num_classes and class_names disagree: {counts}")
    return next(iter(counts.values()), None)


def _check_range(images, pixel_range: tuple[float, float], where: str) -> None:
    """Float pixel values inside ``pixel_range`` (uint8 is always fine)."""
    floats = [
        im for im in (images if isinstance(images, list) else [images]) if im.dtype != np.uint8
    ]
    if not floats:
        return
    lo = min(float(im.min()) for im in floats)
    hi = max(float(im.max()) for im in floats)
    if lo < pixel_range[0] or hi > pixel_range[1]:
        raise DataError(
            f"{where}: float pixel values span [{lo:g}, {hi:g}], outside "
            f"[{pixel_range[0]:g}, {pixel_range[1]:g}]: rescale them (uint8 is divided by 255) "
            f"or accept them with --pixel_range={lo:g},{hi:g}"
        )


def _with_channels(ndim: int, dims: int | None, where: str) -> tuple[int, bool]:
    """For an example of ``ndim`` axes: (spatial_dims, whether a channel axis must be added)."""
    table = {(1, None): (1, True), (1, 1): (1, True), (2, None): (2, True), (2, 2): (2, True)}
    table |= {(2, 1): (1, False), (3, None): (2, False), (3, 2): (2, False)}
    if (ndim, dims) not in table:
        hint = "" if dims is None else f" with spatial_dims={dims}"
        raise DataError(f"{where}: examples with {ndim} axes are not 1-D or 2-D data{hint}")
    return table[(ndim, dims)]


def _npz_images(arr: np.ndarray, dims: int | None, where: str):
    """Validated images as ``(N, *spatial, C)`` array or list of ``(*spatial, C)``, and dims."""
    if len(arr) == 0:
        raise DataError(f"{where}: empty")
    if arr.dtype != object:
        d, add_c = _with_channels(arr.ndim - 1, dims, where)
        _check_values(arr, where)
        return (arr[..., None] if add_c else arr), d
    out, found = [], set()
    for i, im in enumerate(arr):
        im = np.asarray(im)
        d, add_c = _with_channels(im.ndim, dims, f"{where}[{i}]")
        _check_values(im[None], f"{where}[{i}]")
        out.append(im[..., None] if add_c else im)
        found.add((d, out[-1].shape[-1]))
        if len(found) > 1:
            raise DataError(
                f"{where}: example {i} has shape {im.shape}, unlike the earlier examples "
                "(mixed spatial dims or channel counts)"
            )
    return out, found.pop()[0]


def _check_values(arr: np.ndarray, where: str) -> None:
    """dtype uint8/float and no NaN/inf; ``arr`` is ``(N, ...)``."""
    if arr.dtype != np.uint8 and not np.issubdtype(arr.dtype, np.floating):
        raise DataError(f"{where}: dtype {arr.dtype} is neither uint8 nor float")
    if arr.dtype != np.uint8:
        bad = ~np.isfinite(arr.reshape(len(arr), -1)).all(1)
        if bad.any():
            raise DataError(f"{where}: example {int(bad.argmax())} has NaN or inf values")


def _npz_labels(labels, n: int, num_classes: int | None, key: str) -> np.ndarray:
    """``(n,)`` int64 labels in ``[0, num_classes)`` (``num_classes`` None: just >= 0)."""
    labels = np.asarray(labels)
    if labels.shape != (n,):
        raise DataError(f"{key}: shape {labels.shape}, expected ({n},) to match the images")
    if not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"{key}: dtype {labels.dtype} is not an integer type")
    bad = (labels < 0) | (labels >= (num_classes if num_classes is not None else np.inf))
    if bad.any():
        i = int(bad.argmax())
        bound = f"[0, {num_classes})" if num_classes is not None else ">= 0"
        raise DataError(f"{key}: label {labels[i]} at index {i} is out of range {bound}")
    return labels.astype(np.int64)


# --- image folders -------------------------------------------------------------------------


class FolderSource(Source):
    """Image files decoded lazily with PIL; grayscale -> C=1, colour -> C=3."""

    def __init__(self, files: list[Path], labels: list[int], sizes, channels: int, skipped: int):
        self._files, self._labels = files, np.asarray(labels, np.int64)
        self._sizes = np.asarray(sizes, np.int64).reshape(len(files), 2)
        self.spatial_dims, self.in_channels, self.skipped = 2, channels, skipped

    def __len__(self) -> int:
        return len(self._files)

    def __getitem__(self, index: int) -> dict[str, Any]:
        path = self._files[operator.index(index)]
        try:
            with Image.open(path) as im:
                pixels = np.asarray(im.convert("L" if self.in_channels == 1 else "RGB"))
        except Exception as e:
            raise DataError(f"cannot decode image file {path}: {e}") from e
        pixels = pixels.reshape(*pixels.shape[:2], self.in_channels)
        return {"image": pixels.astype(np.float32) / 255.0, "label": int(self._labels[index])}


def _channels_of(im: Image.Image) -> int:
    """1 for grayscale modes (alpha dropped), 3 for colour (palette, RGBA, CMYK... -> RGB)."""
    if im.mode == "P":
        return 1 if im.palette is not None and im.palette.mode == "L" else 3
    return 1 if im.getbands()[0] in ("L", "1", "I", "F") else 3


def _probe(path: Path):
    """(height, width, channels) of a fully decoded file, or the exception."""
    try:
        with Image.open(path) as im:
            im.load()  # a full decode: truncated JPEGs pass header checks
            return im.height, im.width, _channels_of(im)
    except Exception as e:
        return e


def _class_files(root: Path, where: str) -> dict[str, list[Path]]:
    classes = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise DataError(f"{where}: no class subfolders in {root}")
    out = {}
    for c in classes:
        files = sorted(
            p
            for p in c.rglob("*")
            if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
        )
        if not files:
            raise DataError(f"{where}: class folder {c} has no PNG/JPEG files")
        out[c.name] = files
    return out


def _in_test(rel: str) -> bool:
    """Deterministic split: hash of the relative path; stable when files are added."""
    h = int.from_bytes(hashlib.md5(rel.encode()).digest()[:8], "little")
    return h / 2**64 < FOLDER_TEST_FRACTION


def load_folder(path: str, *, skip_corrupt: bool = False, num_threads: int = 2) -> Dataset:
    """Dataset from ``PATH/CLASS/*.png|jpg`` (labels = sorted class names), or from
    ``PATH/train/CLASS/...`` and ``PATH/test/CLASS/...`` when both exist. Without them, about
    ``FOLDER_TEST_FRACTION`` of each class goes to test, chosen by a hash of the relative path.

    Every file is decoded once here to catch corrupt files and learn sizes and channel counts;
    examples are decoded again lazily on access.
    """
    where, root = f"folder:{path}", Path(path)
    if not root.is_dir():
        raise DataError(f"{where}: no such directory")
    if (root / "train").is_dir() and (root / "test").is_dir():
        train = _class_files(root / "train", where)
        test = _class_files(root / "test", where)
        if unknown := sorted(set(test) - set(train)):
            raise DataError(f"{where}: test class folder(s) {unknown} have no train folder")
    else:
        by_class = _class_files(root, where)
        train, test = {}, {}
        for c, files in by_class.items():
            for f in files:
                d = test if _in_test(f.relative_to(root).as_posix()) else train
                d.setdefault(c, []).append(f)
    names = sorted(train)
    if len(names) < 2:
        raise DataError(f"{where}: one class folder ({names[0]}); a classifier needs at least 2")
    files = {
        s: [(f, names.index(c)) for c, fs in d.items() for f in fs]
        for s, d in (("train", train), ("test", test))
    }
    everything = files["train"] + files["test"]
    with concurrent.futures.ThreadPoolExecutor(num_threads) as pool:
        probes = dict(
            zip(
                [f for f, _ in everything],
                pool.map(_probe, [f for f, _ in everything]),
                strict=True,
            )
        )
    bad = [f for f, p in probes.items() if isinstance(p, Exception)]
    if bad and not skip_corrupt:
        raise DataError(f"{where}: cannot decode image file {bad[0]}: {probes[bad[0]]}")
    if bad:
        log.warning("%s: skipped %d unreadable image file(s), e.g. %s", where, len(bad), bad[0])
    good = {f: p for f, p in probes.items() if not isinstance(p, Exception)}
    by_channels: dict[int, Path] = {}
    for f, (_, _, c) in good.items():
        by_channels.setdefault(c, f)
    if len(by_channels) > 1:
        raise DataError(
            f"{where}: mixed channel counts: {by_channels[1]} is grayscale but {by_channels[3]} "
            "is colour; convert the files to one mode"
        )
    channels = next(iter(by_channels), None)
    sources = {}
    for split, pairs in files.items():
        kept = [(f, y) for f, y in pairs if f in good]
        if not kept:
            raise DataError(f"{where}: the {split} split has no readable images")
        sources[split] = FolderSource(
            [f for f, _ in kept],
            [y for _, y in kept],
            [good[f][:2] for f, _ in kept],
            channels,
            skipped=sum(f not in good for f, _ in pairs),
        )
    return Dataset(where, sources["train"], sources["test"], len(names), channels, 2, tuple(names))


# --- TFDS ----------------------------------------------------------------------------------


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
        out = {"image": _to_float(image, image_key), "label": int(ex[label_key])}
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
        raise DataError(f"unknown dataset {spec!r}: not {_KNOWN_SOURCES}{hint}") from None
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


def load_tfds(spec: str, data_dir: str | None = None) -> Dataset:
    """Dataset from TFDS: this package's builders are built on first use, and so are ``mnist``,
    ``fashion_mnist`` and ``kmnist`` where their IDX files are found in ``data_dir`` (see
    :func:`fcn_jax.data.idx.prepare_tfds`); other datasets must already be prepared as
    ArrayRecord in ``data_dir`` (preparing needs network and TensorFlow). The test split is
    ``test``, or ``validation`` where there is no ``test``."""
    builder = _tfds_builder(spec, data_dir)
    base = spec.partition("/")[0]
    if base in OWN_BUILDERS:
        importlib.import_module(OWN_BUILDERS[base]).prepare(spec, data_dir)
    from fcn_jax.data import idx  # idx imports this module

    if builder.name in idx.TFDS_NAMES and not builder.is_prepared():
        if idx.prepare_tfds(builder.name, data_dir):
            builder = _tfds_builder(spec, data_dir)  # sees the splits just written
    features = builder.info.features
    image_key, label_key, bbox_key = _pick_features(features, spec)
    splits = set(builder.info.splits.keys())
    test_split = "validation" if "test" not in splits and "validation" in splits else "test"
    root = data_dir or tfds.core.constants.DATA_DIR
    try:
        raw = {
            s: tfds.data_source(spec, split=s, data_dir=data_dir, download=False)
            for s in ("train", test_split)
        }
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
    train, test = (TfdsSource(raw[s], image_key, label_key, bbox_key, shape) for s in raw)
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


class Subset(Source):
    """The first ``n`` examples of a source (evaluation on part of a large test split)."""

    def __init__(self, source: Source, n: int):
        self.source, self.n = source, min(n, len(source))
        self.spatial_dims, self.in_channels = source.spatial_dims, source.in_channels
        self.has_bbox = source.has_bbox

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < self.n:
            raise IndexError(index)
        return self.source[index]

    def get_many(self, indices) -> list[dict[str, Any]]:
        return self.source.get_many(indices)

    def sizes(self) -> np.ndarray:
        return self.source.sizes()[: self.n]
