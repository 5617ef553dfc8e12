"""Time series of the UCR/UEA archives in their ``.ts`` format: ``ucr:NAME`` (an archive dataset
by name) and ``ts:PATH/NAME`` (a local ``NAME_TRAIN.ts`` / ``NAME_TEST.ts`` pair).

Each series keeps its own length, channels last: ``(L, C)`` float32 (equal-length datasets are
held as one ``(N, L, C)`` array). String class labels become class names, in the order the
file's ``@classLabel`` line declares them. ``normalize="series"`` z-normalizes each series
(per channel), the univariate archive's protocol; ``"dataset"`` uses the train split's
per-channel mean and std for both splits; ``"none"`` keeps the values. The default (None) is
``series`` for univariate data and ``dataset`` for multivariate data, where each channel's level
carries the class (docs/results.md measures it on JapaneseVowels). A missing value (``?`` or NaN)
is an error naming the file and the row.

``ucr:NAME/fold{k}`` (and ``ts:PATH/NAME/fold{k}``), k = 0 .. 3, is fold k of a stratified
4-fold cross-validation over the train split (fixed seed): it trains on three quarters of the
train split and tests on the rest, and the four folds test each training series once; the
splits to tune on. ``ucr:NAME/validation`` is fold 0.

``ucr:NAME`` finds ``NAME_TRAIN.ts`` in the data files of an installed ``aeon`` or ``sktime``
distribution (located with :mod:`importlib.metadata`, never imported: ``pip install --no-deps
aeon`` is enough), else in ``DATA_DIR/ucr/NAME/``, else downloads the archive's zip there.

The format (as aeon's and sktime's loaders read it): ``#`` comment lines, ``@`` header lines
(``@problemName``, ``@timeStamps``, ``@missing``, ``@univariate``, ``@dimensions``,
``@equalLength``, ``@seriesLength``, ``@classLabel true LABEL...``), then ``@data`` and one case
per line: the channels' comma-separated values separated by ``:``, the class label last.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import io
import os
import urllib.request
import zipfile

import numpy as np

from fcn_jax.data.arrays import ArraySource
from fcn_jax.data.sources import DataError, Dataset
from fcn_jax.outputs import write_atomic

NORMALIZE = ("series", "dataset", "none")
FOLDS = 4  # ucr:NAME/fold0 .. fold3: stratified cross-validation over the train split
ARCHIVE_URL = "https://timeseriesclassification.com/aeon-toolkit/{name}.zip"
# Distributions whose wheels ship some of the archive as data files (read, never imported).
SHIPPING = ("aeon", "sktime")
_HEADER_KEYS = {
    "problemname", "timestamps", "missing", "univariate", "dimensions", "equallength",
    "serieslength", "classlabel", "targetlabel",
}  # fmt: skip


def read_ts(path: str) -> tuple[list[np.ndarray], list[str], tuple[str, ...]]:
    """``(series, labels, class_names)`` of one ``.ts`` file: each series ``(L, C)`` float32,
    its label as written, and the declared class labels (``@classLabel``).

    Raises:
      DataError: one line naming the file and the line at fault (missing values, a wrong
        channel count, an undeclared label, timestamps or a regression target).
    """
    if not os.path.isfile(path):
        raise DataError(f"{path}: no such file")
    with open(path, encoding="utf-8", errors="replace") as f:
        lines = f.read().splitlines()
    header, start = _read_header(lines, path)
    declared = header["classlabel"]
    series, labels, channels = [], [], None
    for number, line in enumerate(lines[start:], start + 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        *fields, label = (part.strip() for part in line.split(":"))
        where = f"{path}, line {number} (case {len(series) + 1})"
        if label not in declared:
            raise DataError(f"{where}: class label {label!r} is not one of @classLabel's")
        if channels is None:
            channels = len(fields)
        if len(fields) != channels or not fields:
            raise DataError(f"{where}: {len(fields)} channels, expected {channels}")
        series.append(_parse_case(fields, where))
        labels.append(label)
    if not series:
        raise DataError(f"{path}: no cases after @data")
    return series, labels, tuple(declared)


def _read_header(lines: list[str], path: str) -> tuple[dict, int]:
    """The header's values and the index of the first line after ``@data``."""
    header = {"classlabel": None}
    for i, raw in enumerate(lines):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if not line.startswith("@"):
            raise DataError(f"{path}, line {i + 1}: data before @data")
        key, *values = line[1:].split()
        key = key.lower()
        if key == "data":
            if header["classlabel"] is None:
                raise DataError(
                    f"{path}: no '@classLabel true LABEL...' line: not a classification file"
                )
            return header, i + 1
        if key in ("timestamps", "targetlabel") and values[:1] == ["true"]:
            raise DataError(
                f"{path}, line {i + 1}: @{key} true is not supported (plain series only)"
            )
        if key == "classlabel":
            if values[:1] != ["true"] or len(values) < 2:
                raise DataError(f"{path}, line {i + 1}: expected '@classLabel true LABEL...'")
            header["classlabel"] = list(dict.fromkeys(values[1:]))
        elif key in _HEADER_KEYS:
            header[key] = values
    raise DataError(f"{path}: no @data line")


