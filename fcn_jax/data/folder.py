"""Image folders as a source (``folder:PATH``): :class:`FolderSource`, :func:`load_folder`, and
:func:`decode_image`, the one way image files become arrays (the folder source and
:mod:`fcn_jax.predict` both use it).
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import operator
import os
from pathlib import Path
from typing import Any

import numpy as np
from absl import logging
from PIL import Image, UnidentifiedImageError

from fcn_jax.data.sources import DataError, Dataset, Source

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
FOLDER_TEST_FRACTION = 0.2


class FolderSource(Source):
    """Image files decoded lazily with PIL; grayscale -> C=1, colour -> C=3."""

    def __init__(self, files: list[Path], labels: list[int], sizes, channels: int, skipped: int):
        self._files, self._labels = files, np.asarray(labels, np.int64)
        self._sizes = np.asarray(sizes, np.int64).reshape(len(files), 2)
        self.spatial_dims, self.in_channels, self.skipped = 2, channels, skipped

    def __len__(self) -> int:
        return len(self._files)

    def __getitem__(self, index: int) -> dict[str, Any]:
        image = decode_image(self._files[operator.index(index)], self.in_channels)
        return {"image": image, "label": int(self._labels[index])}


def decode_image(path_or_file, channels: int) -> np.ndarray:
    """A PNG/JPEG (any mode) as ``(H, W, channels)`` float32 in [0, 1]: converted to ``L``
    (``channels`` 1) or ``RGB`` (3) and divided by 255. The one decode of image files, for
    training (:class:`FolderSource`) and serving (:func:`fcn_jax.predict.load_image`) alike.

    ``path_or_file``: a path or a binary file object. Raises :class:`DataError` (a
    ``ValueError``) in one line naming the file when it cannot be read, or for other
    ``channels``.
    """
    modes = {1: "L", 3: "RGB"}
    if channels not in modes:
        raise DataError(f"image files can feed 1- or 3-channel models, not {channels} channels")
    try:
        with Image.open(path_or_file) as im:
            pixels = np.asarray(im.convert(modes[channels]))
    except Exception as e:
        name = path_or_file
        if not isinstance(path_or_file, str | os.PathLike):
            name = getattr(path_or_file, "name", "from a file object")
        reason = "not a readable image" if isinstance(e, UnidentifiedImageError) else str(e)
        raise DataError(f"cannot read image {name}: {reason}") from None
    pixels = pixels.reshape(*pixels.shape[:2], channels)
    return pixels.astype(np.float32) / 255.0


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
        logging.warning("%s: skipped %d unreadable image file(s), e.g. %s", where, len(bad), bad[0])
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
