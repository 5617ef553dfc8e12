"""Evaluation: one test size (sharded over processes), BatchNorm recalibration per size,
test-time averaging of logits over sizes, and :class:`Evaluator`, which does them for one
run with its compiled steps kept."""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import numpy as np
from absl import logging
from flax import nnx
from jax.sharding import Mesh

from fcn_jax.cam import pointing_game
from fcn_jax.data import EvalLoader, Source, Subset
from fcn_jax.data.plan import TRAIN_KEYS
from fcn_jax.sharding import to_global
from fcn_jax.sizes import format_size
from fcn_jax.steps import CompiledStep, make_eval_step, make_logits_step

# Batches of training images whose BatchNorm statistics are averaged per test size.
RECALIBRATION_BATCHES = 2

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


def eval_batching(batch_size: int, min_size: Sequence[int], mesh: Mesh) -> dict:
    """:func:`evaluate`'s batching keywords: any ``batch_size``, rounded up to a multiple of
    the devices (the padding rows count for nothing)."""
    n = mesh.size
    return dict(batch_size=-(-batch_size // n) * n, min_size=min_size, mesh=mesh)


class Evaluator:
    """A run's evaluation of ``test`` at any test size, its compiled steps kept (one compile
    per batch shape however often a size is evaluated, during training and after).

    Args:
      graphdef: the model's train-mode graph and ``state`` a state of it (BatchNorm
        recalibration merges them); eval_graphdef: its eval-mode graph.
      train: the split whose images re-estimate BatchNorm statistics per test size when
        ``recalibrate`` (and the model has BatchNorm).
      mode: ``resize`` or ``canvas`` (how an example is brought to a test size).
      batch_size: the global evaluation batch, rounded up to a multiple of the devices (the
        padding rows count for nothing).
      steps_kw: the compiled steps' shardings and trace settings (``Setup.steps_kw``).
    """

    def __init__(
        self,
        graphdef,
        eval_graphdef,
        state,
        *,
        train: Source,
        test: Source,
        mode: str,
        batch_size: int,
        min_size: Sequence[int],
        mesh: Mesh,
        recalibrate: bool,
        steps_kw: dict,
    ):
        self.test, self.mode, self._train = test, mode, train
        self._eval_step = make_eval_step(eval_graphdef, with_maps=test.has_bbox, **steps_kw)
        self._logits_step = make_logits_step(eval_graphdef, **steps_kw)
        self._stats_step = None
        if recalibrate:
            recal_graphdef = recalibration_graphdef(graphdef, state)
            if recal_graphdef is None:
                logging.warning("--recalibrate_bn: the model has no BatchNorm; nothing to do")
            else:
                fn = functools.partial(batch_stats_step, graphdef=recal_graphdef)
                self._stats_step = CompiledStep(fn, "bn-stats", donate=False, **steps_kw)
        self._kw = eval_batching(batch_size, min_size, mesh)

    @property
    def compiles(self) -> int:
        steps = (self._eval_step, self._logits_step, self._stats_step)
        return sum(s.compiles for s in steps if s is not None)

    def state_at(self, state, size):
        """``state`` with BatchNorm statistics re-estimated at ``size`` (or ``state``)."""
        if self._stats_step is None:
            return state
        batches = RECALIBRATION_BATCHES
        return recalibrate_bn(
            self._stats_step, state, self._train, size, batches=batches, **self._kw
        )

    def at_own_sizes(self, state) -> dict[str, float]:
        """Each test example at its own size (resized up to the minimum size if below)."""
        return evaluate(self._eval_step, state, self.test, None, mode="resize", **self._kw)

    def at_sizes(self, state, sizes) -> dict[str, dict[str, float]]:
        """``{"HxW": result}`` per test size (see :func:`evaluate`)."""
        return {
            format_size(size): evaluate(
                self._eval_step,
                self.state_at(state, size),
                self.test,
                size,
                mode=self.mode,
                **self._kw,
            )
            for size in sizes
        }

    def averaged(self, state, sizes) -> dict:
        """Each example's logits averaged over ``sizes`` (:func:`evaluate_tta`), with the
        ``sizes`` (the ``tta`` record)."""
        state_at = functools.partial(self.state_at, state)
        result = evaluate_tta(
            self._logits_step, state_at, self.test, sizes, mode=self.mode, **self._kw
        )
        return {"sizes": [format_size(s) for s in sizes], **result}