def _parse_case(fields: list[str], where: str) -> np.ndarray:
    """One case's channels → ``(L, C)`` float32; every channel of a case has one length and
    every value is finite."""
    try:
        channels = [np.array(field.split(","), dtype=np.float64) for field in fields]
    except ValueError:
        raise DataError(
            f"{where}: a value is not a number (the archive marks missing ones '?')"
        ) from None
    lengths = {len(c) for c in channels}
    if len(lengths) > 1:
        raise DataError(f"{where}: its channels have different lengths {sorted(lengths)}")
    values = np.stack(channels, -1)
    bad = ~np.isfinite(values)
    if bad.any():
        t, c = np.argwhere(bad)[0]
        raise DataError(
            f"{where}: value {t} of channel {c} is {values[t, c]} (missing values are not "
            "supported: fill or drop the series first)"
        )
    return values.astype(np.float32)


def normalized(series: list[np.ndarray], how: str, stats=None) -> list[np.ndarray]:
    """``series`` z-normalized per series and channel (``"series"``), with the given
    per-channel ``stats`` (mean, std) (``"dataset"``), or as given (``"none"``). A constant
    channel is only centred."""
    if how == "none":
        return series
    out = []
    for s in series:
        mean, std = stats if how == "dataset" else (s.mean(0), s.std(0))
        out.append(((s - mean) / np.where(std > 0, std, 1)).astype(np.float32))
    return out


