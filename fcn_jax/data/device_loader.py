"""Training batches assembled on the devices from a train split held there.

When the train split has one size and fits in a share of device memory, it is placed on every
device once (uint8 when its values are k/255, else float32). Each step the host looks up the
same plan as :class:`~fcn_jax.data.loader.TrainLoader` (:mod:`fcn_jax.data.plan`): per
example ``1 + 3D`` integers, its index, size, content extent and content start (zoom and shift
of the augmentation). They go to the devices once per epoch (per step where batch sizes vary),
and a position kept on the device picks each step's. One jitted function per bucket gathers
the examples, resizes each with ``jax.image.scale_and_translate`` (bilinear, antialiased when
shrinking, as PIL) to its own extent and offset on the bucket-sized canvas, and zeroes what
lies outside its size.

Against the host loader, for the same seed: the same indices, labels, sizes and shapes; pixels
equal where no resizing happens and within 1e-5 where it does (two implementations of the same
filter); on several processes the rows of a global batch are in plan order rather than
interleaved by process.
"""

from __future__ import annotations

import functools
import math
import os
import time
import weakref
from collections.abc import Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from fcn_jax import sharding
from fcn_jax.data.augment import Augmentation
from fcn_jax.data.plan import BatchPlan, effective_sizes
from fcn_jax.data.policies import SizePolicy
from fcn_jax.data.sources import Source
from fcn_jax.models.layers import valid_mask

READ_CHUNK = 1024
# uint8 value -> float32, computed as the host sources do (x / 255 in float32): a lookup keeps
# the device's pixels bit-identical (XLA may turn the division into a reciprocal product).
_UINT8_TO_FLOAT = np.arange(256, dtype=np.uint8).astype(np.float32) / 255.0


def device_memory_bytes() -> int:
    """Memory of one local device (the host's RAM for the CPU backend)."""
    stats = jax.local_devices()[0].memory_stats() or {}
    if "bytes_limit" in stats:
        return int(stats["bytes_limit"])
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def device_data_problem(source: Source, fraction: float) -> str | None:
    """Why ``source`` cannot be held on each device within ``fraction`` of its memory, or
    None when it can (sized as float32, the larger of the two storage types)."""
    size = source.common_size()
    if size is None:
        return "its examples differ in size (the device path needs one size)"
    need = len(source) * math.prod(size) * source.in_channels * 4
    budget = fraction * device_memory_bytes()
    if need > budget:
        return f"it needs {need / 2**20:.0f} MiB, more than {budget / 2**20:.0f} MiB"
    return None


# The arrays read from each source still in use: the runs of a comparison share its dataset,
# and decoding 20 000 TFDS examples takes about 3 s per run.
_read: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def read_arrays(source: Source) -> tuple[np.ndarray, np.ndarray]:
    """Every example of a one-size source: images ``(N, *S, C)`` (uint8 when every value is a
    multiple of 1/255, so that ``/ 255`` restores it exactly, else float32) and labels (N,);
    read once per source object (the arrays are not to be modified)."""
    if source not in _read:
        _read[source] = _read_all(source)
    return _read[source]


def _read_all(source: Source) -> tuple[np.ndarray, np.ndarray]:
    images, labels = [], []
    for start in range(0, len(source), READ_CHUNK):
        chunk = source.get_many(range(start, min(start + READ_CHUNK, len(source))))
        images.append(np.stack([ex["image"] for ex in chunk]))
        labels.append(np.asarray([ex["label"] for ex in chunk], np.int32))
    x = np.concatenate(images)
    q = np.rint(x * 255)
    if q.min() >= 0 and q.max() <= 255 and np.array_equal(q.astype(np.float32) / 255.0, x):
        x = q.astype(np.uint8)
    return x, np.concatenate(labels)


def assemble(images, labels, rows, *, canvas: tuple[int, ...], resize: bool) -> dict:
    """One batch from examples held on the device.

    Args:
      images: ``(N, *S, C)`` uint8 or float32; labels: ``(N,)`` int32.
      rows: ``(B, 1 + 3D)`` int32: example index, size (B, D), content extent (B, D) and
        content start (B, D) on the canvas.
      canvas: the batch's spatial shape (a bucket).
      resize: False when every example is used as stored (its size is the canvas).
    Returns:
      ``{"image": (B, *canvas, C) float32, "label": (B,), "sizes": (B, D)}``, zero beyond
      each example's size.
    """
    d = len(canvas)
    index, size = rows[:, 0], rows[:, 1 : 1 + d]
    content, start = rows[:, 1 + d : 1 + 2 * d], rows[:, 1 + 2 * d :]
    x = jnp.take(images, index, axis=0)
    x = jnp.asarray(_UINT8_TO_FLOAT)[x] if images.dtype == jnp.uint8 else x.astype(jnp.float32)
    if resize:
        scale = content / jnp.asarray(images.shape[1:-1], jnp.float32)
        place = functools.partial(
            jax.image.scale_and_translate,
            shape=(*canvas, images.shape[-1]),
            spatial_dims=tuple(range(d)),
            method="linear",
            antialias=True,
            precision=jax.lax.Precision.HIGHEST,
        )
        x = jax.vmap(lambda im, s, t: place(im, scale=s, translation=t))(
            x, scale, start.astype(jnp.float32)
        )
        x = jnp.where(valid_mask(size, canvas), x, 0.0)
    return {"image": x, "label": jnp.take(labels, index), "sizes": size}


