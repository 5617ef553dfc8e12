"""The training loop: ``train(setup, workdir) -> Trained`` runs or resumes the loop of a
:class:`~fcn_jax.setup.Setup` (see :mod:`fcn_jax.run` for a whole run).

Batches come in a declared, finite set of shapes (buckets); the train step is compiled once
per shape. The loop checkpoints model, optimizer, step and loader position, resumes from
``workdir`` and stops on a non-finite loss. Outputs in ``workdir``: config.json,
metrics.jsonl, tensorboard/ and checkpoints/.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import sys
import tempfile
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
from absl import logging

from fcn_jax import sharding
from fcn_jax.checkpoint import Checkpointer, CheckpointError
from fcn_jax.config import fields_where
from fcn_jax.outputs import MetricsWriter, read_json, write_json
from fcn_jax.settings import canonical_sizes
from fcn_jax.setup import Setup
from fcn_jax.steps import CompiledStep

# ``evaluate(state) -> {size: {"accuracy", "loss", "examples", ...}}``: a periodic evaluation.
Evaluate = Callable[[dict], dict[str, dict]]
# The records a run's final evaluation writes at its last step.
FINAL_KINDS = ("eval", "test", "tta")


class NonFiniteLossError(RuntimeError):
    """Training produced a non-finite loss; the last good checkpoint is kept."""


def prepare_workdir(workdir: str) -> None:
    """Create the run directory (made only once the config and data are valid, so a run that
    fails validation leaves none behind) and check it is writable: any OS error is one line
    naming ``--workdir``."""
    try:
        os.makedirs(workdir, exist_ok=True)
        with tempfile.TemporaryFile(dir=workdir):
            pass
    except OSError as e:
        raise ValueError(f"--workdir={workdir}: {e.strerror or e}") from e


def _check_resumable(saved: dict, setup: Setup, workdir: str) -> None:
    """A checkpoint made with other results-relevant flags is an error; sizes compare in their
    canonical spelling (``fixed:28`` is ``fixed:28x28`` on 2-D data)."""
    current, resumable = setup.config.to_dict(), fields_where("resumable")
    saved = canonical_sizes(saved, setup.dataset.spatial_dims)
    for key, value in saved.items():
        if key not in resumable and current.get(key) != value:
            raise CheckpointError(
                f"{workdir} holds a run with --{key}={value!r} but this run has "
                f"--{key}={current.get(key)!r}: use a new --workdir or the same flags"
            )


class _Progress:
    """A tqdm bar on a terminal, plain log lines otherwise."""

    def __init__(self, total: int, start: int):
        self._bar = None
        if sys.stderr.isatty():
            from tqdm import tqdm

            self._bar = tqdm(total=total, initial=start, unit="step", dynamic_ncols=True)

    def update(self, step: int, n: int, values: dict) -> None:
        text = " ".join(f"{k}={v:.4g}" for k, v in values.items())
        if self._bar is not None:
            self._bar.update(n)
            self._bar.set_postfix_str(text)
        else:
            logging.info("step %d: %s", step, text)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


@dataclasses.dataclass
class Trained:
    """What the training loop hands to evaluation."""

    state: dict  # on the devices
    writer: MetricsWriter  # still open: evaluation adds its records
    resumed_from: int | None
    final_loss: float | None
    seen: dict[str, int]  # examples, pixels, padded_pixels over the whole run
    examples: int  # trained by this loop (after a resume: since it)
    train_seconds: float  # the loop, without compiles and first runs (_Timer)
    checkpoint_seconds: float


def train(setup: Setup, workdir: str, evaluate: Evaluate | None = None) -> Trained:
    """Run (or resume) the training loop of ``setup`` in ``workdir``: config.json, train
    metrics, checkpoints (model, optimizer, step, loader position). With ``--eval_every=N``,
    ``evaluate(state)`` runs every N steps before that step's checkpoint (the last step is
    left to the final evaluation) and its results are written as ``eval`` records."""
    config, loader, mesh = setup.config, setup.loader, setup.mesh
    total_steps, train_step = setup.total_steps, setup.train_step
    checkpointer = Checkpointer(workdir, writer=True)
    state, start_step, seen = _restore_or_start(setup, checkpointer, workdir)
    _write_config(setup, workdir)
    state = jax.device_put(state, sharding.replicated(mesh))
    treedef, leaves = jax.tree.structure(state), jax.tree.leaves(state)
    if config.precompile:
        for bucket in setup.buckets:
            batch = setup.policy.batch_size(config.batch_size, bucket, mesh.size)
            train_step.compile(leaves, loader.abstract_input(bucket, batch))
    # A finished run evaluates again: its final records are rewritten, not repeated.
    final_kinds = FINAL_KINDS if start_step == total_steps else ()
    writer = MetricsWriter(
        workdir, resume_step=start_step, rewritten=final_kinds, writer=jax.process_index() == 0
    )
    meta = {"seed": config.seed, "model_spec": setup.model.spec.to_dict()}
    eval_every = (config.eval_every or 0) if evaluate else 0

    def seen_so_far() -> dict:
        """Examples and pixels over the whole run: before a resume plus this loader's."""
        return {k: seen[k] + loader.tally[k] for k in seen}

    def check_finite(step: int) -> None:
        bad = int(jax.device_get(jax.tree.unflatten(treedef, leaves)["bad_step"]))
        if bad:
            last = checkpointer.latest_step()
            raise NonFiniteLossError(
                f"non-finite loss at step {bad}; stopped at step {step}; the last good "
                f"checkpoint (step {last}) is kept in {checkpointer.directory}"
            )

    log = _TrainLog(setup, writer, start_step)
    timer = _Timer(train_step, loader)
    for step in range(start_step + 1, total_steps + 1):
        leaves, metrics = train_step(leaves, loader.step_input())
        log.add(metrics)
        if step % config.log_every == 0 or step == total_steps:
            check_finite(step)
            log.write(step)
        if eval_every and step % eval_every == 0 and step < total_steps:
            with timer.apart("eval"):
                for size, result in evaluate(jax.tree.unflatten(treedef, leaves)).items():
                    writer.write(step, "eval", {"size": size, **result})
        if step % config.checkpoint_every == 0 or step == total_steps:
            check_finite(step)
            with timer.apart("checkpoint"):
                checkpointer.save(
                    step,
                    jax.tree.unflatten(treedef, leaves),
                    {**meta, "step": step, "loader": loader.get_state(), "seen": seen_so_far()},
                )
    log.close()
    state = jax.block_until_ready(jax.tree.unflatten(treedef, leaves))
    return Trained(
        state=state,
        writer=writer,
        resumed_from=start_step or None,
        final_loss=log.final_loss,
        seen=seen_so_far(),
        examples=loader.tally["examples"],
        train_seconds=timer.train_seconds(),
        checkpoint_seconds=timer.apart_seconds["checkpoint"],
    )


