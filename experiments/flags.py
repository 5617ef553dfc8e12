"""absl flags generated from a config dataclass, and a clean exit on bad input."""

from __future__ import annotations

import dataclasses
import logging as logging_std
import sys
from collections.abc import Callable

from absl import flags
from absl import logging as absl_logging


def define_flags(config_cls, help_texts: dict[str, str]) -> None:
    """One absl flag per dataclass field, typed after the field (``X | None`` → optional), with
    the field's default (None: unset, filled later by ``resolved``)."""
    from fcn_jax.config import field_types

    types = field_types(config_cls)
    for field in dataclasses.fields(config_cls):
        define = {
            bool: flags.DEFINE_boolean,
            int: flags.DEFINE_integer,
            float: flags.DEFINE_float,
            str: flags.DEFINE_string,
        }[types[field.name][0]]
        define(field.name, field.default, help_texts.get(field.name, field.name))


def config_from_flags(config_cls):
    """The config dataclass filled from the parsed flags of the same names."""
    return config_cls(**{f.name: flags.FLAGS[f.name].value for f in dataclasses.fields(config_cls)})


def run_cleanly(main: Callable, errors: tuple[type[BaseException], ...]) -> Callable:
    """Wrap an absl main so expected errors exit 1 with one line instead of a stack trace."""

    def wrapped(argv):
        quiet_libraries()
        try:
            return main(argv)
        except errors as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(1)

    return wrapped


class _QuietLibraries(logging_std.Filter):
    """Drop the INFO chatter of orbax and TFDS; keep their warnings and our own logs."""

    def filter(self, record):
        noisy = ("orbax", "tensorflow_datasets", "grain")
        return record.levelno >= logging_std.WARNING or not any(n in record.pathname for n in noisy)


def quiet_libraries() -> None:
    absl_logging.get_absl_handler().addFilter(_QuietLibraries())
