"""In-memory arrays as a source: :class:`ArraySource`, :func:`load_npz` (``npz:PATH``), and the
checks any array-backed kind runs on its images and labels (:func:`array_split`,
:func:`array_dataset`, :func:`check_labels`; :mod:`fcn_jax.data.idx` uses them too).
"""

from __future__ import annotations

import io
import operator
import os
import zipfile
from typing import Any

import numpy as np
from absl import logging

from fcn_jax.data.sources import DataError, Dataset, Source, to_float
from fcn_jax.outputs import write_atomic


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
        return {"image": to_float(image, "array"), "label": int(self._labels[index])}

    def _compute_sizes(self):
        if isinstance(self._images, np.ndarray):  # one shape for all: no per-example work
            return np.broadcast_to(self._images.shape[1:-1], (len(self), self.spatial_dims))
        return [im.shape[:-1] for im in self._images]


def load_npz(
    path: str, pixel_range: tuple[float, float] = (0.0, 1.0), *, allow_pickle: bool = False
) -> Dataset:
    """Dataset from an ``.npz`` file.

    Keys ``{train,test}_images``: uint8 or float, either one array ``(N, H, W)`` (2-D, C=1),
    ``(N, H, W, C)``, ``(N, L)`` (1-D, C=1), ``(N, L, C)``, or, for examples of different
    shapes, every example's values concatenated (1-D, C order) with ``{split}_sizes``, the
    ``(N, R)`` shape of each example (same rules without N; :func:`save_npz` writes it).
    ``(N, L, C)`` and ``(N, H, W)`` look alike: an optional ``spatial_dims`` key settles it
    (default: 3-D arrays are 2-D grayscale). ``{train,test}_labels``: ints in
    ``[0, num_classes)``; ``num_classes`` or ``class_names`` are optional keys, else the count
    is max label + 1 (a class without training examples is then a warning). Float pixel values
    must lie in ``pixel_range`` (uint8 is divided by 255). At least 2 classes.

    Object arrays (older files: per-example arrays pickled) are read only with
    ``allow_pickle``: unpickling runs whatever code a crafted file holds.
    """
    where = f"npz:{path}"
    if not os.path.isfile(path):
        raise DataError(f"{where}: no such file")
    if not zipfile.is_zipfile(path):  # np.load would unpickle a plain pickle file
        raise DataError(f"{where}: not an .npz file (a zip archive of .npy arrays)")
    try:
        npz = np.load(path, allow_pickle=allow_pickle)
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
        dims = int(_read(npz, "spatial_dims", where)) if "spatial_dims" in npz else None
        if dims not in (None, 1, 2):
            raise DataError(f"{where}: key spatial_dims must be 1 or 2, got {dims}")
        num_classes = _npz_class_count(npz, where)
        names = ()
        if "class_names" in npz:
            names = tuple(str(n) for n in _read(npz, "class_names", where))
        splits = [
            array_split(
                _split_images(npz, split, where),
                _read(npz, f"{split}_labels", where),
                (f"{where}: {split}_images", f"{where}: {split}_labels"),
                dims=dims,
                num_classes=num_classes,
                pixel_range=pixel_range,
            )
            for split in ("train", "test")
        ]
    return array_dataset(where, splits, num_classes, names)


def _read(npz, key: str, where: str) -> np.ndarray:
    """``npz[key]``; an object array without ``allow_pickle``, or a damaged member, is a
    one-line :class:`DataError` naming the key."""
    try:
        return npz[key]
    except ValueError as e:
        if "allow_pickle" not in str(e):
            raise DataError(f"{where}: cannot read key {key} ({e})") from None
        split = key.removesuffix("_images")
        layout = (
            f"; rewrite it with {split}_sizes (see save_npz)" if key.endswith("_images") else ""
        )
        raise DataError(
            f"{where}: key {key} is an object array, which only unpickling reads, and "
            f"unpickling runs any code a crafted file holds{layout}, or pass --allow_pickle "
            "for a file you trust"
        ) from None
    except Exception as e:  # a truncated or corrupt member: zipfile, zlib, numpy errors
        raise DataError(f"{where}: cannot read key {key} ({type(e).__name__}: {e})") from None


