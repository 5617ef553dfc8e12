"""Training and evaluation batches with shapes from a declared finite set.

Training batches come from a deterministic *plan*: global step ``i`` maps to a list of example
indices and a spatial size, a pure function of ``(seed, i)`` given the source. Grain maps the
plan to batches on background threads; its iterator state (the next step) is all a resumed
loader needs to yield exactly the batches an uninterrupted one would.

Every batch is ``{"image": (B, *size, C) float32, "label": (B,) int32, "sizes": (B, D) int32,
"index": (B,) int32}`` where ``size`` is one of the buckets, positions beyond an example's
``sizes`` (bottom/right in 2-D, the end in 1-D) are zero, and ``index`` names the source example
(-1 for eval padding rows).
"""

from __future__ import annotations

import bisect
import math
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

import grain
import numpy as np

from fcn_jax.data.augment import Augmentation
from fcn_jax.data.policies import (
    ExampleSizes,
    SizePolicy,
    assign_buckets,
    canvas_offsets,
    padding_efficiency,
    place_on_canvas,
    resize,
    resolve_buckets,
)
from fcn_jax.data.sources import Source

Batch = dict[str, np.ndarray]
# A planned global batch: example indices, the batch's spatial shape, and each example's own
# size (B, D) where examples differ (mixed_example), else None.
PlannedBatch = tuple[np.ndarray, tuple[int, ...], np.ndarray | None]


def _effective_sizes(sizes: np.ndarray, min_size: Sequence[int]) -> np.ndarray:
    """Example extents after raising each axis to the model's minimum."""
    return np.maximum(sizes, np.asarray(min_size, np.int64))


def _fit_min_size(image: np.ndarray, min_size: Sequence[int]) -> np.ndarray:
    """Upsize (only) the axes shorter than ``min_size``; the aspect ratio changes."""
    target = tuple(max(s, m) for s, m in zip(image.shape[:-1], min_size, strict=True))
    return resize(image, target) if target != image.shape[:-1] else image


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