def channel_stats(series: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std over every value of every series (``(C,)`` each)."""
    values = np.concatenate(series, 0)
    return values.mean(0), values.std(0)


def load_ts_pair(
    directory: str, name: str, normalize: str | None = None, where: str = ""
) -> Dataset:
    """Dataset of ``directory/NAME_TRAIN.ts`` and ``directory/NAME_TEST.ts``."""
    where = where or f"ts:{os.path.join(directory, name)}"
    if normalize not in (None, *NORMALIZE):
        raise DataError(f"--normalize={normalize!r}: expected one of {NORMALIZE}")
    paths = [os.path.join(directory, f"{name}_{split}.ts") for split in ("TRAIN", "TEST")]
    (train, train_labels, names), (test, test_labels, _) = (read_ts(p) for p in paths)
    index = {label: i for i, label in enumerate(names)}
    if unknown := sorted(set(test_labels) - set(index)):
        raise DataError(f"{paths[1]}: class label(s) {unknown} are not among the train file's")
    if (c_train := train[0].shape[-1]) != (c_test := test[0].shape[-1]):
        raise DataError(f"{where}: train series have {c_train} channels, test series {c_test}")
    normalize = normalize or ("series" if c_train == 1 else "dataset")
    stats = channel_stats(train) if normalize == "dataset" else None
    splits = [
        ArraySource(_held(normalized(s, normalize, stats)), np.array([index[v] for v in y]), 1)
        for s, y in ((train, train_labels), (test, test_labels))
    ]
    if len(names) < 2:
        raise DataError(f"{paths[0]}: {len(names)} class; a classifier needs at least 2")
    return Dataset(where, *splits, len(names), int(c_train), 1, names, series=True)


def _held(series: list[np.ndarray]):
    """One ``(N, L, C)`` array when every series has one length (the data's one size), else
    the list."""
    return np.stack(series) if len({s.shape for s in series}) == 1 else series


def validation_split(dataset: Dataset, fold: int = 0, folds: int = FOLDS, seed: int = 0) -> Dataset:
    """Fold ``fold`` of a stratified ``folds``-fold partition of the train split becomes the
    test split and the rest the train split, for tuning without looking at the archive's test
    split (``ucr:NAME/fold{k}``; ``ucr:NAME/validation`` is fold 0). Each class of two or more
    examples is shuffled (fixed seed) and cut into runs of ``round(n / folds)`` examples (at
    least one), the last fold taking the rest, so every fold keeps each such class in training.
    """
    source, rng = dataset.train, np.random.default_rng(seed)
    labels = np.array([source[i]["label"] for i in range(len(source))])
    held = []
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        take = max(1, round(len(members) / folds)) if len(members) > 1 else 0
        stop = len(members) if fold == folds - 1 else (fold + 1) * take
        held += members[fold * take : stop].tolist()
    keep = sorted(set(range(len(source))) - set(held))
    held = sorted(held)
    splits = [
        ArraySource(_held([source[i]["image"] for i in rows]), labels[rows], 1)
        for rows in (keep, held)
    ]
    return dataclasses.replace(
        dataset, name=f"{dataset.name}/fold{fold}", train=splits[0], test=splits[1]
    )


def load_ts(path: str, normalize: str | None = None) -> Dataset:
    """``ts:PATH/NAME``: the pair ``PATH/NAME_TRAIN.ts``, ``PATH/NAME_TEST.ts``."""
    directory, name = os.path.split(path.rstrip("/"))
    for suffix in ("_TRAIN.ts", "_TEST.ts"):  # accept a file of the pair too
        name = name.removesuffix(suffix)
    if not os.path.isfile(os.path.join(directory, f"{name}_TRAIN.ts")):
        raise DataError(
            f"--dataset=ts:{path}: no {name}_TRAIN.ts in {directory or '.'} (expected "
            "ts:DIR/NAME for DIR/NAME_TRAIN.ts and DIR/NAME_TEST.ts)"
        )
    return load_ts_pair(directory, name, normalize)


def load_ucr(name: str, data_dir: str | None = None, normalize: str | None = None) -> Dataset:
    """``ucr:NAME``: the archive dataset NAME, with the archive's train/test split."""
    directory = shipped_dir(name) or cached_dir(name, data_dir)
    return load_ts_pair(directory, name, normalize, where=f"ucr:{name}")


def shipped_dir(name: str) -> str | None:
    """The folder of ``NAME_TRAIN.ts`` among an installed aeon's or sktime's data files."""
    for dist in SHIPPING:
        try:
            files = importlib.metadata.distribution(dist).files or []
        except importlib.metadata.PackageNotFoundError:
            continue
        for file in files:
            if file.name == f"{name}_TRAIN.ts" and "datasets" in file.parts:
                return os.path.dirname(str(file.locate()))
    return None


def cached_dir(name: str, data_dir: str | None) -> str:
    """``DATA_DIR/ucr/NAME``, downloading the archive's zip there when it is not yet."""
    root = data_dir or os.environ.get("TFDS_DATA_DIR", "~/tensorflow_datasets")
    directory = os.path.join(os.path.expanduser(root), "ucr", name)
    if os.path.isfile(os.path.join(directory, f"{name}_TRAIN.ts")):
        return directory
    url = ARCHIVE_URL.format(name=name)
    try:
        download(url, directory, name)
    except (OSError, zipfile.BadZipFile) as e:
        raise DataError(
            f"--dataset=ucr:{name}: not shipped by an installed aeon or sktime, not in "
            f"{directory}, and {url} could not be fetched ({e}); `pip install --no-deps "
            f"aeon==1.6.0` ships several, or put {name}_TRAIN.ts and {name}_TEST.ts in "
            f"{directory}"
        ) from None
    return directory


def download(url: str, directory: str, name: str) -> None:
    """Fetch the archive's zip of ``name`` and keep its two ``.ts`` files in ``directory``
    (written atomically: a failed download leaves nothing half-written)."""
    with urllib.request.urlopen(url, timeout=30) as response:
        archive = zipfile.ZipFile(io.BytesIO(response.read()))
    os.makedirs(directory, exist_ok=True)
    for split in ("TRAIN", "TEST"):
        members = [n for n in archive.namelist() if n.endswith(f"{name}_{split}.ts")]
        if not members:
            raise OSError(f"the zip holds no {name}_{split}.ts")
        write_atomic(os.path.join(directory, f"{name}_{split}.ts"), archive.read(members[0]))
