"""One run directory, and the one rule for reusing a finished run.

A run directory (``WORKDIR/runs/<name>/``) is an ordinary training workdir: ``config.json``
(the resolved config, written when training starts), ``checkpoints/`` and ``summary.json``
(written last: it marks the run finished); a run started as a process adds ``stdout.log``,
``stderr.log`` and, when it fails, ``error.txt`` (its stderr tail).

The reuse rule (:meth:`RunDir.reusable`): a finished run is reused when its recorded config
equals the wanted one on every field that affects results (``fields_where("affects_results")``).
Anything else goes back to training, which resumes an interrupted run, re-evaluates a finished
one (:meth:`RunDir.keep_training_measurements` then keeps what its training measured) or
refuses a conflicting one.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import hashlib
import os

import jax

from fcn_jax.config import TrainConfig, fields_where
from fcn_jax.outputs import read_json, write_atomic, write_json
from fcn_jax.settings import canonical_sizes

ERROR_TAIL_LINES = 40  # of stderr.log, kept in error.txt
MAX_NAME = 120  # characters of a run's directory name
# Summary fields measured while training: a re-evaluation trains no step, so it keeps those of
# the run that trained.
TRAINING_MEASUREMENTS = (
    "train_examples_per_sec",
    "train_compiles",
    "train_compile_seconds",
    "wall_time_s",
    "final_loss",
)


@dataclasses.dataclass(frozen=True)
class RunDir:
    """The files of one training run in ``path``."""

    path: str

    @classmethod
    def of(cls, workdir: str, name: str) -> RunDir:
        """Run ``name`` of an experiment directory: ``workdir/runs/<name>``."""
        return cls(os.path.join(workdir, "runs", name))

    def file(self, name: str) -> str:
        return os.path.join(self.path, name)

    @property
    def config_path(self) -> str:
        return self.file("config.json")

    @property
    def summary_path(self) -> str:
        return self.file("summary.json")

    @property
    def error_path(self) -> str:
        return self.file("error.txt")

    def is_finished(self) -> bool:
        return os.path.exists(self.summary_path)

    def status(self) -> str:
        """``finished`` (summary.json), ``failed`` (error.txt) or ``pending``."""
        if self.is_finished():
            return "finished"
        return "failed" if os.path.exists(self.error_path) else "pending"

    def summary(self) -> dict | None:
        return read_json(self.summary_path) if self.is_finished() else None

    def recorded_config(self) -> dict | None:
        """The resolved config the run recorded when it started (None before that)."""
        record = self._record()
        return None if record is None else record["config"]

    def _record(self) -> dict | None:
        """config.json (None before the run started)."""
        return read_json(self.config_path) if os.path.exists(self.config_path) else None

    def differences(self, config: TrainConfig) -> dict[str, tuple]:
        """Results-relevant fields whose recorded value differs from ``config``'s (resolved as
        training resolves it; sizes in their canonical spelling for the recorded data): field
        → (recorded, wanted); every such field when none is recorded. A field the record lacks
        (added to the config after the run) counts as unset (None)."""
        record = self._record()
        absent = None if record else object()  # no record: every field differs
        record = record or {"config": {}}
        recorded, wanted = record["config"], config.resolved()
        data = record.get("dataset") or {}
        if "spatial_dims" in data:
            recorded = canonical_sizes(recorded, data["spatial_dims"])
            with contextlib.suppress(ValueError):  # sizes of another dimensionality: differ
                wanted = wanted.for_data(data["spatial_dims"], data.get("train_examples"))
        wanted = wanted.to_dict()
        return {
            k: (recorded.get(k), wanted[k])
            for k in sorted(fields_where("affects_results"))
            if recorded.get(k, absent) != wanted[k]
        }

    def reusable(self, config: TrainConfig) -> bool:
        """THE reuse rule: finished, with the same results-relevant config (module docstring)."""
        return self.is_finished() and not self.differences(config)

    def keep_training_measurements(self, old: dict | None, new: dict) -> dict:
        """``new``, the summary of a run that went back to training; when that only
        re-evaluated ``old`` (a finished run: resumed at its last step, no step trained), with
        the training measurements of ``old``, in summary.json too."""
        resumed = new.get("resumed_from_step")
        if old is None or resumed is None or resumed != new.get("steps"):
            return new
        new = {**new, **{k: old.get(k) for k in TRAINING_MEASUREMENTS}}
        if jax.process_index() == 0:  # one writer
            write_json(self.summary_path, new)
        return new

    def write_error(self, returncode: int, seconds: float) -> str:
        """error.txt: the exit status and the tail of stderr.log; return its error line."""
        tail = _tail(self.file("stderr.log"), ERROR_TAIL_LINES)
        write_atomic(self.error_path, f"exit status {returncode} after {seconds:.0f} s\n{tail}")
        return _last_error_line(tail)

    def error_line(self) -> str:
        """The line of error.txt that says what went wrong."""
        return _last_error_line(_tail(self.error_path, ERROR_TAIL_LINES))


def run_name(label: str, seed: int, sep: str = "-") -> str:
    """A run's directory name: ``fixed-seed0`` (a comparison's), ``model=seed__seed0`` (a
    sweep's, ``sep="__"``); a hash replaces the tail of one over :data:`MAX_NAME` characters."""
    name = f"{label}{sep}seed{seed}" if label else f"seed{seed}"
    if len(name) > MAX_NAME:
        digest = hashlib.sha1(name.encode()).hexdigest()[:10]
        name = f"{name[: MAX_NAME - 11]}-{digest}"
    return name


def with_shared_cache(config, workdir: str):
    """``config`` (a config, or a dict of flag values) with ``--compilation_cache_dir`` set to
    ``workdir/xla_cache`` unless it sets one: the runs of a comparison or a sweep compile many
    of the same shapes (the test sizes, often the train sizes), so each is compiled once."""
    cache = os.path.join(os.path.abspath(workdir), "xla_cache")
    if isinstance(config, dict):
        return (
            config
            if config.get("compilation_cache_dir")
            else {**config, "compilation_cache_dir": cache}
        )
    return dataclasses.replace(config, compilation_cache_dir=config.compilation_cache_dir or cache)


def _tail(path: str, lines: int) -> str:
    if not os.path.exists(path):
        return ""
    with open(path, errors="replace") as f:
        return "".join(collections.deque(f, maxlen=lines))


def _last_error_line(text: str) -> str:
    """The last ``error: ...`` line of a run's output (the entry points' one-line errors), else
    its last non-blank line."""
    lines = [line for line in text.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    return (errors or lines or ["(no output)"])[-1]
