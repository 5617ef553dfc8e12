"""``load_dataset(spec)``: the one way from a ``--dataset`` spec to a :class:`Dataset`.

``spec`` is one of:

* ``procedural_digits[/CONFIG]``, ``mnist1d[/CONFIG]``: this package's TFDS builders, built on
  first use in ``data_dir``.
* ``npz:PATH``: arrays ``train_images``, ``train_labels``, ``test_images``, ``test_labels``
  (see :func:`fcn_jax.data.arrays.load_npz`).
* ``idx:DIR`` (or ``idx:DIR/PREFIX``): the four MNIST-style IDX files, plain or gzipped (see
  :func:`fcn_jax.data.idx.load_idx`).
* ``ucr:NAME``, ``ts:PATH/NAME``: UCR/UEA time series in the archive's ``.ts`` format, each
  series at its own length (see :mod:`fcn_jax.data.series`).
* ``folder:PATH``: one subfolder of PNG/JPEG files per class (see
  :func:`fcn_jax.data.folder.load_folder`).
* any other TFDS name (``mnist``, ``cifar10``, ``imagenette/160px``...), read with
  ``tfds.data_source`` from an ArrayRecord copy already prepared in ``data_dir``; ``mnist``,
  ``fashion_mnist`` and ``kmnist`` are built there from their IDX files when those are found in
  ``data_dir`` (see :func:`fcn_jax.data.idx.prepare_tfds`).

``train_split`` and ``test_split`` pick, for every kind, the splits a run trains and tests on,
whole or sliced as TFDS writes them (``train[:50000]``, ``train[50000:]``; see
:mod:`fcn_jax.data.splits`).

The modules of the kinds that need TFDS (``idx``, ``tfds_source``) are imported on use, so
importing this module does not import ``tensorflow_datasets``.
"""

from __future__ import annotations

import re

from fcn_jax.data.arrays import load_npz
from fcn_jax.data.folder import load_folder
from fcn_jax.data.sources import KNOWN_SOURCES, DataError, Dataset
from fcn_jax.data.splits import select_splits


def load_dataset(
    spec: str,
    data_dir: str | None = None,
    *,
    skip_corrupt: bool = False,
    pixel_range: tuple[float, float] = (0.0, 1.0),
    normalize: str | None = None,
    allow_pickle: bool = False,
    train_split: str | None = None,
    test_split: str | None = None,
) -> Dataset:
    """Open the dataset named by ``spec`` (see the module docstring).

    Args:
      spec: ``npz:PATH``, ``idx:DIR[/PREFIX]``, ``folder:PATH`` or a TFDS name with optional
        ``/config``.
      data_dir: TFDS data directory (default: TFDS's own default).
      skip_corrupt: folder datasets: leave out unreadable image files (counted in
        ``Source.skipped``, and logged) instead of raising.
      pixel_range: npz and idx datasets: the range float pixel values must lie in.
      normalize: ``ucr:``/``ts:`` series: ``series``, ``dataset``, ``none`` or None (series
        for univariate, dataset for multivariate data; see :mod:`fcn_jax.data.series`); other
        kinds take none.
      allow_pickle: npz datasets: read object arrays, by unpickling (trusted files only: a
        crafted file runs code when unpickled).
      train_split, test_split: the split to train and to test on, whole or sliced
        (``train[:50000]``, ``train[80%:]``); None: ``train``, and ``test`` (a TFDS dataset
        without one: ``validation``).
    Raises:
      DataError: with a one-line message naming the file, key or dataset at fault.
    """
    prefix, colon, path = spec.partition(":")
    series = prefix in ("ucr", "ts")
    if not series and (not colon or re.fullmatch(r"[\d*]+(\.[\d*]+)*", path)):  # TFDS name
        if normalize not in (None, "none"):
            raise DataError(f"--normalize={normalize}: applies to ucr: and ts: series only")
        from fcn_jax.data.tfds_source import load_tfds  # imports tensorflow_datasets

        return load_tfds(spec, data_dir, train_split, test_split)  # TFDS slices them itself
    dataset = _load_local(spec, data_dir, skip_corrupt, pixel_range, normalize, allow_pickle)
    return select_splits(dataset, train_split, test_split)


def _load_local(spec, data_dir, skip_corrupt, pixel_range, normalize, allow_pickle) -> Dataset:
    """The dataset of a prefixed ``spec`` (``npz:``, ``idx:``, ``folder:``, ``ucr:``, ``ts:``)
    with its own train and test split."""
    prefix, _, path = spec.partition(":")
    if prefix in ("ucr", "ts"):
        return _load_series(prefix, path, data_dir, normalize)
    if normalize not in (None, "none"):
        raise DataError(f"--normalize={normalize}: applies to ucr: and ts: series only")
    if prefix == "npz":
        return load_npz(path, pixel_range, allow_pickle=allow_pickle)
    if prefix == "idx":
        from fcn_jax.data.idx import load_idx  # imports tensorflow_datasets

        return load_idx(path, pixel_range)
    if prefix == "folder":
        return load_folder(path, skip_corrupt=skip_corrupt)
    raise DataError(
        f"--dataset={spec}: unknown source prefix {prefix + ':'!r}; known: {KNOWN_SOURCES}"
    )


def _load_series(prefix: str, path: str, data_dir: str | None, normalize: str | None) -> Dataset:
    from fcn_jax.data.series import FOLDS, load_ts, load_ucr, validation_split

    spec, (name, _, tail) = f"{prefix}:{path}", path.rpartition("/")
    match = re.fullmatch(r"validation|fold(\d+)", tail)
    fold = None if match is None else int(match[1] or 0)  # /validation is fold 0
    path = path if match is None else name
    expected = "NAME" if prefix == "ucr" else "PATH/NAME"
    if not path or (fold is not None and fold >= FOLDS):
        raise DataError(
            f"--dataset={spec}: expected {prefix}:{expected}, optionally "
            f"followed by /validation or /fold0 .. /fold{FOLDS - 1}"
        )
    load = load_ucr(path, data_dir, normalize) if prefix == "ucr" else load_ts(path, normalize)
    return load if fold is None else validation_split(load, fold)
