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
from collections.abc import Callable, Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from fcn_jax import sharding
from fcn_jax.data.augment import Augmentation
from fcn_jax.data.buckets import fitting_buckets
from fcn_jax.data.plan import BatchPlan, effective_sizes
from fcn_jax.data.policies import SizePolicy
from fcn_jax.data.sources import Source
from fcn_jax.models.layers import valid_mask
from fcn_jax.steps import OnDevice, batch_key

READ_CHUNK = 1024
# Slabs per bucket replace one padded slab when the examples fill less than this share of it.
MIN_PADDED_FILL = 0.5
# uint8 value -> float32, computed as the host sources do (x / 255 in float32): a lookup keeps
# the device's pixels bit-identical (XLA may turn the division into a reciprocal product).
_UINT8_TO_FLOAT = np.arange(256, dtype=np.uint8).astype(np.float32) / 255.0


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


def _inside(low, high, spatial_shape: tuple[int, ...]) -> jax.Array:
    """(B, *spatial, 1) bool: positions in ``[low, high)`` on every axis (both (B, D))."""
    return valid_mask(high, spatial_shape) & ~_below(low, spatial_shape)


def _below(low, spatial_shape: tuple[int, ...]) -> jax.Array:
    """(B, *spatial, 1) bool: positions before ``low`` (B, D) on some axis."""
    out = None
    for axis, length in enumerate(spatial_shape):
        shape = [low.shape[0]] + [1] * len(spatial_shape) + [1]
        shape[1 + axis] = length
        before = (jnp.arange(length) < low[:, axis : axis + 1]).reshape(shape)
        out = before if out is None else out | before
    return out


def _fit(x, canvas: tuple[int, ...]):
    """``(B, *S, C)`` cut or zero-padded to ``(B, *canvas, C)`` (static: a bucket's slice)."""
    x = x[(slice(None), *(slice(0, c) for c in canvas))]
    return jnp.pad(x, [(0, 0), *((0, c - n) for c, n in zip(canvas, x.shape[1:-1])), (0, 0)])


def _place(x, scale, start, canvas: tuple[int, ...]):
    """Each of ``(B, *S, C)`` scaled by ``scale`` (B, D) with its first element at ``start``
    (B, D) on a ``(B, *canvas, C)`` canvas (PIL's bilinear filter, antialiased)."""
    place = functools.partial(
        jax.image.scale_and_translate,
        shape=(*canvas, x.shape[-1]),
        spatial_dims=tuple(range(len(canvas))),
        method="linear",
        antialias=True,
        precision=jax.lax.Precision.HIGHEST,
    )
    return jax.vmap(lambda im, s, t: place(im, scale=s, translation=t))(
        x, scale, start.astype(jnp.float32)
    )


def assemble(images, labels, slab_rows, stored, rows, *, canvas, resize, padded) -> dict:
    """One batch from examples held on the device.

    Args:
      images: ``(N_k, *S, C)`` uint8 or float32: the slab this batch's examples lie in.
      labels: ``(N,)`` int32; slab_rows: ``(N,)`` int32 row of each example in its slab;
        stored: ``(N, D)`` int32 size of each example as held.
      rows: ``(B, 1 + 3D)`` int32: example index, size (B, D), content extent (B, D) and
        content start (B, D) on the canvas.
      canvas: the batch's spatial shape (a bucket).
      resize: False when every example is used as held (its size is its stored size).
      padded: whether the slab holds examples smaller than itself (zero beyond their size).
    Returns:
      ``{"image": (B, *canvas, C) float32, "label": (B,), "sizes": (B, D)}``, zero beyond
      each example's size.
    """
    d = len(canvas)
    index, size = rows[:, 0], rows[:, 1 : 1 + d]
    content, start = rows[:, 1 + d : 1 + 2 * d], rows[:, 1 + 2 * d :]
    x = jnp.take(images, jnp.take(slab_rows, index), axis=0)
    x = jnp.asarray(_UINT8_TO_FLOAT)[x] if images.dtype == jnp.uint8 else x.astype(jnp.float32)
    if not resize:  # zero beyond each example's size already
        x = _fit(x, canvas)
    elif not padded:
        x = _place(x, content / jnp.asarray(images.shape[1:-1], jnp.float32), start, canvas)
        x = jnp.where(valid_mask(size, canvas), x, 0.0)
    else:
        # The filter must see each example's own size, as the host's does: resize its mask
        # along and divide, which renormalizes the filter over the example's pixels only.
        held = jnp.take(stored, index, axis=0)
        mask = valid_mask(held, images.shape[1:-1]).astype(jnp.float32)
        y = _place(jnp.concatenate([x, mask], -1), content / held, start, canvas)
        value, weight = y[..., :-1], y[..., -1:]
        inside = _inside(start, start + content, canvas) & valid_mask(size, canvas) & (weight > 0)
        x = jnp.where(inside, value / jnp.where(weight > 0, weight, 1.0), 0.0)
    return {"image": x, "label": jnp.take(labels, index), "sizes": size}