def _split_images(npz, split: str, where: str):
    """``{split}_images`` as stored, or as a list of per-example arrays when the file gives
    ``{split}_sizes`` (the layout of examples of different shapes)."""
    key = f"{split}_images"
    values = _read(npz, key, where)
    if f"{split}_sizes" not in npz:
        return values
    return decode_examples(values, _read(npz, f"{split}_sizes", where), f"{where}: {key}")


def encode_examples(examples) -> tuple[np.ndarray, np.ndarray]:
    """Arrays of one rank and dtype, of different shapes, as ``(values, sizes)``: their values
    concatenated in order (each flattened in C order) and their ``(N, rank)`` int64 shapes, the
    npz layout that needs no pickle (:func:`decode_examples` inverts it)."""
    examples = [np.asarray(e) for e in examples]
    if len({e.ndim for e in examples}) > 1 or len({e.dtype for e in examples}) > 1:
        found = sorted({f"{e.ndim}-D {e.dtype}" for e in examples})
        raise ValueError(f"examples of one rank and dtype expected, got {', '.join(found)}")
    rank = examples[0].ndim if examples else 1
    sizes = np.array([e.shape for e in examples], np.int64).reshape(len(examples), rank)
    dtype = examples[0].dtype if examples else np.uint8
    values = np.concatenate([e.ravel() for e in examples]) if examples else np.zeros(0, dtype)
    return values, sizes


def decode_examples(values: np.ndarray, sizes: np.ndarray, where: str) -> list[np.ndarray]:
    """The per-example arrays (views of ``values``) of :func:`encode_examples`' layout;
    a ``sizes`` that does not fit ``values`` is a one-line :class:`DataError`."""
    sizes = np.asarray(sizes)
    if sizes.ndim != 2 or not np.issubdtype(sizes.dtype, np.integer) or (sizes < 1).any():
        raise DataError(
            f"{where}: the sizes key must be an (N, rank) array of positive integers, got "
            f"{sizes.dtype} {sizes.shape}"
        )
    counts = np.prod(sizes, axis=1)
    if values.ndim != 1 or values.shape[0] != counts.sum():
        raise DataError(
            f"{where}: expected the examples' {counts.sum()} values concatenated in one 1-D "
            f"array (their sizes' product), got shape {values.shape}"
        )
    parts = np.split(values, np.cumsum(counts)[:-1]) if len(counts) else []
    return [v.reshape(s) for v, s in zip(parts, sizes.tolist(), strict=True)]


def save_npz(path: str, arrays: dict, *, compressed: bool = True) -> None:
    """Write ``arrays`` atomically as an ``.npz`` that ``npz:PATH`` reads, never pickled: a
    list of per-example arrays under ``{split}_images`` is written as those values
    concatenated plus ``{split}_sizes`` (:func:`encode_examples`)."""
    out = {}
    for key, value in arrays.items():
        ragged = isinstance(value, list | tuple) or np.asarray(value).dtype == object
        if key.endswith("_images") and ragged:
            out[key], out[f"{key.removesuffix('_images')}_sizes"] = encode_examples(value)
        else:
            out[key] = value
    buffer = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buffer, allow_pickle=False, **out)
    write_atomic(path, buffer.getvalue())


def array_split(images, labels, where: tuple[str, str], *, dims, num_classes, pixel_range):
    """Validated ``(images, labels (N,) int64, spatial_dims)`` of one split; ``where`` names
    the images and the labels in messages. Images as :func:`_npz_images` returns them."""
    images, dims = _npz_images(images, dims, where[0])
    _check_range(images, pixel_range, where[0])
    return images, check_labels(labels, len(images), num_classes, where[1]), dims


def array_dataset(where: str, splits, num_classes: int | None, names=()) -> Dataset:
    """Dataset of in-memory train and test splits (from :func:`array_split`), after checking
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
            logging.warning("%s: class(es) %s have no training examples", where, empty)
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


def _npz_images(arr, dims: int | None, where: str):
    """Validated images as ``(N, *spatial, C)`` array or list of ``(*spatial, C)``, and dims;
    ``arr``: one array, an object array or a list of per-example arrays."""
    if len(arr) == 0:
        raise DataError(f"{where}: empty (no examples; each split needs at least one)")
    if not isinstance(arr, list) and arr.dtype != object:
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


def check_labels(labels, n: int, num_classes: int | None, key: str) -> np.ndarray:
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
