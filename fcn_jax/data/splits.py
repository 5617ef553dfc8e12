"""``--train_split`` and ``--test_split``: which examples a run trains and tests on, written as
TFDS writes a split (https://www.tensorflow.org/datasets/splits): ``NAME`` or
``NAME[FROM:TO]``, the bounds counts (``train[:50000]``, ``train[50000:]``, ``train[-1000:]``)
or percents (``train[:80%]``). Every kind of data takes them: its splits are ``train`` and
``test`` (a TFDS dataset: the splits it has), so ``--train_split=train[:50000]
--test_split=train[50000:]`` holds MNIST's last 10 000 training images out for validation.

A slice is parsed and checked here, once, by TFDS's own parser (``ReadInstruction``, which
needs no TensorFlow), so that a TFDS dataset, which is given the slice itself, and the other
kinds select the same examples. Unset, a run trains on ``train`` and tests on ``test`` (a TFDS
dataset without ``test``: ``validation``).
"""

from __future__ import annotations

import dataclasses

from fcn_jax.data.sources import DataError, Dataset, Slice

FORM = "SPLIT or SPLIT[FROM:TO] with counts or percents, e.g. train[:50000], train[80%:]"


@dataclasses.dataclass(frozen=True)
class SplitSlice:
    """One split's examples ``start`` to ``stop`` (exclusive), as ``text`` asked."""

    text: str
    name: str
    start: int
    stop: int


def resolve_split(text: str, flag: str, lengths: dict[str, int]) -> SplitSlice:
    """The examples ``--FLAG=TEXT`` selects from splits of ``lengths`` (name → examples).

    Raises:
      DataError: one line naming the flag and value: malformed, two splits joined with ``+``,
        an unknown split, bounds out of range, or no examples selected.
    """
    from tensorflow_datasets.core import ReadInstruction  # the parser only: no TensorFlow

    where = f"--{flag}={text}"
    try:
        instruction = ReadInstruction.from_spec(text)
    except (ValueError, AssertionError, AttributeError):
        raise DataError(f"{where}: malformed; expected {FORM}") from None
    if not isinstance(instruction, ReadInstruction):  # splits joined with '+'
        raise DataError(f"{where}: one split only (no '+'); expected {FORM}")
    name = instruction.split_name
    if name not in lengths:
        raise DataError(f"{where}: no split {name!r}; this dataset has {', '.join(lengths)}")
    n = lengths[name]
    infos = {name: _Info(n)}
    try:
        (absolute,) = instruction.to_absolute(infos)
    except ValueError:
        raise DataError(f"{where}: out of range: the {name} split has {n} examples") from None
    start = 0 if absolute.from_ is None else absolute.from_
    stop = n if absolute.to is None else absolute.to
    if stop <= start:
        raise DataError(f"{where}: selects no examples (the {name} split has {n})")
    return SplitSlice(text, name, start, stop)


@dataclasses.dataclass(frozen=True)
class _Info:
    """What ``ReadInstruction.to_absolute`` reads of a split: its size."""

    num_examples: int


def select_splits(dataset: Dataset, train_split: str | None, test_split: str | None) -> Dataset:
    """``dataset`` training on ``train_split`` and testing on ``test_split`` (None: its own
    train and test split), each a split of it, whole or sliced."""
    if train_split is None and test_split is None:
        return dataset
    sources = {"train": dataset.train, "test": dataset.test}
    lengths = {name: len(source) for name, source in sources.items()}
    picked = []
    for flag, text, default in (
        ("train_split", train_split, "train"),
        ("test_split", test_split, "test"),
    ):
        if text is None:
            picked.append(sources[default])
            continue
        s = resolve_split(text, flag, lengths)
        source = sources[s.name]
        whole = (s.start, s.stop) == (0, len(source))
        picked.append(source if whole else Slice(source, s.start, s.stop))
    return dataclasses.replace(dataset, train=picked[0], test=picked[1])
