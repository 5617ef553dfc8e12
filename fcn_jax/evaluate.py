"""Evaluation: one test size (sharded over processes), a run's grid of test sizes with its
summary, BatchNorm recalibration per size, and test-time averaging of logits over sizes."""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

import jax
import numpy as np
from absl import logging
from flax import nnx
from jax.sharding import Mesh

from fcn_jax.cam import pointing_game
from fcn_jax.data import EvalLoader, Source, Subset
from fcn_jax.outputs import write_json
from fcn_jax.sharding import to_global
from fcn_jax.sizes import format_size
from fcn_jax.steps import TRAIN_KEYS, CompiledStep, make_logits_step

if TYPE_CHECKING:  # the training loop imports this module
    from fcn_jax.train import Setup, Trained

# Batches of training images whose BatchNorm statistics are averaged per test size.
RECALIBRATION_BATCHES = 8

EVAL_KEYS = ("image", "label", "sizes", "valid", "bbox")


def evaluate(step: CompiledStep, state, source: Source, size, **kw) -> dict[str, float]:
    """Accuracy and loss on ``source`` at test ``size`` (None: each example's own size); the
    keyword arguments are :func:`process_totals`'s. Every process evaluates its own rows and
    the sums of all processes are combined.

    Returns ``{"accuracy", "loss", "examples"}`` plus ``"pointing_game"`` when the source has
    bounding boxes.
    """
    process = (jax.process_index(), jax.process_count())
    totals = sum_over_processes(process_totals(step, state, source, size, process=process, **kw))
    return summarize(totals)


def process_totals(
    step: CompiledStep,
    state,
    source: Source,
    size: Sequence[int] | None,
    *,
    mode: str,
    batch_size: int,
    min_size: Sequence[int],
    mesh: Mesh,
    process: tuple[int, int],
    buckets=None,
) -> dict[str, float]:
    """Sums over one process's rows of every (global, ``batch_size``) batch: ``{"count",
    "correct", "loss"}`` plus ``"hits"`` (pointing game) when the source has boxes.

    ``process`` is ``(index, count)``; only this process's rows are read from ``source``.
    """
    loader = _eval_loader(source, size, mode, batch_size, buckets, min_size, process)
    keys = ("count", "correct", "loss", *(("hits",) if source.has_bbox else ()))
    totals = dict.fromkeys(keys, 0.0)
    per_row = []  # fetched at the end: no host sync per batch
    for batch in loader:
        inputs = to_global(batch, mesh, EVAL_KEYS)
        out = step(state, inputs)
        mine = own_rows(inputs["valid"])
        per_row.append((out["correct"], out["loss"], mine))
        totals["count"] += float(batch["valid"].sum())
        if "cmap" in out:
            cmap, out_sizes = np.asarray(out["cmap"])[mine], np.asarray(out["out_sizes"])[mine]
            hit = pointing_game(cmap, out_sizes, batch["label"], batch["bbox"], batch["sizes"])
            totals["hits"] += float((hit & batch["valid"]).sum())
    for correct, loss, mine in jax.device_get(per_row):
        totals["correct"] += float(correct[mine].sum())
        totals["loss"] += float(loss[mine].sum())
    return totals


def _eval_loader(source, size, mode, batch_size, buckets, min_size, process) -> EvalLoader:
    """The batches of this process's rows (``process`` = (index, count)) of ``source``."""
    index, count = process
    return EvalLoader(
        source,
        size,
        mode,
        batch_size,
        buckets,
        min_size=min_size,
        process_index=index,
        process_count=count,
    )


