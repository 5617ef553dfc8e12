"""absl flags generated from a config dataclass, and a clean exit on bad input."""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Callable

from absl import flags

# Runs are `python -m experiments.train`, started in the project root: this checkout's.
PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def define_flags(config_cls, help_texts: dict[str, str], defaults=None) -> None:
    """One absl flag per dataclass field, typed after the field (``X | None`` → optional), with
    the field's value in ``defaults`` (an instance; default: the dataclass's defaults; None:
    unset, filled later by ``resolved``)."""
    from fcn_jax.config import field_types

    types = field_types(config_cls)
    for field in dataclasses.fields(config_cls):
        define = {
            bool: flags.DEFINE_boolean,
            int: flags.DEFINE_integer,
            float: flags.DEFINE_float,
            str: flags.DEFINE_string,
        }[types[field.name][0]]
        default = field.default if defaults is None else getattr(defaults, field.name)
        define(field.name, default, help_texts.get(field.name, field.name))


CLUSTER_HELP = {
    "coordinator_address": "with --distributed: HOST:PORT of process 0 (default: JAX detects "
    "the cluster: Slurm, Open MPI, Cloud TPU)",
    "num_processes": "with --distributed and --coordinator_address: the number of processes",
    "process_id": "with --distributed and --coordinator_address: this process's index",
    "distributed_timeout_s": "with --distributed: seconds to wait for the other processes at "
    "start-up, and for a lost one's heartbeat, before exiting with an error",
}


def define_cluster_flags() -> None:
    """The flags of :class:`fcn_jax.process.Cluster`, for every command that trains."""
    from fcn_jax.process import Cluster

    define_flags(Cluster, CLUSTER_HELP)


def setup_process_from_flags(config) -> None:
    """:func:`fcn_jax.process.setup_process` with the cluster flags: at the top of ``main``,
    before any JAX call."""
    from fcn_jax.process import Cluster, setup_process

    setup_process(config, config_from_flags(Cluster))


def base_flags(config_cls) -> dict:
    """The fields of ``config_cls`` given explicitly on the command line (a sweep or suite
    gives them to every run)."""
    f = flags.FLAGS
    return {x.name: f[x.name].value for x in dataclasses.fields(config_cls) if f[x.name].present}


def config_from_flags(config_cls):
    """The config dataclass filled from the parsed flags of the same names."""
    return config_cls(**{f.name: flags.FLAGS[f.name].value for f in dataclasses.fields(config_cls)})


def run_cleanly(
    main: Callable, errors: tuple[type[BaseException], ...], supervised: bool = False
) -> Callable:
    """Wrap an absl main so expected errors (``errors``, and a failed write of a result or
    checkpoint: :class:`fcn_jax.outputs.WriteError`) exit 1 with one line instead of a stack
    trace (naming the process in a multi-host run). A multi-host run that lost a process exits 1
    with one line naming it, at once: JAX's own shutdown would wait for the lost process. With
    ``--distributed`` a command that starts JAX's distributed runtime (``supervised``) runs as
    the child of a supervisor (:func:`fcn_jax.process.supervise`), which reports a lost
    coordinator the same way and prints the child's one-line error once the child is gone, so
    that it is always the last line."""

    def wrapped(argv):
        from fcn_jax.logs import quiet_libraries
        from fcn_jax.outputs import WriteError
        from fcn_jax.process import (
            label,
            lost_process_error,
            report_last,
            several_processes,
            supervise,
            timeout_s,
        )

        f = flags.FLAGS
        if supervised and f.distributed:  # before any JAX call: see supervise
            ids = (f[k].value if k in f else None for k in ("process_id", "num_processes"))
            status = supervise(*ids)
            if status is not None:
                sys.exit(status)
        quiet_libraries(f.verbosity)  # --verbosity=1 shows the libraries' lines too
        try:
            return main(argv)
        except Exception as e:
            lost = lost_process_error(e, timeout_s())
            if lost is not None:  # exit at once: JAX's shutdown would wait for the lost one
                report_last(f"error: {label()}{lost}")  # the supervisor prints it last
                sys.stdout.flush()
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stderr.fileno())  # less noise
                os._exit(1)
            if not isinstance(e, (*errors, WriteError)):
                raise
            report_last(f"error: {label()}{e}")
            if several_processes():  # an error of this process alone (a held workdir, its
                # disk): JAX's shutdown would wait minutes for the others at a barrier
                sys.stdout.flush()
                os._exit(1)
            sys.exit(1)

    return wrapped