def assemble_next(images, labels, epoch_rows, j, *, canvas, resize) -> tuple[dict, jax.Array]:
    """Batch ``j`` of an epoch whose rows ``(S, B, 1 + 3D)`` are on the device (see
    :func:`assemble`), and ``j + 1``: the position advances on the device, so a step needs no
    transfer from the host (a small one can make the host wait for the device on GPUs)."""
    rows = jax.lax.dynamic_index_in_dim(epoch_rows, j, keepdims=False)
    return assemble(images, labels, rows, canvas=canvas, resize=resize), j + 1


class DeviceLoader(BatchPlan):
    """Infinite, deterministic, resumable training batches built on the devices.

    Same arguments and plan as :class:`~fcn_jax.data.loader.TrainLoader` (``process_count``
    and the rows each process takes come from ``mesh``); batches are global arrays split over
    ``mesh`` (``{"image", "label", "sizes"}``). The source must have one size (see
    :func:`device_data_problem`). ``compile_seconds``: time spent compiling the assembly, once
    per bucket.
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
        self._stored = source.common_size()
        if self._stored is None:
            raise ValueError("the device loader needs a train split whose examples share a size")
        images, labels = read_arrays(source)
        self.storage_dtype = images.dtype
        self._mesh = mesh
        self._images = sharding.replicate(images, mesh)
        self._labels = sharding.replicate(labels, mesh)
        self._resize = self._needs_resize()
        self._steps: dict = {}  # (function, canvas, shapes) -> compiled assembly
        self._next, self._on_device = 0, None  # (epoch, step within it) of the device rows

    def _needs_resize(self) -> bool:
        """Whether some example is ever resized, zoomed or shifted."""
        if self.augmentation.active or self.policy.kind == "mixed_example":
            return True
        if self.policy.kind == "native":
            sizes = {tuple(effective_sizes(np.asarray([self._stored]), self.min_size)[0])}
        else:
            sizes = set(self.policy.grid())
        return sizes != {self._stored}

    def _compiled(self, fn, canvas: tuple[int, ...], args: tuple):
        """``fn`` (:func:`assemble` or :func:`assemble_next`) compiled for this canvas and
        these argument shapes, once each (timed)."""
        key = (fn.__name__, canvas, *(a.shape for a in args))
        if key not in self._steps:
            batches = sharding.batch_sharded(self._mesh)  # assemble_next also returns j + 1
            out = (batches, sharding.replicated(self._mesh)) if fn is assemble_next else batches
            jitted = jax.jit(
                functools.partial(fn, canvas=canvas, resize=self._resize), out_shardings=out
            )
            start = time.perf_counter()
            self._steps[key] = jitted.lower(self._images, self._labels, *args).compile()
            self.compile_seconds += time.perf_counter() - start
        return self._steps[key]

    def _upload(self, epoch: int, j: int, first: int) -> None:
        """Put the rows of every step of ``epoch`` (its first global step is ``first``) on the
        devices, and the position ``j`` within it."""
        steps = range(first, first + len(self._plan(epoch)))
        self._epoch_rows = sharding.replicate(
            np.stack([self.rows(s)[1] for s in steps]), self._mesh
        )
        self._j = sharding.replicate(np.asarray(j, np.int32), self._mesh)
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
        self._start_clock()
        step = self._next
        epoch, j = self._locate(step)
        plan = self._plan(epoch)[j]
        canvas = tuple(plan[1])
        self._count(plan)
        self._next += 1
        if self._variable_epochs:  # batch sizes vary: this step's rows go up alone
            rows = sharding.replicate(self.rows(step)[1], self._mesh)
            return self._compiled(assemble, canvas, (rows,))(self._images, self._labels, rows)
        if self._on_device != (epoch, j):  # the first step, a resume or a new epoch
            self._upload(epoch, j, step - j)
        args = (self._epoch_rows, self._j)
        batch, self._j = self._compiled(assemble_next, canvas, args)(
            self._images, self._labels, *args
        )
        self._on_device = (epoch, j + 1)
        return batch

    def _position(self) -> int:
        return self._next

    def _seek(self, step: int) -> None:
        self._next = step