def process_logits(
    step: CompiledStep,
    state,
    source: Source,
    size: Sequence[int],
    *,
    mode: str,
    batch_size: int,
    min_size: Sequence[int],
    mesh: Mesh,
    process: tuple[int, int],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One process's rows of every (global, ``batch_size``) batch at test ``size``, padding
    rows included, in the loader's order (the same at every size): logits (N, K) float32 of
    ``step`` (a :func:`~fcn_jax.steps.logits_step`), labels (N,) and valid (N,) bool."""
    loader = _eval_loader(source, size, mode, batch_size, None, min_size, process)
    logits, labels, valid = [], [], []
    for batch in loader:
        inputs = to_global(batch, mesh, ("image", "sizes", "valid"))
        logits.append((step(state, inputs)["logits"], own_rows(inputs["valid"])))
        labels.append(batch["label"])
        valid.append(batch["valid"])
    fetched = jax.device_get(logits)  # once at the end: no host sync per batch
    rows = np.concatenate([z[mine] for z, mine in fetched])
    return rows, np.concatenate(labels), np.concatenate(valid).astype(bool)


def averaged_logits(step: CompiledStep, state_at, source: Source, sizes, **kw):
    """:func:`process_logits` (its keyword arguments) with the logits averaged over test
    ``sizes`` per row: (N, K) float32, labels (N,), valid (N,). ``state_at(size)`` is the
    state to test at ``size`` (BatchNorm statistics recalibrated there, or the same)."""
    total = None
    for size in sizes:
        logits, labels, valid = process_logits(step, state_at(size), source, size, **kw)
        total = logits if total is None else total + logits
    return total / len(sizes), labels, valid


def logit_totals(logits: np.ndarray, labels: np.ndarray, valid: np.ndarray) -> dict[str, float]:
    """Sums over the valid rows of logits (N, K) with labels (N,): ``{"count", "correct",
    "loss"}`` (cross-entropy in float64 on the host; padding rows count for nothing)."""
    z = logits.astype(np.float64)
    top = z.max(-1)
    loss = top + np.log(np.exp(z - top[:, None]).sum(-1)) - z[np.arange(len(z)), labels]
    correct = z.argmax(-1) == labels
    return {
        "count": float(valid.sum()),
        "correct": float(correct[valid].sum()),
        "loss": float(loss[valid].sum()),
    }


def evaluate_tta(step: CompiledStep, state_at, source: Source, sizes, **kw) -> dict[str, float]:
    """Accuracy and loss of each example's logits averaged over test ``sizes`` (see
    :func:`averaged_logits`; keywords: ``mode``, ``batch_size``, ``min_size``, ``mesh``):
    ``{"accuracy", "loss", "examples"}``. Each process averages its own rows (the same rows
    at every size) and the processes' sums are combined."""
    process = (jax.process_index(), jax.process_count())
    totals = logit_totals(*averaged_logits(step, state_at, source, sizes, process=process, **kw))
    return summarize(sum_over_processes(totals))


def own_rows(array: jax.Array) -> np.ndarray:
    """Indices of this process's rows in a batch-sharded global array, in this process's order
    (the order of the rows it fed to :func:`~fcn_jax.sharding.to_global`)."""
    n = array.shape[0]
    spans = sorted({s.index[0].indices(n)[:2] for s in array.addressable_shards})
    return np.concatenate([np.arange(a, b) for a, b in spans])


def sum_over_processes(totals: dict[str, float]) -> dict[str, float]:
    """Every process's ``totals`` summed (the identity on one process)."""
    if jax.process_count() == 1:
        return totals
    from jax.experimental import multihost_utils

    values = np.asarray(list(totals.values()), np.float32)
    summed = multihost_utils.process_allgather(values).sum(0)
    return dict(zip(totals, map(float, summed), strict=True))


def summarize(totals: dict[str, float]) -> dict[str, float]:
    """Sums → ``{"accuracy", "loss", "examples"}`` (+ ``"pointing_game"``)."""
    count = max(totals["count"], 1.0)
    result = {
        "accuracy": totals["correct"] / count,
        "loss": totals["loss"] / count,
        "examples": int(totals["count"]),
    }
    if "hits" in totals:
        result["pointing_game"] = totals["hits"] / count
    return result


