"""Part 1: train-step compiles with ``auto:K`` buckets against a step that meets every size."""

from __future__ import annotations

import os
import tempfile
import time

import jax
import numpy as np

from benchmarks.common import Row, StepRunner, seed_config
from benchmarks.parts import Settings
from fcn_jax.data.arrays import save_npz
from fcn_jax.setup import build

PART = "1 compile"


def synthetic(path: str, n: int, lo: int, hi: int) -> str:
    """An ``npz:`` dataset of ``n`` random images whose sides are each uniform in [lo, hi]."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, n)
    images = [rng.integers(0, 256, size, np.uint8) for size in rng.integers(lo, hi + 1, (n, 2))]
    test = dict(test_images=images[:8], test_labels=labels[:8])
    save_npz(path, dict(train_images=images, train_labels=labels, **test))
    return f"npz:{path}"


def compiles(s: Settings, dataset: str, train_size: str, buckets=None) -> dict:
    """``compile_steps`` training steps: the compiles, their seconds and the wall time."""
    fields = dict(dataset=dataset, data_dir=s.data_dir, batch_size=s.compile_batch, steps=1)
    setup = build(seed_config(**fields, train_size=train_size, buckets=buckets))
    runner, start = StepRunner(setup), time.perf_counter()
    shapes = {batch["image"].shape for batch in runner.train(s.compile_steps)}
    jax.block_until_ready(runner.state)
    wall, step = time.perf_counter() - start, setup.train_step
    return {
        "count": step.compiles,
        "seconds": step.compile_seconds,
        "share": f"{step.compile_seconds / max(wall, 1e-9):.0%} of {wall:.1f} s wall",
        "shapes": len(shapes),
        "buckets": len(setup.buckets),
        "padding": setup.loader.padding_efficiency,
    }


def rows(s: Settings) -> list[Row]:
    """Native sizes in ``auto:8`` buckets (one compile per bucket) against one size per step
    from every integer size in the range (``mixed_step:LO-HI:1``: a compile per new shape)."""
    (lo, hi), spec = s.compile_range, s.compile_buckets
    with tempfile.TemporaryDirectory() as tmp:
        data = synthetic(os.path.join(tmp, "sizes.npz"), s.compile_examples, lo, hi)
        bucketed = compiles(s, data, "native", spec)
        naive = compiles(s, data, f"mixed_step:{lo}-{hi}:1")
    what = f"{s.compile_steps} steps, batch {s.compile_batch}"
    mean = naive["seconds"] / max(naive["count"], 1)
    note = (
        f"{what}, example sides uniform in [{lo},{hi}]; {bucketed['buckets']} buckets, "
        f"padding efficiency {bucketed['padding']:.2f}"
    )
    naive_note = (
        f"{what}, one (H, W) per batch from {naive['buckets']} sizes; {naive['shapes']} distinct "
        f"shapes seen; all sizes would take ~{naive['buckets'] * mean / 60:.0f} min of "
        f"compiling at {mean:.2f} s each"
    )
    name, target = f"native {spec}", f"<= {spec.removeprefix('auto:')}"
    return [
        Row(PART, f"train compiles, {name}", bucketed["count"], "compiles", target, note),
        Row(PART, f"compile seconds, {name}", bucketed["seconds"], "s", note=bucketed["share"]),
        Row(PART, "train compiles, naive jax.jit", naive["count"], "compiles", note=naive_note),
        Row(PART, "compile seconds, naive jax.jit", naive["seconds"], "s", note=naive["share"]),
    ]
