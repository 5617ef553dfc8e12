"""The base of the built-in TFDS builders: generated offline, stored as ArrayRecord."""

from __future__ import annotations

import fcntl
import os

import tensorflow_datasets as tfds
from etils import epath


class OfflineBuilder(tfds.core.GeneratorBasedBuilder):
    """A builder whose data is generated locally (abstract: TFDS registers only subclasses).

    Files are ArrayRecord unless the caller asks otherwise, so ``tfds.data_source`` gives
    random access without TensorFlow.
    """

    # TFDS's default `code_path` lookup imports `importlib_resources`, which TFDS does not
    # depend on; the path only serves to find an (absent) checksums file next to the builders.
    code_path = epath.Path(__file__)

    def __init__(self, *, file_format=None, **kwargs):
        super().__init__(file_format=file_format or "array_record", **kwargs)


def prepare(name: str = "procedural_digits", data_dir: str | None = None):
    """Build the registered dataset ``name`` ("dataset[/config]") in ``data_dir`` unless built.

    Processes that start together (a sweep's runs) take turns through a file lock: the first
    builds, the others find the data ready. Returns the prepared ``tfds.core.DatasetBuilder``
    (ArrayRecord files: ``tfds.data_source(name, ...)`` works without TensorFlow).
    """
    return prepare_locked(lambda: tfds.builder(name, data_dir=data_dir, file_format="array_record"))


def prepare_locked(make):
    """``make().download_and_prepare()`` as ArrayRecord under the lock :func:`prepare` takes.

    ``make`` returns a new ``tfds.core.DatasetBuilder``; it is called again under the lock so
    the builder sees what another process built. Returns that builder.
    """
    root = os.path.dirname(os.path.dirname(make().data_dir))  # .../<name>/<config>
    os.makedirs(root, exist_ok=True)
    with open(os.path.join(root, ".prepare.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        builder = make()  # made under the lock, it sees what another process built
        builder.download_and_prepare(file_format="array_record")
    return builder
