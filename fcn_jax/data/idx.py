"""IDX files (the MNIST format) as a dataset source, and TFDS's MNIST family built from them.

``idx:DIR`` reads ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
``t10k-images-idx3-ubyte`` and ``t10k-labels-idx1-ubyte`` from DIR, each plain or gzipped
(``.gz``). EMNIST keeps several sets in one folder with a prefix
(``emnist-balanced-train-images-idx3-ubyte.gz``...): ``idx:DIR/emnist-balanced`` picks one.
EMNIST images are stored transposed (as distributed; TFDS keeps them so too).

An IDX file is: two zero bytes, a dtype code (0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32,
0x0D float32, 0x0E float64), the number of dimensions, each dimension as a big-endian uint32,
then the data in big-endian order.

:func:`prepare_tfds` builds TFDS's own ``mnist``, ``fashion_mnist`` and ``kmnist`` (same name,
version and features) as ArrayRecord from such files, without TensorFlow or network.
"""

from __future__ import annotations

import functools
import gzip
import math
import os
import re
import struct
import types
import zlib
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds
from absl import logging
from etils import epath
from PIL import Image

from fcn_jax.data.arrays import array_dataset, array_split, check_labels
from fcn_jax.data.offline_builder import prepare_locked
from fcn_jax.data.sources import DataError, Dataset

