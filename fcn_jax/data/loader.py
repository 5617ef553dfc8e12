"""Training and evaluation batches with shapes from a declared finite set.

Training batches come from a deterministic *plan* (:mod:`fcn_jax.data.plan`): global step ``i``
maps to a list of example indices and a spatial size, a pure function of ``(seed, i)`` given the
source. Grain maps the plan to batches on background threads; its iterator state (the next
step) is all a resumed loader needs to yield exactly the batches an uninterrupted one would.

Every batch is ``{"image": (B, *size, C) float32, "label": (B,) int32, "sizes": (B, D) int32,
"index": (B,) int32}`` where ``size`` is one of the buckets, positions beyond an example's
``sizes`` (bottom/right in 2-D, the end in 1-D) are zero, and ``index`` names the source example
(-1 for eval padding rows).
"""

from __future__ import annotations

import functools
import sys
import weakref
from collections.abc import Iterator, Sequence

import grain
import jax
import numpy as np
from absl import flags

from fcn_jax import sharding
from fcn_jax.data.buckets import fitting_buckets, resolve_buckets
from fcn_jax.data.plan import TRAIN_KEYS, BatchPlan, PlannedLoader, effective_sizes
from fcn_jax.data.policies import SizePolicy
from fcn_jax.data.resize import (
    canvas_offsets,
    fit_min_size,
    place_on_canvas,
    resize,
)
from fcn_jax.data.sources import Source
from fcn_jax.sizes import check_min_size

Batch = dict[str, np.ndarray]
# Batches a TrainLoader with a mesh keeps on the devices ahead of the step: the copy of the
# next one runs while the current step computes.
DEVICE_PREFETCH = 2


def _empty_batch(n: int, size: Sequence[int], channels: int) -> Batch:
    return {
        "image": np.zeros((n, *size, channels), np.float32),
        "label": np.zeros((n,), np.int32),
        "sizes": np.tile(np.asarray(size, np.int32), (n, 1)),
        "index": np.full((n,), -1, np.int32),
    }


def _paste(batch: Batch, k: int, index: int, image: np.ndarray, label: int) -> None:
    """Write example ``index`` at the start of row ``k`` (zero padding stays after it)."""
    batch["image"][(k, *(slice(0, s) for s in image.shape[:-1]))] = image
    batch["label"][k] = label
    batch["index"][k] = index
    batch["sizes"][k] = image.shape[:-1]


