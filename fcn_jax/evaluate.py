"""Evaluation over a grid of test sizes, and BatchNorm recalibration per size."""

from __future__ import annotations

from collections.abc import Sequence

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh

from fcn_jax.cam import pointing_game
from fcn_jax.data import EvalLoader, Source, Subset
from fcn_jax.sharding import to_global
from fcn_jax.steps import CompiledStep

EVAL_KEYS = ("image", "label", "sizes", "valid", "bbox")


def local_rows(batch: dict, keys: Sequence[str]) -> dict:
    """This process's share (rows ``process_index::process_count``) of a global batch."""
    i, n = jax.process_index(), jax.process_count()
    return {k: v[i::n] for k, v in batch.items() if k in keys}


def evaluate(
    step: CompiledStep,
    state,
    source: Source,
    size: Sequence[int] | None,
    *,
    mode: str,
    batch_size: int,
    min_size: Sequence[int],
    mesh: Mesh,
    buckets=None,
) -> dict[str, float]:
    """Accuracy and loss on ``source`` at test ``size`` (None: each example's own size).

    Returns ``{"accuracy", "loss", "examples"}`` plus ``"pointing_game"`` when the source has
    bounding boxes.
    """
    loader = EvalLoader(source, size, mode, batch_size, buckets, min_size=min_size)
    totals, hits = {}, 0.0
    for batch in loader:
        out = step(state, to_global(local_rows(batch, EVAL_KEYS), mesh))
        if "cmap" in out:
            hits += pointing_hits(out.pop("cmap"), out.pop("out_sizes"), batch)
        totals = {k: totals.get(k, 0.0) + v for k, v in out.items()}
    totals = {k: float(v) for k, v in jax.device_get(totals).items()}
    count = max(totals["count"], 1.0)
    result = {
        "accuracy": totals["correct"] / count,
        "loss": totals["loss"] / count,
        "examples": int(totals["count"]),
    }
    if source.has_bbox:
        result["pointing_game"] = hits / count
    return result


def pointing_hits(cmap: jax.Array, out_sizes: jax.Array, batch: dict) -> int:
    """Pointing-game hits among the valid rows of a batch (class maps gathered to the host)."""
    n = jax.process_count()
    # A global array holds process 0's rows, then process 1's, ...: reorder the host batch alike.
    rows = {k: np.concatenate([batch[k][p::n] for p in range(n)]) for k in EVAL_KEYS}
    cmap, out_sizes = np.asarray(cmap), np.asarray(out_sizes)  # replicated: whole on each host
    hit = pointing_game(cmap, out_sizes, rows["label"], rows["bbox"], rows["sizes"])
    return int((hit & rows["valid"]).sum())


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
    loader = EvalLoader(subset, size, "resize", batch_size, min_size=min_size)
    stats = [
        stats_fn(state, to_global(local_rows(b, ("image", "label", "sizes")), mesh)) for b in loader
    ]
    mean_stats = jax.tree.map(lambda *xs: sum(xs) / len(xs), *stats)
    return {**state, "rest": mean_stats}


def batch_stats_step(state, batch, *, graphdef):
    """The BatchNorm statistics of one batch (with a momentum-0 train-mode graph)."""
    model = nnx.merge(graphdef, state["params"], state["rest"])
    model(batch["image"], batch["sizes"])
    return nnx.state(model, nnx.Not(nnx.Param))


def accuracy_grid(eval_accuracy: dict[str, float]) -> tuple[list[int], list[int], np.ndarray]:
    """``{"HxW": acc}`` → (heights, widths, (len(heights), len(widths)) array, NaN where the
    pair was not tested)."""
    sizes = [tuple(int(v) for v in k.split("x")) for k in eval_accuracy]
    heights = sorted({s[0] for s in sizes})
    widths = sorted({s[1] for s in sizes})
    grid = np.full((len(heights), len(widths)), np.nan)
    for key, (h, w) in zip(eval_accuracy, sizes):
        grid[heights.index(h), widths.index(w)] = eval_accuracy[key]
    return heights, widths, grid