# key -> file name (without ".gz") of the four files of a set.
IDX_NAMES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
# TFDS datasets prepare_tfds can build, with their (uint8) image shape.
TFDS_NAMES = ("mnist", "fashion_mnist", "kmnist")
_TFDS_SHAPE = (28, 28)
_DTYPES = {0x08: "u1", 0x09: "i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_PREFIXED = re.compile(r"(.+)-train-images-idx3-ubyte(\.gz)?")


# --- reading ------------------------------------------------------------------------------


def read_idx(path) -> np.ndarray:
    """The array in an IDX file, plain or gzipped (told by its first bytes, not its name).

    Returns shape and dtype as the header says, in native byte order (read-only for uint8).
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e})") from e
    if data[:2] == b"\x1f\x8b":  # gzip's magic; an IDX file starts with two zero bytes
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as e:
            raise DataError(f"{path}: corrupt gzip data ({str(e).splitlines()[0]})") from e
    return parse_idx(data, str(path))


def parse_idx(data: bytes, where: str) -> np.ndarray:
    """The array an IDX file's bytes hold (see the module docstring); ``where`` names the file."""
    if len(data) < 4 or data[:2] != b"\0\0":
        raise DataError(
            f"{where}: corrupt header: starts with bytes {data[:4].hex() or '(none)'}, not "
            "00 00 <dtype code> <number of dimensions>: not an IDX file"
        )
    code, ndim = data[2], data[3]
    if code not in _DTYPES:
        known = ", ".join(f"0x{c:02X}" for c in _DTYPES)
        raise DataError(
            f"{where}: corrupt header: unknown dtype code 0x{code:02X} (known: {known})"
        )
    if ndim == 0:
        raise DataError(f"{where}: corrupt header: 0 dimensions")
    start = 4 + 4 * ndim
    if len(data) < start:
        raise DataError(
            f"{where}: truncated header: {ndim} dimensions need {start} bytes, the file has "
            f"{len(data)}"
        )
    shape = struct.unpack(f">{ndim}I", data[4:start])
    dtype = np.dtype(_DTYPES[code])
    have, want = len(data) - start, math.prod(shape) * dtype.itemsize
    if have != want:
        what = "truncated file" if have < want else f"{have - want} bytes of trailing garbage"
        raise DataError(
            f"{where}: {what}: has {have} bytes of data, header says {want} "
            f"({dtype.name}, shape {shape})"
        )
    array = np.frombuffer(data, dtype, math.prod(shape), offset=start).reshape(shape)
    return array.astype(dtype.newbyteorder("="), copy=False)


def _read_split(files: dict[str, Path], split: str) -> tuple[np.ndarray, np.ndarray]:
    """(images ``(N, ...)``, labels as stored) of ``split``, their counts checked."""
    image_file, label_file = files[f"{split}_images"], files[f"{split}_labels"]
    images, labels = read_idx(image_file), read_idx(label_file)
    if labels.ndim == 1 and len(labels) != len(images):
        raise DataError(
            f"{label_file}: {len(labels)} labels, but {image_file.name} has {len(images)} images"
        )
    return images, labels


# --- finding the files ---------------------------------------------------------------------


def _set_in(directory: Path, prefix: str) -> tuple[dict[str, Path], list[str]]:
    """The files of one set found in ``directory`` (plain before .gz), and those missing."""
    found, missing = {}, []
    for key, stem in IDX_NAMES.items():
        names = (prefix + stem, prefix + stem + ".gz")
        hit = next((directory / n for n in names if (directory / n).is_file()), None)
        if hit is None:
            missing.append(names[0])
        else:
            found[key] = hit
    return found, missing


def _missing(missing: list[str], directory: Path) -> str:
    return f"missing {', '.join(missing)} (each plain or .gz) in {directory}"


def _only_prefix(directory: Path, where: str, path: str) -> str:
    """The prefix of the one prefixed set in ``directory`` ("" if none; several: an error)."""
    prefixes = sorted({m[1] for f in directory.iterdir() if (m := _PREFIXED.fullmatch(f.name))})
    if len(prefixes) > 1:
        choices = ", ".join(f"idx:{os.path.join(path, x)}" for x in prefixes)
        raise DataError(
            f"{where}: no unprefixed IDX files but {len(prefixes)} prefixed sets; pick one of "
            f"{choices}"
        )
    return prefixes[0] + "-" if prefixes else ""


def find_idx_files(path: str) -> dict[str, Path]:
    """``{key of IDX_NAMES: file}`` for ``idx:PATH``: PATH is a directory holding one set
    (unprefixed, or one prefixed set), or ``DIR/PREFIX`` naming a prefixed set in DIR."""
    where, p = f"idx:{path}", Path(path).expanduser()
    if p.is_dir():
        directory = p
        found, missing = _set_in(p, "")
        prefix = "" if found else _only_prefix(p, where, path)
        if prefix:
            found, missing = _set_in(p, prefix)
    elif p.parent.is_dir():
        directory, prefix = p.parent, p.name.rstrip("-") + "-"
        found, missing = _set_in(directory, prefix)
        if not found:
            where += ": no such directory, nor a prefix of IDX files"
    else:
        raise DataError(f"{where}: no such directory")
    if missing:
        raise DataError(f"{where}: {_missing(missing, directory)}")
    if prefix:
        logging.info("%s: reading the IDX files %s* in %s", where, prefix, directory)
    return found


def load_idx(path: str, pixel_range: tuple[float, float] = (0.0, 1.0)) -> Dataset:
    """Dataset from the IDX files of ``idx:PATH`` (see the module docstring and
    :func:`find_idx_files`).

    Images ``(N, H, W)`` (2-D, C=1), ``(N, H, W, C)`` or ``(N, L)`` (1-D, C=1), uint8 (divided
    by 255) or float within ``pixel_range``; labels ``(N,)`` of any integer type, >= 0. The
    class count is max label + 1 (a class without training examples is a warning); at least 2.
    Class names are the indices.
    """
    files = find_idx_files(path)
    splits = []
    for split in ("train", "test"):
        images, labels = _read_split(files, split)
        where = (str(files[f"{split}_images"]), str(files[f"{split}_labels"]))
        splits.append(
            array_split(images, labels, where, dims=None, num_classes=None, pixel_range=pixel_range)
        )
    return array_dataset(f"idx:{path}", splits, None)


# --- TFDS's mnist, fashion_mnist and kmnist from IDX files ---------------------------------


def _tfds_dirs(name: str, root: str) -> list[Path]:
    """Where :func:`prepare_tfds` looks, most specific first (a set in ``root`` would serve
    any of the three names)."""
    manual = Path(root).expanduser() / "downloads" / "manual"
    return [manual / name, manual, Path(root).expanduser()]


def tfds_hint(name: str, root: str) -> str:
    """The not-prepared error's tail for a dataset :func:`prepare_tfds` can build, else ""."""
    if name not in TFDS_NAMES:
        return ""
    dirs = [str(d) for d in reversed(_tfds_dirs(name, root))]
    return (
        f", or put the IDX files {', '.join(IDX_NAMES.values())} (plain or .gz) in "
        f"{', '.join(dirs[:-1])} or {dirs[-1]}"
    )


def find_tfds_files(name: str, root: str) -> dict[str, Path] | None:
    """The first complete unprefixed IDX set in :func:`_tfds_dirs`, or None where no folder
    has any of the files (a folder with only some of them is an error)."""
    partial = None
    for directory in _tfds_dirs(name, root):
        found, missing = _set_in(directory, "") if directory.is_dir() else ({}, [])
        if found and not missing:
            return found
        if found and partial is None:
            partial = _missing(missing, directory)
    if partial:
        raise DataError(
            f"dataset {name!r} is not prepared in {root}; building it from IDX files: {partial}"
        )
    return None


class _FromIdx:
    """Mixin over a TFDS MNIST-family builder: examples from local IDX files, no download."""

    # As OfflineBuilder.code_path: TFDS's default lookup imports the absent importlib_resources.
    code_path = epath.Path(__file__)

    def __init__(self, *, idx_files: dict[str, Path], **kwargs):
        self._idx_files = idx_files
        super().__init__(**kwargs)

    def _split_generators(self, dl_manager):
        del dl_manager  # nothing to download
        # Both splits are read and checked before anything is written.
        return {split: self._idx_examples(*self._idx_split(split)) for split in ("train", "test")}

    def _idx_split(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """(uint8 ``(N, 28, 28)`` images, ``(N,)`` labels in range) of ``split``."""
        images, labels = _read_split(self._idx_files, split)
        image_file = self._idx_files[f"{split}_images"]
        if images.dtype != np.uint8 or images.shape[1:] not in (_TFDS_SHAPE, (*_TFDS_SHAPE, 1)):
            raise DataError(
                f"{image_file}: TFDS {self.name} needs uint8 28x28 images, the file holds "
                f"{images.dtype} {images.shape[1:]}; read it with --dataset=idx:{image_file.parent}"
            )
        num_classes = self.info.features["label"].num_classes
        labels = check_labels(
            labels, len(images), num_classes, str(self._idx_files[f"{split}_labels"])
        )
        return images.reshape(len(images), *_TFDS_SHAPE), labels

    @staticmethod
    def _idx_examples(images: np.ndarray, labels: np.ndarray):
        for i, (image, label) in enumerate(zip(images, labels)):
            # A PIL image, not an array: TFDS encodes arrays with TensorFlow.
            yield i, {"image": Image.fromarray(image), "label": int(label)}


@functools.cache
def _builder_class(name: str) -> type:
    """TFDS's builder class for ``name`` with :class:`_FromIdx` mixed in, unregistered."""
    from tensorflow_datasets.image_classification import mnist  # ~90 modules: only to build

    base = {"mnist": mnist.MNIST, "fashion_mnist": mnist.FashionMNIST, "kmnist": mnist.KMNIST}
    return types.new_class(
        f"{base[name].__name__}FromIdx",
        (_FromIdx, base[name]),
        {"skip_registration": True},
        lambda ns: ns.update(name=name),  # else TFDS derives the name from the class name
    )


def prepare_tfds(name: str, data_dir: str | None = None) -> bool:
    """Build TFDS ``name`` (one of ``TFDS_NAMES``) as ArrayRecord in ``data_dir`` from IDX
    files found in ``data_dir``, ``data_dir/downloads/manual`` or
    ``data_dir/downloads/manual/NAME``; under :func:`prepare_locked`'s lock. Returns whether
    files were found (a dataset already built is left as is)."""
    root = data_dir or tfds.core.constants.DATA_DIR
    files = find_tfds_files(name, root)
    if files is None:
        return False
    cls = _builder_class(name)
    logging.warning(
        "TFDS %s is not prepared in %s: building it from the IDX files in %s",
        name,
        root,
        files["train_images"].parent,
    )
    prepare_locked(lambda: cls(idx_files=files, data_dir=data_dir, file_format="array_record"))
    return True
