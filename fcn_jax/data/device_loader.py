"""Training batches assembled on the devices from a train split held there.

When the train split fits in a share of device memory, it is placed on every device once (uint8
when its values are k/255, else float32), each example at the start of its row and zero after
its own size, in one slab padded to the largest size, or (``native`` batches, when that padding
would take most of the memory) one slab per bucket padded to its largest member
(:func:`device_layout`). Each step the host looks up the same plan as
:class:`~fcn_jax.data.loader.TrainLoader` (:mod:`fcn_jax.data.plan`): per example ``1 + 3D``
integers, its index, size, content extent and content start (zoom and shift of the
augmentation). They go to the devices once per epoch (per step where batch sizes vary); each
step takes its rows from the step before, which slices them by a position kept on the device.
The training loop's step assembles its batch itself (:meth:`DeviceLoader.step_input`; one
computation per step and bucket, not two; ``next(loader)`` runs the assembly alone): it
gathers the examples, then takes the bucket's static slice (nothing resized) or resizes each
with ``jax.image.scale_and_translate`` (bilinear, antialiased when shrinking, as PIL) from its
own size to its extent and offset on the bucket-sized canvas, and zeroes what lies outside its
size.

Against the host loader, for the same seed: the same indices, labels, sizes and shapes; pixels
equal where no resizing happens and within 1e-5 where it does (two implementations of the same
filter); on several processes the rows of a global batch are in plan order rather than
interleaved by process.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import time
import weakref
from collections.abc import Callable, Iterator

import jax
import numpy as np

from fcn_jax import sharding
from fcn_jax.data.assemble import Held, OnDevice, assemble_next, batch_key
from fcn_jax.data.buckets import fitting_buckets
from fcn_jax.data.plan import BatchPlan, PlannedLoader, effective_sizes
from fcn_jax.data.sources import Source

READ_CHUNK = 1024
# Slabs per bucket replace one padded slab when the examples fill less than this share of it.
MIN_PADDED_FILL = 0.5


def device_memory_bytes() -> int:
    """Memory of one local device (the host's RAM for the CPU backend)."""
    stats = jax.local_devices()[0].memory_stats() or {}
    if "bytes_limit" in stats:
        return int(stats["bytes_limit"])
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


@dataclasses.dataclass(frozen=True)
class Layout:
    """Where a split's examples lie on the device: example ``i`` in slab ``slab[i]`` at row
    ``row[i]``; slab ``k`` is ``(count_k, *shapes[k], C)``."""

    slab: np.ndarray  # (N,) int
    shapes: tuple[tuple[int, ...], ...]

    @functools.cached_property
    def row(self) -> np.ndarray:
        """(N,) int32 row of each example within its slab (examples in index order)."""
        row = np.zeros(len(self.slab), np.int32)
        for k in range(len(self.shapes)):
            members = self.slab == k
            row[members] = np.arange(members.sum())
        return row

    def elements(self) -> int:
        """Positions of every slab (times C for values)."""
        counts = np.bincount(self.slab, minlength=len(self.shapes))
        return int(sum(c * math.prod(s) for c, s in zip(counts, self.shapes, strict=True)))

    def key(self) -> tuple:
        return self.shapes, self.slab.tobytes()


def device_layout(source: Source, policy=None, buckets=None, min_size=None) -> Layout:
    """One slab padded to the largest size; or, for ``native`` batches (each from one of
    ``buckets``) when the examples would fill less than ``MIN_PADDED_FILL`` of that slab, one
    slab per bucket, padded to its largest member, so that a batch reads one slab."""
    sizes = source.sizes()
    one = Layout(np.zeros(len(sizes), np.int64), (tuple(int(v) for v in sizes.max(0)),))
    if policy is None or policy.kind != "native":
        return one
    if np.prod(sizes, axis=-1).sum() >= MIN_PADDED_FILL * one.elements():
        return one
    assign = fitting_buckets(effective_sizes(sizes, min_size or (1,) * sizes.shape[1]), buckets)
    shapes = tuple(
        tuple(int(v) for v in sizes[assign == k].max(0)) if (assign == k).any() else (1,) * len(b)
        for k, b in enumerate(buckets)
    )
    return Layout(assign, shapes)


def device_data_problem(
    source: Source, fraction: float, layout: Layout | None = None
) -> str | None:
    """Why ``source`` cannot be held on each device within ``fraction`` of its memory in
    ``layout`` (default: :func:`device_layout`), or None when it can (sized as float32, the
    larger of the two storage types)."""
    layout = layout or device_layout(source)
    need = layout.elements() * source.in_channels * 4
    budget = fraction * device_memory_bytes()
    if need > budget:
        slabs = (
            f"{len(layout.shapes)} slabs"
            if len(layout.shapes) > 1
            else "padded to the largest size"
        )
        return (
            f"it needs {need / 2**20:.0f} MiB ({slabs}), more than {budget / 2**20:.0f} MiB "
            f"(--device_data_fraction={fraction} of one device's memory)"
        )
    return None


# The arrays read from each source still in use, per layout: the runs of a comparison share
# its dataset, and decoding 20 000 TFDS examples takes about 3 s per run.
_read: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def read_split(source: Source, layout: Layout) -> tuple[list[np.ndarray], np.ndarray]:
    """Every example of ``source`` in the slabs of ``layout`` (zero after each example's size;
    uint8 when every value is a multiple of 1/255, so that ``/ 255`` restores it exactly, else
    float32) and the labels (N,); read once per source object and layout (the arrays are not
    to be modified)."""
    held = _read.setdefault(source, {})
    if layout.key() not in held:
        held[layout.key()] = _read_all(source, layout)
    return held[layout.key()]


def _read_all(source: Source, layout: Layout) -> tuple[list[np.ndarray], np.ndarray]:
    counts = np.bincount(layout.slab, minlength=len(layout.shapes))
    slabs = [
        np.zeros((c, *shape, source.in_channels), np.float32)
        for c, shape in zip(counts, layout.shapes, strict=True)
    ]
    labels = np.zeros(len(source), np.int32)
    for start in range(0, len(source), READ_CHUNK):
        indices = range(start, min(start + READ_CHUNK, len(source)))
        for i, ex in zip(indices, source.get_many(indices), strict=True):
            image = ex["image"]
            slabs[layout.slab[i]][(layout.row[i], *(slice(0, n) for n in image.shape[:-1]))] = image
            labels[i] = ex["label"]
    quantized = [np.rint(x * 255) for x in slabs]
    if all(
        q.min(initial=0) >= 0 and q.max(initial=0) <= 255 and np.array_equal(q / 255.0, x)
        for q, x in zip(quantized, slabs, strict=True)
    ):
        slabs = [q.astype(np.uint8) for q in quantized]
    return slabs, labels


class DeviceLoader(PlannedLoader):
    """Infinite, deterministic, resumable training batches of a
    :class:`~fcn_jax.data.plan.BatchPlan` (``plan``, made for ``jax.process_count()``
    processes), built on the devices: the same batches as
    :class:`~fcn_jax.data.loader.TrainLoader`'s, global arrays split over ``mesh``
    (``{"image", "label", "sizes"}``). The source is held as :func:`device_layout` says
    (:func:`device_data_problem`: whether it fits). ``compile_seconds``: time spent compiling
    the assembly on its own (``next(loader)``), once per bucket.
    """

    pipeline = "device"

    def __init__(self, plan: BatchPlan, *, mesh: jax.sharding.Mesh):
        if plan.process_count != jax.process_count():
            raise ValueError(
                f"a plan for {plan.process_count} processes, not {jax.process_count()}"
            )
        super().__init__(plan)
        source = plan.source
        self.layout = device_layout(source, plan.policy, plan.buckets, plan.min_size)
        slabs, labels = read_split(source, self.layout)
        self.storage_dtype = slabs[0].dtype
        self._mesh = mesh
        sizes = source.sizes()
        # What every assembly takes besides its slab and rows: labels, slab rows, stored sizes.
        self._labels, self._slab_rows, self._stored = (
            sharding.replicate(x, mesh) for x in (labels, self.layout.row, sizes.astype(np.int32))
        )
        self._slabs = [sharding.replicate(x, mesh) for x in slabs]
        self._padded = [
            bool((sizes[self.layout.slab == k] != shape).any())
            for k, shape in enumerate(self.layout.shapes)
        ]
        self._resize = self._needs_resize(sizes)
        self._steps: dict = {}  # batch_key -> the assembly compiled on its own
        self._builds: dict = {}  # canvas -> its assemble_next
        self._zero = sharding.replicate(np.zeros((), np.int32), mesh)
        self._on_device = None  # (epoch, step within it) of the rows on the devices
        self._epoch_rows = self._position = self._rows = None

    def _needs_resize(self, sizes: np.ndarray) -> bool:
        """Whether some example is ever resized, zoomed or shifted."""
        plan = self.plan
        if plan.augmentation.active or plan.policy.kind == "mixed_example":
            return True
        if plan.policy.kind == "native":  # raised to the model's minimum
            return not np.array_equal(effective_sizes(sizes, plan.min_size), sizes)
        return set(plan.policy.grid()) != {
            tuple(int(v) for v in s) for s in np.unique(sizes, axis=0)
        }

    def _slab(self, canvas: tuple[int, ...]) -> int:
        """The slab a batch of this canvas reads (native batches come from one bucket)."""
        return 0 if len(self.layout.shapes) == 1 else self.plan.buckets.index(canvas)

    def _build(self, canvas: tuple[int, ...]) -> Callable:
        """:func:`assemble_next` for batches of this canvas (one object per canvas: it keys
        the compiles)."""
        if canvas not in self._builds:
            kw = dict(canvas=canvas, resize=self._resize, padded=self._padded[self._slab(canvas)])
            self._builds[canvas] = functools.partial(assemble_next, **kw)
        return self._builds[canvas]

    def _held(self, canvas: tuple[int, ...], epoch_rows, position, rows) -> Held:
        """The held arrays of a batch of ``canvas`` with these rows."""
        return Held(
            images=self._slabs[self._slab(canvas)],
            labels=self._labels,
            slab_rows=self._slab_rows,
            stored=self._stored,
            epoch_rows=epoch_rows,
            position=position,
            rows=rows,
        )

    def _compiled(self, batch: OnDevice) -> Callable:
        """The assembly of ``batch`` compiled on its own (:meth:`__next__`), once per canvas
        and argument shapes (timed)."""
        key = batch_key(batch)
        if key not in self._steps:
            out = (sharding.batch_sharded(self._mesh), sharding.replicated(self._mesh))
            start = time.perf_counter()
            self._steps[key] = jax.jit(batch.build, out_shardings=out).lower(batch.held).compile()
            self.compile_seconds += time.perf_counter() - start
        return self._steps[key]

    def _upload(self, epoch: int, j: int, first: int) -> None:
        """Put the rows of every step of ``epoch`` (its first global step is ``first``) on the
        devices, and the position ``j`` within it: the planned copy of each epoch."""
        steps = range(first, first + len(self.plan.epoch(epoch)))
        epoch_rows = np.stack([self.rows(s)[1] for s in steps])
        self._epoch_rows = sharding.replicate(epoch_rows, self._mesh)
        self._position = sharding.replicate(np.asarray(j, np.int32), self._mesh)
        self._rows = sharding.replicate(epoch_rows[j], self._mesh)
        self._on_device = (epoch, j)

    def rows(self, step: int) -> tuple[tuple[int, ...], np.ndarray]:
        """Step ``step``'s canvas and the ``(B, 1 + 3D)`` int32 rows :func:`assemble` takes."""
        plan = self.plan
        planned = plan.planned(step)
        sizes = plan.example_sizes(planned)
        content, start = plan.augmentation.boxes(plan.seed, step, sizes)
        rows = np.concatenate([planned[0][:, None], sizes, content, start], axis=1)
        return tuple(planned[1]), rows.astype(np.int32)

    def __iter__(self) -> Iterator[dict]:
        return self

    def __next__(self) -> dict:
        """The next batch, assembled by itself: ``{"image", "label", "sizes"}`` on the
        devices (the training loop lets its step assemble it: :meth:`step_input`)."""
        batch = self.step_input()
        out, carry = self._compiled(batch)(batch.held)
        if batch.keep is not None:
            batch.keep(carry)
        return out

    def step_input(self) -> OnDevice:
        """The next batch as the train step takes it: the arrays it is assembled from, so
        that the step assembles it (:class:`~fcn_jax.data.assemble.OnDevice`)."""
        step = self._take()
        if self.plan.variable_epochs:  # batch sizes vary: this step's rows go up alone
            return self.held_input(step)
        epoch, j = self.plan.locate(step)
        if self._on_device != (epoch, j):  # the first step, a resume or a new epoch
            self._upload(epoch, j, step - j)
        self._on_device = (epoch, j + 1)
        canvas = tuple(self.plan.epoch(epoch)[j][1])
        held = self._held(canvas, self._epoch_rows, self._position, self._rows)
        return OnDevice(self._build(canvas), held, self._keep)

    def held_input(self, step: int) -> OnDevice:
        """Step ``step``'s input with its rows put on the devices alone (as a one-step epoch
        at position 0): the same batch as :meth:`step_input` gives, from any step, without moving
        the loader (used when batch sizes vary, and to time the step by itself)."""
        canvas, rows = self.rows(step)
        # Both shapes from the host: an eager ``rows[None]`` on the device is slower than two
        # small copies, and compiles once per batch shape.
        epoch_rows, rows = (sharding.replicate(x, self._mesh) for x in (rows[None], rows))
        return OnDevice(self._build(canvas), self._held(canvas, epoch_rows, self._zero, rows))

    def abstract_input(self, canvas: tuple[int, ...], batch_size: int) -> OnDevice:
        """What :meth:`step_input` gives for a batch of ``batch_size`` examples of ``canvas``,
        abstract (``--precompile``)."""
        steps = 1 if self.plan.variable_epochs else self.plan.batches_per_epoch
        replicated = sharding.replicated(self._mesh)
        rows = jax.ShapeDtypeStruct(
            (batch_size, 1 + 3 * len(canvas)), np.int32, sharding=replicated
        )
        epoch_rows = jax.ShapeDtypeStruct((steps, *rows.shape), np.int32, sharding=replicated)
        position = jax.ShapeDtypeStruct((), np.int32, sharding=replicated)
        return OnDevice(self._build(canvas), self._held(canvas, epoch_rows, position, rows))

    def _keep(self, carry: tuple[jax.Array, jax.Array]) -> None:
        self._position, self._rows = carry