class _TrainLog:
    """The train records: metrics of the steps since the last record, averaged, with the
    learning rate, to metrics.jsonl and the progress bar."""

    def __init__(self, setup: Setup, writer: MetricsWriter, start_step: int):
        # Compiled here, before the loop's clock starts: the schedule's first eager call
        # traced its ops, a cost the loop paid once per run.
        self._schedule = jax.jit(setup.schedule)
        with sharding.planned_copies():  # the step number
            self._schedule(start_step)
        self._writer, self._progress = writer, _Progress(setup.total_steps, start_step)
        self._sums, self._count, self._last = None, 0, start_step
        last = writer.last("train")  # when resuming a finished run there is no new loss
        self.final_loss = last["loss"] if last else None

    def add(self, metrics: dict) -> None:
        # One asynchronous dispatch a step, summed on the device; summing the window at log
        # time took one eager dispatch per metric and step, which a fast step (a GPU's) did
        # not hide.
        self._sums = metrics if self._sums is None else _add(self._sums, metrics)
        self._count += 1

    def write(self, step: int) -> None:
        with sharding.planned_copies():  # the step number, once a record
            rate = self._schedule(step - 1)  # optax counts from 0
        sums, rate = jax.device_get((self._sums, rate))
        values = {k: float(v) / self._count for k, v in sums.items()}
        values["learning_rate"] = float(rate)
        self._writer.write(step, "train", values)
        self._progress.update(step, step - self._last, values)
        self.final_loss, self._sums, self._count, self._last = values["loss"], None, 0, step

    def close(self) -> None:
        self._progress.close()


@functools.partial(jax.jit, donate_argnums=0)
def _add(sums: dict, metrics: dict) -> dict:
    return jax.tree.map(jnp.add, sums, metrics)


class _Timer:
    """The loop's training seconds: its wall time (checkpoints included) less the train
    compiles made in it (not --precompile's, made before), each executable's first run (its
    one-time setup) and the periodic evaluations."""

    def __init__(self, train_step: CompiledStep, loader):
        self._step, self._loader = train_step, loader
        self._start = time.perf_counter()
        self._compiled_before = self._compiled()
        self.apart_seconds = {"eval": 0.0, "checkpoint": 0.0}

    def _compiled(self) -> float:
        step = self._step
        return step.compile_seconds + step.first_run_seconds + self._loader.compile_seconds

    @contextlib.contextmanager
    def apart(self, what: str):
        start = time.perf_counter()
        yield
        self.apart_seconds[what] += time.perf_counter() - start

    def train_seconds(self) -> float:
        compiles = self._compiled() - self._compiled_before
        return time.perf_counter() - self._start - compiles - self.apart_seconds["eval"]


def _restore_or_start(setup: Setup, checkpointer: Checkpointer, workdir: str):
    """(state, step, seen counts): the latest checkpoint's, the loader moved to its position;
    else the fresh state at step 0. A checkpoint made with other flags is an error."""
    seen = {"examples": 0, "pixels": 0, "padded_pixels": 0}
    if checkpointer.latest_step() is None:
        return setup.state, 0, seen
    config_path = os.path.join(workdir, "config.json")
    if os.path.exists(config_path):
        _check_resumable(read_json(config_path)["config"], setup, workdir)
    abstract = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), setup.state)
    state, meta = checkpointer.restore(abstract)
    setup.loader.set_state(meta["loader"])
    logging.info("resumed from step %d of %s", meta["step"], checkpointer.directory)
    return state, int(meta["step"]), meta.get("seen", seen)


def _write_config(setup: Setup, workdir: str) -> None:
    """config.json: the resolved config and what it resolved to (model, sizes, dataset);
    written by process 0."""
    if jax.process_index() != 0:
        return
    write_json(
        os.path.join(workdir, "config.json"),
        {
            "config": setup.config.to_dict(),
            "model_spec": setup.model.spec.to_dict(),
            "train_size": setup.train_size,
            "buckets": [list(b) for b in setup.buckets],
            "dataset": setup.dataset.facts(),
            "total_steps": setup.total_steps,
            "recipe_dropped": setup.config.recipe_dropped(),
        },
    )