class TrainLoader(PlannedLoader):
    """Infinite, deterministic, resumable training batches of a
    :class:`~fcn_jax.data.plan.BatchPlan` (``plan``), assembled on the host by Grain. On
    ``plan.process_count`` processes, each takes rows ``process_index::process_count`` of
    every global batch. (:class:`~fcn_jax.data.device_loader.DeviceLoader` follows a plan on
    the devices.)

    Args:
      plan: the batches to make.
      process_index: this process's rows.
      num_threads, prefetch: Grain background threads and batches read ahead.
      worker_count: batches are made in this many processes (Grain multiprocessing; the
        loader and its source are pickled to each) instead of this process's threads.
      mesh: when given, batches are global arrays split over it (``sharding.to_global``),
        copied to the devices by a Grain prefetch thread up to ``DEVICE_PREFETCH`` batches
        ahead, so the copy overlaps the running step; else numpy arrays.
    """

    pipeline = "grain"

    def __init__(
        self,
        plan: BatchPlan,
        *,
        process_index: int = 0,
        num_threads: int = 2,
        prefetch: int = 4,
        worker_count: int = 0,
        mesh: jax.sharding.Mesh | None = None,
    ):
        if not 0 <= process_index < plan.process_count:
            raise ValueError(f"process_index {process_index} not in [0, {plan.process_count})")
        super().__init__(plan)
        self.process_index = process_index
        self._reading = (num_threads, prefetch, worker_count)
        self._mesh, self._iter = mesh, None
        self._seek(0)

    def _load(self, step: int) -> Batch:
        plan = self.plan
        indices, shape, sizes = plan.planned(step)
        rows = slice(self.process_index, None, plan.process_count)
        local = indices[rows]
        sizes = sizes[rows] if sizes is not None else [shape] * len(local)
        aug = plan.augmentation
        if aug.active:
            zooms, shifts = (a[rows] for a in aug.draw(plan.seed, step, len(indices), len(shape)))
        batch = _empty_batch(len(local), shape, plan.source.in_channels)
        for k, (i, ex) in enumerate(zip(local, plan.source.get_many(local), strict=True)):
            image = ex["image"]
            if plan.policy.kind != "native":
                size = tuple(int(v) for v in sizes[k])
            elif aug.active:  # one resize, from the example as stored (as on the devices)
                size = tuple(int(v) for v in effective_sizes(image.shape[:-1], plan.min_size))
            else:
                image = fit_min_size(image, plan.min_size)
                size = image.shape[:-1]
            if aug.active:
                image = aug.apply(image, size, zooms[k], shifts[k])
            else:
                image = resize(image, size)
            _paste(batch, k, i, image, ex["label"])
        return batch

    def __iter__(self) -> Iterator[Batch]:
        return self

    def step_input(self) -> Batch:
        """The next batch as the train step takes it: its :data:`TRAIN_KEYS`, global arrays on
        the mesh (made so by the prefetch stage; numpy arrays without a mesh)."""
        batch = next(self)
        return {k: batch[k] for k in TRAIN_KEYS}

    def abstract_input(self, canvas: Sequence[int], batch_size: int) -> dict:
        """A global batch of ``batch_size`` examples of ``canvas``, abstract (``--precompile``)."""
        return {
            "image": jax.ShapeDtypeStruct(
                (batch_size, *canvas, self.plan.source.in_channels), np.float32
            ),
            "label": jax.ShapeDtypeStruct((batch_size,), np.int32),
            "sizes": jax.ShapeDtypeStruct((batch_size, len(canvas)), np.int32),
        }

    def __next__(self) -> Batch:
        self._take()
        return next(self._iter)

    def _seek(self, step: int) -> None:
        """Read from global step ``step`` on (element ``i`` is global step ``step + i``)."""
        num_threads, prefetch, workers = self._reading
        if self._iter is not None:
            self._closer()  # stops the old iterator's threads
        self._iter = None  # not pickled along with the loader
        ds = grain.MapDataset.range(step, sys.maxsize).map(self._load)
        options = grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=prefetch)
        ds = ds.to_iter_dataset(options)
        if workers:
            if not flags.FLAGS.is_parsed():  # Grain's workers read absl flags (defaults here)
                flags.FLAGS.mark_as_parsed()
            ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=workers))
        if self._mesh is not None:  # the second stage of grain.experimental.device_put
            put = functools.partial(sharding.to_global, mesh=self._mesh)
            ds = grain.experimental.ThreadPrefetchIterDataset(
                ds.map(put), prefetch_buffer_size=DEVICE_PREFETCH
            )
        self._iter, self._next = iter(ds), step
        # Closed when replaced or at exit: a prefetch thread still copying to the devices
        # while the interpreter shuts down aborts it.
        self._closer = weakref.finalize(self, self._iter.close)

    def __getstate__(self) -> dict:
        """Picklable (for loader worker processes): without the iterator and the mesh."""
        return {**self.__dict__, "_iter": None, "_mesh": None, "_closer": None}