def recalibration_graphdef(graphdef, state) -> nnx.GraphDef | None:
    """A train-mode graph whose BatchNorms keep exactly the last batch's statistics
    (momentum 0), or None when the model has no BatchNorm."""
    model = nnx.merge(graphdef, state["params"], state["rest"])
    norms = [m for _, m in nnx.iter_modules(model) if isinstance(m, nnx.BatchNorm)]
    if not norms:
        return None
    for m in norms:
        m.momentum = 0.0
    model.train()
    return nnx.split(model, nnx.Param, ...)[0]


def recalibrate_bn(
    stats_fn,
    state,
    train: Source,
    size: Sequence[int],
    *,
    batches: int,
    batch_size: int,
    min_size: Sequence[int],
    mesh: Mesh,
):
    """``state`` with BatchNorm statistics re-estimated on training images resized to ``size``
    (the average of ``batches`` batches' statistics), as Mix & Match does per test size."""
    subset = Subset(train, batches * batch_size)  # whole batches only: no padding rows
    loader = EvalLoader(
        subset,
        size,
        "resize",
        batch_size,
        min_size=min_size,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
    )
    stats = [stats_fn(state, to_global(b, mesh, TRAIN_KEYS)) for b in loader]
    mean_stats = jax.tree.map(lambda *xs: sum(xs) / len(xs), *stats)
    return {**state, "rest": mean_stats}


def batch_stats_step(state, batch, *, graphdef):
    """The BatchNorm statistics of one batch (with a momentum-0 train-mode graph)."""
    model = nnx.merge(graphdef, state["params"], state["rest"])
    model(batch["image"], batch["sizes"])
    return nnx.state(model, nnx.Not(nnx.Param))