class TrainLoader:
    """Infinite, deterministic, resumable training batches.

    Plan per epoch (identical on every process): a permutation of the examples drawn from
    ``(seed, epoch)``, then

    * fixed / mixed_step / mixed_example: consecutive chunks of the permutation; the last partial
      chunk is dropped. mixed_step draws each step's size from ``(seed, step)``; with
      ``scale_batch`` the batch size follows :meth:`SizePolicy.batch_size` and the epoch ends
      when the next batch does not fit. mixed_example draws each step's bucket and every
      example's size within it from ``(seed, step)`` (:class:`ExampleSizes`).
    * native: examples are grouped by bucket (the smallest-area bucket they fit, after raising
      them to ``min_size``) in permutation order, chunked into full batches (each bucket's
      remainder is dropped for that epoch; the next permutation gives them another chance), and
      the batches shuffled.

    Examples smaller than ``min_size`` on some axis are upsized to it on that axis (native), and
    fixed/mixed sizes below ``min_size`` are an error. ``augmentation`` zooms and shifts every
    example within its canvas, drawn from ``(seed, step)``. On ``process_count`` processes, each
    takes rows ``process_index::process_count`` of every global batch.

    Args:
      source: random-access examples with ``sizes()``.
      policy: a parsed size policy.
      buckets: the declared batch shapes (``resolve_buckets``); must cover the policy's sizes.
      batch_size: global batch size (the base batch size with ``scale_batch``).
      seed: plan seed.
      process_index, process_count: multi-host sharding.
      min_size: the model's smallest extent per axis.
      batch_multiple: ``scale_batch`` batch sizes are multiples of this (default
        ``process_count``; pass the global device count).
      augmentation: random zoom and shift (default: none).
      num_threads, prefetch: Grain background threads and batches read ahead.
    """

    def __init__(
        self,
        source: Source,
        policy: SizePolicy,
        buckets: Sequence[Sequence[int]],
        batch_size: int,
        seed: int,
        *,
        process_index: int = 0,
        process_count: int = 1,
        min_size: Sequence[int] | None = None,
        batch_multiple: int | None = None,
        augmentation: Augmentation | None = None,
        num_threads: int = 2,
        prefetch: int = 4,
    ):
        d = source.spatial_dims
        if policy.spatial_dims != d:
            raise ValueError(f"policy is {policy.spatial_dims}-D but the data is {d}-D")
        if not 0 <= process_index < process_count:
            raise ValueError(f"process_index {process_index} not in [0, {process_count})")
        if batch_size % process_count:
            raise ValueError(f"batch_size {batch_size} is not divisible by {process_count} hosts")
        self.batch_multiple = batch_multiple or process_count
        if self.batch_multiple % process_count:
            raise ValueError(
                f"batch_multiple {batch_multiple} is not a multiple of {process_count}"
            )
        self.source, self.policy, self.seed = source, policy, seed
        self.augmentation = augmentation or Augmentation()
        self.batch_size, self.process_index, self.process_count = (
            batch_size,
            process_index,
            process_count,
        )
        self.min_size = tuple(min_size or (1,) * d)
        self.buckets = sorted({tuple(int(v) for v in b) for b in buckets})
        self._n = len(source)
        if policy.kind == "native":
            self._sizes = _effective_sizes(source.sizes(), self.min_size)
            self._assign = assign_buckets(self._sizes, self.buckets)
            if (self._assign < 0).any():
                big = tuple(self._sizes[self._assign < 0][0])
                raise ValueError(
                    f"an example of size {big} fits none of the buckets {self.buckets}"
                )
        else:
            small = [
                s
                for s in ([policy.low] if policy.kind == "mixed_example" else policy.grid())
                if any(a < m for a, m in zip(s, self.min_size, strict=True))
            ]
            if policy.kind == "mixed_example":
                self._example_sizes = ExampleSizes(policy, self.buckets)
            elif missing := set(policy.grid()) - set(self.buckets):
                raise ValueError(f"sizes {sorted(missing)} of the policy are not in the buckets")
            if small:
                raise ValueError(
                    f"policy sizes {small} are below the model's min_size {self.min_size}"
                )
        self._lock = threading.Lock()
        self._plans: dict[int, list[PlannedBatch]] = {}
        self._offsets = [0]  # first global step of each epoch planned so far
        self.batches_per_epoch = None if self._variable_epochs else len(self._plan(0))
        if not self._plan(0):
            raise ValueError(f"batch_size {batch_size} leaves no full batch in {self._n} examples")
        ds = grain.MapDataset.range(sys.maxsize).map(self._load)  # element i = global step i
        options = grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=prefetch)
        self._iter = ds.to_iter_dataset(options).__iter__()
        self._examples, self._t0 = 0, None

    # --- plan ---------------------------------------------------------------------------

    @property
    def _variable_epochs(self) -> bool:
        return self.policy.kind == "mixed_step" and self.policy.scale_batch

    def _plan(self, epoch: int) -> list[PlannedBatch]:
        """Epoch ``epoch``'s global batches."""
        with self._lock:
            if epoch not in self._plans:
                if len(self._plans) > 4:  # threads only look at neighbouring epochs
                    self._plans.pop(min(self._plans))
                self._plans[epoch] = self._make_plan(epoch)
            return self._plans[epoch]

    def _make_plan(self, epoch: int):
        perm = np.random.default_rng([self.seed, 1, epoch]).permutation(self._n)
        b = self.batch_size
        if self.policy.kind == "native":
            batches = []
            for k, bucket in enumerate(self.buckets):
                members = perm[self._assign[perm] == k]
                batches += [
                    (members[j : j + b], bucket, None) for j in range(0, len(members) - b + 1, b)
                ]
            order = np.random.default_rng([self.seed, 2, epoch]).permutation(len(batches))
            return [batches[i] for i in order]
        if not self._variable_epochs:
            first = epoch * (self._n // b)
            return [
                (perm[j * b : (j + 1) * b], *self._draw_shape(first + j, b))
                for j in range(self._n // b)
            ]
        step, pos, batches = self._offsets[epoch], 0, []
        while True:
            size = self.policy.draw_size(self.seed, step)
            n = self.policy.batch_size(b, size, self.batch_multiple)
            if pos + n > self._n:
                return batches
            batches.append((perm[pos : pos + n], size, None))
            pos, step = pos + n, step + 1

    def _draw_shape(self, step: int, n: int) -> tuple[tuple[int, ...], np.ndarray | None]:
        """Step ``step``'s batch shape and, for mixed_example, its ``n`` example sizes."""
        if self.policy.kind == "mixed_example":
            return self._example_sizes.draw(self.seed, step, n)
        return self.policy.draw_size(self.seed, step), None

    def steps_for(self, epochs: float) -> int:
        """Global steps in the first ``epochs`` epochs (a fraction takes that share of the last
        one's batches); epochs of ``scale_batch`` policies differ in length."""
        whole = int(epochs)
        lengths = []
        for epoch in range(whole + 1):
            while self._variable_epochs and len(self._offsets) <= epoch:  # planned in order
                self._locate(self._offsets[-1])
            lengths.append(len(self._plan(epoch)))
        return max(1, math.ceil(sum(lengths[:whole]) + (epochs - whole) * lengths[whole]))

    def _locate(self, step: int) -> tuple[int, int]:
        """(epoch, batch within epoch) of a global step."""
        if not self._variable_epochs:
            return divmod(step, self.batches_per_epoch)
        with self._lock:
            planned = len(self._offsets) - 1
        while self._offsets[-1] <= step:  # epochs' lengths vary: walk forward once
            n = len(self._plan(planned))
            with self._lock:
                if len(self._offsets) == planned + 1:
                    self._offsets.append(self._offsets[-1] + n)
                planned = len(self._offsets) - 1
        epoch = bisect.bisect_right(self._offsets, step) - 1
        return epoch, step - self._offsets[epoch]

    def _load(self, step: int) -> Batch:
        epoch, j = self._locate(step)
        indices, shape, sizes = self._plan(epoch)[j]
        rows = slice(self.process_index, None, self.process_count)
        local = indices[rows]
        sizes = sizes[rows] if sizes is not None else [shape] * len(local)
        aug = self.augmentation
        if aug.active:
            zooms, shifts = (a[rows] for a in aug.draw(self.seed, step, len(indices), len(shape)))
        batch = _empty_batch(len(local), shape, self.source.in_channels)
        for k, (i, ex) in enumerate(zip(local, self.source.get_many(local), strict=True)):
            if self.policy.kind == "native":
                image = _fit_min_size(ex["image"], self.min_size)
                size = image.shape[:-1]
            else:
                image, size = ex["image"], tuple(int(v) for v in sizes[k])
            if aug.active:
                image = aug.apply(image, size, zooms[k], shifts[k])
            else:
                image = resize(image, size)
            _paste(batch, k, i, image, ex["label"])
        return batch

    # --- iteration and state ------------------------------------------------------------

    def __iter__(self) -> Iterator[Batch]:
        return self

    def __next__(self) -> Batch:
        if self._t0 is None:
            self._t0 = time.perf_counter()
        batch = next(self._iter)
        self._examples += len(batch["label"])
        return batch

    def get_state(self) -> dict[str, int]:
        """JSON-serializable position: the next global step, plus what it is only valid for."""
        return {
            "step": int(self._iter.get_state()["next_index"]),
            "seed": self.seed,
            "num_examples": self._n,
            "batch_size": self.batch_size,
        }

    def set_state(self, state: dict[str, int]) -> None:
        """Resume at ``state["step"]`` (from :meth:`get_state`)."""
        for key in ("seed", "num_examples", "batch_size"):
            if state[key] != getattr(self, "_n" if key == "num_examples" else key):
                raise ValueError(f"loader state was saved with a different {key}: {state}")
        self._iter.set_state({"next_index": int(state["step"])})

    # --- reporting ----------------------------------------------------------------------

    @property
    def padding_efficiency(self) -> float:
        """Valid / padded positions (1.0 for fixed and mixed_step, which resize instead of pad;
        mixed_example: expected over its size distribution)."""
        if self.policy.kind == "mixed_example":
            sizes, prob = self.policy.size_distribution()
            return padding_efficiency(sizes, self.buckets, prob)
        if self.policy.kind != "native":
            return 1.0
        return padding_efficiency(self._sizes, self.buckets)

    @property
    def examples_per_second(self) -> float:
        """Examples (this process's share) yielded per second since the first batch."""
        if self._t0 is None:
            return 0.0
        return self._examples / max(time.perf_counter() - self._t0, 1e-9)

    def stats(self) -> dict[str, Any]:
        """What a training script logs: buckets, padding efficiency, throughput."""
        return {
            "policy": self.policy.kind,
            "buckets": [list(b) for b in self.buckets],
            "padding_efficiency": self.padding_efficiency,
            "batches_per_epoch": self.batches_per_epoch,
            "examples_per_second": self.examples_per_second,
        }


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
    ):
        d = source.spatial_dims
        if mode not in ("resize", "canvas"):
            raise ValueError(f"eval mode must be 'resize' or 'canvas', got {mode!r}")
        self.source, self.mode, self.batch_size = source, mode, batch_size
        self.min_size = tuple(min_size or (1,) * d)
        self.size = (size,) * d if isinstance(size, int) else (tuple(size) if size else None)
        if self.size is not None:
            if any(s < m for s, m in zip(self.size, self.min_size, strict=True)):
                raise ValueError(f"eval size {self.size} is below min_size {self.min_size}")
            self.buckets = [self.size]
            groups = [(np.arange(len(source)), self.size)]
        else:
            sizes = _effective_sizes(source.sizes(), self.min_size)
            native = SizePolicy("native", d)
            self.buckets = [tuple(b) for b in (buckets or resolve_buckets(None, native, sizes))]
            assign = assign_buckets(sizes, self.buckets)
            if (assign < 0).any():
                big = tuple(sizes[assign < 0][0])
                raise ValueError(
                    f"an example of size {big} fits none of the buckets {self.buckets}"
                )
            groups = [(np.flatnonzero(assign == k), b) for k, b in enumerate(self.buckets)]
        self._plan = [
            (idx[j : j + batch_size], bucket)
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
                image = _fit_min_size(image, self.min_size)
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


def eval_batches(
    source: Source,
    size: int | Sequence[int] | None,
    mode: str = "resize",
    batch_size: int = 256,
    buckets: Sequence[Sequence[int]] | None = None,
    **kwargs,
) -> EvalLoader:
    """Shorthand for :class:`EvalLoader` (same arguments)."""
    return EvalLoader(source, size, mode, batch_size, buckets, **kwargs)