def assemble_next(
    images, labels, slab_rows, stored, epoch_rows, j, rows, **kw
) -> tuple[dict, tuple[jax.Array, jax.Array]]:
    """The batch of ``rows`` ``(B, 1 + 3D)``, row ``j`` of an epoch's ``epoch_rows`` ``(S, B,
    1 + 3D)`` held on the device (see :func:`assemble`), and the next position: ``(j + 1,
    its rows)``. The position advances on the device, so a step needs no transfer from the
    host (a small one can make the host wait for the device on GPUs). The next rows are an
    output, made once: sliced from ``epoch_rows`` where they are used, the slice was fused
    into every per-pixel loop that reads a size (100 µs a step on a CPU for a tiny model)."""
    # Clamped at the epoch's last step: the next epoch's rows are uploaded with the epoch.
    following = jax.lax.dynamic_index_in_dim(epoch_rows, j + 1, keepdims=False)
    return assemble(images, labels, slab_rows, stored, rows, **kw), (j + 1, following)


class DeviceLoader(BatchPlan):
    """Infinite, deterministic, resumable training batches built on the devices.

    Same arguments and plan as :class:`~fcn_jax.data.loader.TrainLoader` (``process_count``
    and the rows each process takes come from ``mesh``); batches are global arrays split over
    ``mesh`` (``{"image", "label", "sizes"}``). The source is held as :func:`device_layout`
    says (:func:`device_data_problem`: whether it fits). ``compile_seconds``: time spent
    compiling the assembly, once per bucket.
    """

    pipeline = "device"  # the summary's input_pipeline

    def __init__(
        self,
        source: Source,
        policy: SizePolicy,
        buckets: Sequence[Sequence[int]],
        batch_size: int,
        seed: int,
        *,
        mesh: jax.sharding.Mesh,
        min_size: Sequence[int] | None = None,
        batch_multiple: int | None = None,
        augmentation: Augmentation | None = None,
    ):
        super().__init__(
            source,
            policy,
            buckets,
            batch_size,
            seed,
            process_count=jax.process_count(),
            min_size=min_size,
            batch_multiple=batch_multiple,
            augmentation=augmentation,
        )
        self.layout = device_layout(source, policy, self.buckets, self.min_size)
        slabs, labels = read_split(source, self.layout)
        self.storage_dtype = slabs[0].dtype
        self._mesh = mesh
        sizes = source.sizes()
        self._held = [
            sharding.replicate(x, mesh) for x in (labels, self.layout.row, sizes.astype(np.int32))
        ]  # labels, slab rows, stored sizes: what every assembly takes after its slab
        self._slabs = [sharding.replicate(x, mesh) for x in slabs]
        self._padded = [
            bool((sizes[self.layout.slab == k] != shape).any())
            for k, shape in enumerate(self.layout.shapes)
        ]
        self._resize = self._needs_resize(sizes)
        self._steps: dict = {}  # (build, shapes) -> the assembly compiled on its own
        self._builds: dict = {}  # canvas -> its assemble_next
        self._zero = sharding.replicate(np.zeros((), np.int32), mesh)
        self._next, self._on_device = 0, None  # (epoch, step within it) of the device rows

    def _needs_resize(self, sizes: np.ndarray) -> bool:
        """Whether some example is ever resized, zoomed or shifted."""
        if self.augmentation.active or self.policy.kind == "mixed_example":
            return True
        if self.policy.kind == "native":  # raised to the model's minimum
            return not np.array_equal(effective_sizes(sizes, self.min_size), sizes)
        return set(self.policy.grid()) != {
            tuple(int(v) for v in s) for s in np.unique(sizes, axis=0)
        }

    def _slab(self, canvas: tuple[int, ...]) -> int:
        """The slab a batch of this canvas reads (native batches come from one bucket)."""
        return 0 if len(self.layout.shapes) == 1 else self.buckets.index(canvas)

    def _build(self, canvas: tuple[int, ...]) -> Callable:
        """:func:`assemble_next` for batches of this canvas (one object per canvas: it keys
        the compiles)."""
        if canvas not in self._builds:
            kw = dict(canvas=canvas, resize=self._resize, padded=self._padded[self._slab(canvas)])
            self._builds[canvas] = functools.partial(assemble_next, **kw)
        return self._builds[canvas]

    def _compiled(self, batch: OnDevice) -> Callable:
        """The assembly of ``batch`` compiled on its own (:meth:`__next__`), once per canvas
        and argument shapes (timed)."""
        key = batch_key(batch)
        if key not in self._steps:
            out = (sharding.batch_sharded(self._mesh), sharding.replicated(self._mesh))
            start = time.perf_counter()
            self._steps[key] = jax.jit(batch.build, out_shardings=out).lower(*batch.args).compile()
            self.compile_seconds += time.perf_counter() - start
        return self._steps[key]

    def _upload(self, epoch: int, j: int, first: int) -> None:
        """Put the rows of every step of ``epoch`` (its first global step is ``first``) on the
        devices, and the position ``j`` within it."""
        steps = range(first, first + len(self._plan(epoch)))
        epoch_rows = np.stack([self.rows(s)[1] for s in steps])
        self._epoch_rows = sharding.replicate(epoch_rows, self._mesh)
        self._j = sharding.replicate(np.asarray(j, np.int32), self._mesh)
        self._rows = sharding.replicate(epoch_rows[j], self._mesh)
        self._on_device = (epoch, j)

    def rows(self, step: int) -> tuple[tuple[int, ...], np.ndarray]:
        """Step ``step``'s canvas and the ``(B, 1 + 3D)`` int32 rows :func:`assemble` takes."""
        plan = self.planned(step)
        sizes = self.example_sizes(plan)
        content, start = self.augmentation.boxes(self.seed, step, sizes)
        rows = np.concatenate([plan[0][:, None], sizes, content, start], axis=1)
        return tuple(plan[1]), rows.astype(np.int32)

    def __iter__(self) -> Iterator[dict]:
        return self

    def __next__(self) -> dict:
        """The next batch, assembled by itself: ``{"image", "label", "sizes"}`` on the
        devices (the training loop lets its step assemble it: :meth:`step_input`)."""
        batch = self.step_input()
        out, carry = self._compiled(batch)(*batch.args)
        if batch.keep is not None:
            batch.keep(carry)
        return out

    def step_input(self) -> OnDevice:
        """The next batch as the train step takes it: the arrays it is assembled from, so
        that the step assembles it (:class:`~fcn_jax.steps.OnDevice`)."""
        self._start_clock()
        step = self._next
        epoch, j = self._locate(step)
        plan = self._plan(epoch)[j]
        canvas = tuple(plan[1])
        self._count(plan)
        self._next += 1
        if self._variable_epochs:  # batch sizes vary: this step's rows go up alone
            return self.held_input(step)
        if self._on_device != (epoch, j):  # the first step, a resume or a new epoch
            self._upload(epoch, j, step - j)
        self._on_device = (epoch, j + 1)
        held = (self._slabs[self._slab(canvas)], *self._held)
        args = (*held, self._epoch_rows, self._j, self._rows)
        return OnDevice(self._build(canvas), args, self._keep)

    def held_input(self, step: int) -> OnDevice:
        """Step ``step``'s input with its rows put on the devices alone (as a one-step epoch
        at position 0): the same batch as :meth:`step_input` gives, from any step, without moving
        the loader (used when batch sizes vary, and to time the step by itself)."""
        canvas, rows = self.rows(step)
        held = (self._slabs[self._slab(canvas)], *self._held)
        # Both shapes from the host: an eager ``rows[None]`` on the device took 42 µs against
        # 22 for two small copies on a CPU, and compiled once per batch shape.
        epoch_rows, rows = (sharding.replicate(x, self._mesh) for x in (rows[None], rows))
        return OnDevice(self._build(canvas), (*held, epoch_rows, self._zero, rows))

    def abstract_input(self, canvas: tuple[int, ...], batch_size: int) -> OnDevice:
        """What :meth:`step_input` gives for a batch of ``batch_size`` examples of ``canvas``,
        abstract (``--precompile``)."""
        steps = 1 if self._variable_epochs else self.batches_per_epoch
        replicated = sharding.replicated(self._mesh)
        rows = jax.ShapeDtypeStruct(
            (batch_size, 1 + 3 * len(canvas)), np.int32, sharding=replicated
        )
        epoch_rows = jax.ShapeDtypeStruct((steps, *rows.shape), np.int32, sharding=replicated)
        j = jax.ShapeDtypeStruct((), np.int32, sharding=replicated)
        held = (self._slabs[self._slab(canvas)], *self._held)
        return OnDevice(self._build(canvas), (*held, epoch_rows, j, rows))

    def _keep(self, carry: tuple[jax.Array, jax.Array]) -> None:
        self._j, self._rows = carry

    def _position(self) -> int:
        return self._next

    def _seek(self, step: int) -> None:
        self._next = step