def eval_kwargs(setup: Setup, batch_size: int) -> dict:
    """:func:`evaluate`'s batching keywords for ``setup``: any ``batch_size``, rounded up to a
    multiple of the devices (the padding rows count for nothing)."""
    n = setup.mesh.size
    return dict(batch_size=-(-batch_size // n) * n, min_size=setup.model.min_size, mesh=setup.mesh)


def evaluate_run(setup: Setup, trained: Trained, workdir: str, start_time: float) -> dict:
    """Evaluate a trained run: the test split at its own sizes, every test size of the grid,
    then (``--tta_sizes``) the logits averaged over sizes; write eval records, summary.json
    and (2-D) eval_heatmap.png; return the summary."""
    config, state = setup.config, trained.state
    test = setup.dataset.test
    test = Subset(test, config.eval_examples) if config.eval_examples else test
    eval_kw = eval_kwargs(setup, config.eval_batch_size)
    native = evaluate(setup.eval_step, state, test, None, mode="resize", **eval_kw)
    recal = _recalibrator(setup, state, eval_kw)
    grid = {}
    for size in setup.eval_sizes:
        size_state = recal(size) if recal else state
        grid[format_size(size)] = evaluate(
            setup.eval_step, size_state, test, size, mode=config.eval_mode, **eval_kw
        )
    tta, tta_compiles = _tta(setup, state, test, recal, eval_kw) if setup.tta_sizes else ({}, 0)
    for key, result in grid.items():
        trained.writer.write(setup.total_steps, "eval", {"size": key, **result})
    trained.writer.write(setup.total_steps, "test", native)
    if tta:
        trained.writer.write(setup.total_steps, "tta", tta)
    trained.writer.close()
    eval_compiles = setup.eval_step.compiles + (recal.compiles if recal else 0) + tta_compiles
    summary = run_summary(setup, trained, native, grid, eval_compiles)
    if tta:
        summary.update(tta_sizes=tta["sizes"], tta_accuracy=tta["accuracy"], tta_loss=tta["loss"])
    summary["wall_time_s"] = time.perf_counter() - start_time
    if jax.process_index() == 0:
        write_json(os.path.join(workdir, "summary.json"), summary)
        if setup.dataset.spatial_dims == 2 and len(grid) > 1:
            from fcn_jax.plots import heatmap

            title = f"{config.model} trained on {setup.train_size}"
            heatmap(summary["eval_accuracy"], os.path.join(workdir, "eval_heatmap.png"), title)
    return summary


def _tta(setup: Setup, state, test: Source, recal, eval_kw) -> tuple[dict, int]:
    """``--tta_sizes``: the averaged-logits result with its ``sizes`` (the tta record), and the
    compiles of its logits step (one per size: each is one batch shape)."""
    step = make_logits_step(setup.eval_graphdef, **setup.steps_kw)
    state_at = recal or (lambda size: state)
    mode = setup.config.eval_mode
    result = evaluate_tta(step, state_at, test, setup.tta_sizes, mode=mode, **eval_kw)
    return {"sizes": [format_size(s) for s in setup.tta_sizes], **result}, step.compiles


def run_summary(setup: Setup, trained: Trained, native: dict, grid: dict, eval_compiles: int):
    """The summary.json of a run: accuracies, compiles, throughput and what was trained."""
    train_step, loader, seen = setup.train_step, setup.loader, trained.seen
    seconds, examples = trained.train_seconds, trained.examples
    summary = {
        "test_accuracy": native["accuracy"],
        "test_loss": native["loss"],
        "eval_accuracy": {k: r["accuracy"] for k, r in grid.items()},
        "eval_loss": {k: r["loss"] for k, r in grid.items()},
        "eval_mode": setup.config.eval_mode,
        "train_compiles": train_step.compiles,
        "train_compile_seconds": train_step.compile_seconds,
        "train_compile_shapes": [list(s) for s in train_step.shapes],
        "eval_compiles": eval_compiles,
        "buckets": [list(b) for b in setup.buckets],
        "train_size": setup.train_size,
        "padding_efficiency": loader.padding_efficiency,
        "train_examples_per_sec": examples / seconds if examples and seconds > 0 else None,
        "loader_examples_per_sec": loader.examples_per_second,
        "checkpoint_seconds": trained.checkpoint_seconds,
        "input_pipeline": loader.pipeline,
        "steps": setup.total_steps,
        "resumed_from_step": trained.resumed_from,
        "final_loss": trained.final_loss,
        "train_examples": seen["examples"],
        "train_pixels": seen["pixels"],
        "train_padded_pixels": seen["padded_pixels"],
        "num_params": int(sum(p.size for p in jax.tree.leaves(trained.state["params"]))),
        "devices": setup.mesh.size,
        "device_kind": jax.devices()[0].device_kind,
        "dataset": setup.dataset.name,
        "model": setup.config.model,
    }
    if "pointing_game" in native:
        summary["pointing_game"] = native["pointing_game"]
        summary["eval_pointing_game"] = {k: r["pointing_game"] for k, r in grid.items()}
    return summary


class _Recalibrator:
    """Per test size: the state with BatchNorm statistics re-estimated at that size."""

    def __init__(self, stats_step, state, dataset, eval_kw):
        self._step, self._state, self._dataset, self._kw = stats_step, state, dataset, eval_kw

    @property
    def compiles(self) -> int:
        return self._step.compiles

    def __call__(self, size):
        return recalibrate_bn(
            self._step,
            self._state,
            self._dataset.train,
            size,
            batches=RECALIBRATION_BATCHES,
            **self._kw,
        )


def _recalibrator(setup: Setup, state, eval_kw) -> _Recalibrator | None:
    """Per-size BatchNorm recalibration when ``--recalibrate_bn`` asks and the model has any."""
    if not setup.config.recalibrate_bn:
        return None
    recal_graphdef = recalibration_graphdef(setup.graphdef, state)
    if recal_graphdef is None:
        logging.warning("--recalibrate_bn: the model has no BatchNorm; nothing to recalibrate")
        return None
    fn = functools.partial(batch_stats_step, graphdef=recal_graphdef)
    stats_step = CompiledStep(fn, "bn-stats", donate=False, **setup.steps_kw)
    return _Recalibrator(stats_step, state, setup.dataset, eval_kw)