class EvalLoader:
    """Every example of ``source`` once, in fixed-shape batches (re-iterable).

    * ``size`` given, ``mode="resize"``: content rescaled to ``size``; bbox scaled along.
    * ``size`` given, ``mode="canvas"``: content scale kept, centered on a zero canvas of
      ``size`` (cropped where larger); bbox shifted and clipped. ``sizes`` is the canvas size.
    * ``size=None``: native sizes (raised to ``min_size``) zero-padded into ``buckets`` (default:
      ``auto:8`` over this source).

    The last batch of each shape is filled up with padding rows (``valid`` False, ``index`` -1,
    ``sizes`` the full batch shape) so shapes never change. Batches are
    ``{image, label, sizes, valid (B,) bool, index (B,) int32}`` plus ``bbox (B, 4) int32`` where
    the source has one.

    On ``process_count`` processes ``batch_size`` is global: each process reads and yields only
    rows ``process_index::process_count`` of every global batch (``B = batch_size //
    process_count``), and every process yields the same number of batches.
    """

    def __init__(
        self,
        source: Source,
        size: int | Sequence[int] | None,
        mode: str = "resize",
        batch_size: int = 256,
        buckets: Sequence[Sequence[int]] | None = None,
        *,
        min_size: Sequence[int] | None = None,
        num_threads: int = 2,
        process_index: int = 0,
        process_count: int = 1,
    ):
        d = source.spatial_dims
        if mode not in ("resize", "canvas"):
            raise ValueError(f"eval mode must be 'resize' or 'canvas', got {mode!r}")
        if batch_size % process_count or not 0 <= process_index < process_count:
            raise ValueError(
                f"eval batch size {batch_size} over process {process_index} of {process_count}: "
                "the batch must split evenly over the processes"
            )
        self.source, self.mode = source, mode
        self.batch_size = batch_size // process_count  # this process's rows per batch
        rows = slice(process_index, None, process_count)
        self.min_size = tuple(min_size or (1,) * d)
        self.size = (size,) * d if isinstance(size, int) else (tuple(size) if size else None)
        if self.size is not None:
            check_min_size([self.size], self.min_size, "eval size")
            self.buckets = [self.size]
            groups = [(np.arange(len(source)), self.size)]
        else:
            sizes = effective_sizes(source.sizes(), self.min_size)
            native = SizePolicy("native", d)
            self.buckets = [tuple(b) for b in (buckets or resolve_buckets(None, native, sizes))]
            assign = fitting_buckets(sizes, self.buckets)
            groups = [(np.flatnonzero(assign == k), b) for k, b in enumerate(self.buckets)]
        self._plan = [
            (idx[j : j + batch_size][rows], bucket)
            for idx, bucket in groups
            for j in range(0, len(idx), batch_size)
        ]
        options = grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=2 * num_threads)
        self._dataset = grain.MapDataset.source(self._plan).map(self._load).to_iter_dataset(options)

    def __len__(self) -> int:
        return len(self._plan)

    def __iter__(self) -> Iterator[Batch]:
        return iter(self._dataset)

    def _load(self, item) -> Batch:
        indices, size = item
        batch = _empty_batch(self.batch_size, size, self.source.in_channels)
        batch["valid"] = np.arange(self.batch_size) < len(indices)
        if self.source.has_bbox:
            batch["bbox"] = np.zeros((self.batch_size, 4), np.int32)
        for k, (i, ex) in enumerate(zip(indices, self.source.get_many(indices), strict=True)):
            image, before = ex["image"], ex["image"].shape[:-1]
            if self.size is None:
                image = fit_min_size(image, self.min_size)
            elif self.mode == "resize":
                image = resize(image, size)
            else:
                image = place_on_canvas(image, size)
            _paste(batch, k, i, image, ex["label"])
            if "bbox" in ex:
                batch["bbox"][k] = self._move_bbox(ex["bbox"], before, image.shape[:-1])
        return batch

    def _move_bbox(self, box: np.ndarray, before, after) -> np.ndarray:
        """``[y0, x0, y1, x1)`` under the same transform as the image."""
        box = box.astype(np.float64).reshape(2, 2)
        if self.size is not None and self.mode == "canvas":
            src, dst = canvas_offsets(before, after)
            box = box - np.asarray(src) + np.asarray(dst)
        else:
            box = box * (np.asarray(after) / np.asarray(before))
        return np.clip(np.rint(box), 0, np.asarray(after)).astype(np.int32).reshape(4)
