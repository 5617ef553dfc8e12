"""The project's logging: messages go through absl's ``logging`` (the entry points are absl
apps, and its handler prints every record, the libraries' through the standard library's root
logger too). This module holds the filters on that handler, the one place that works with the
standard library's logging objects underneath.

By default a command's terminal shows the project's lines, the progress bar and real warnings:
:func:`quiet_libraries` drops the libraries' chatter, ``--verbosity=1`` (absl's flag: debug)
brings it back.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable

from absl import logging as absl_logging

# Libraries whose INFO lines are chatter to a user: orbax's per-save lines, TFDS's and Grain's
# progress notes (matched on the file a record comes from: some log through absl).
_CHATTY = ("orbax", "tensorflow_datasets", "grain")
# JAX's INFO lines (its backend probing: "Unable to initialize backend 'tpu'" on every run
# without a TPU); its warnings, e.g. a GPU it cannot use, stay.
_JAX_LOGGER = "jax"


def _from(record: logging.LogRecord, package: str) -> bool:
    """Whether ``record`` was logged by a file of ``package`` (a directory of that name on its
    path: a checkout under, say, ``/home/grainger`` is not Grain)."""
    return f"{os.sep}{package}{os.sep}" in record.pathname


class _QuietLibraries(logging.Filter):
    """Drop the libraries' INFO and DEBUG records, and orbax's warnings: those it logs on
    every restore of this project's checkpoints (read-only manager options, "Metadata file
    does not exist") change nothing for a user, and a failed save or restore is this
    project's own one-line error."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR:
            return True
        if _from(record, "orbax"):
            return False
        if record.levelno >= logging.WARNING:
            return True
        library = any(_from(record, name) for name in _CHATTY)
        return not (library or record.name.split(".")[0] == _JAX_LOGGER)


_quiet = _QuietLibraries()


def quiet_libraries(verbosity: int = 0) -> None:
    """Hide the libraries' chatter from the terminal at absl ``--verbosity`` 0 or below (the
    default); at 1 or above show everything. Idempotent."""
    handler = absl_logging.get_absl_handler()
    if verbosity >= 1:
        handler.removeFilter(_quiet)
    elif _quiet not in handler.filters:
        handler.addFilter(_quiet)


class _DropOrbaxErrors(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno < logging.ERROR or not _from(record, "orbax")


@contextlib.contextmanager
def orbax_errors_dropped():
    """Around a save or restore whose failure the caller reports in one line: orbax's
    threads log the same failure with tracebacks (absl), and asyncio its failed tasks."""
    asyncio_log, absl_log = logging.getLogger("asyncio"), logging.getLogger("absl")
    level, drop = asyncio_log.level, _DropOrbaxErrors()
    asyncio_log.setLevel(logging.CRITICAL)
    absl_log.addFilter(drop)
    try:
        yield
    finally:
        asyncio_log.setLevel(level)
        absl_log.removeFilter(drop)


class _Prefix(logging.Filter):
    def __init__(self, prefix: Callable[[], str]):
        super().__init__()
        self._prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = f"{self._prefix()}{record.msg}"
        return True


def prefix_lines(prefix: Callable[[], str]) -> None:
    """Start every printed log line with ``prefix()`` (e.g. the process of a multi-host run)."""
    absl_logging.get_absl_handler().addFilter(_Prefix(prefix))
