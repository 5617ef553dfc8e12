"""The base of the built-in TFDS builders: generated offline, stored as ArrayRecord."""

from __future__ import annotations

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
