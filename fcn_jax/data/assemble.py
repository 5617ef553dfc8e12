"""Training batches assembled on the devices, in jit, from a train split held there: the
held arrays (:class:`Held`), the assembly (:func:`assemble`, :func:`assemble_next`) and the
input the train step takes from the device loader (:class:`OnDevice`): pure functions of
arrays, traced inside the step."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from fcn_jax.models.layers import valid_mask

# uint8 value -> float32, computed as the host sources do (x / 255 in float32): a lookup keeps
# the device's pixels bit-identical (XLA may turn the division into a reciprocal product).
_UINT8_TO_FLOAT = np.arange(256, dtype=np.uint8).astype(np.float32) / 255.0


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Held:
    """The arrays a step's batch is assembled from, all on every device.

    Attributes:
      images: ``(N_k, *S, C)`` uint8 or float32: the slab this batch's examples lie in.
      labels: ``(N,)`` int32 label of each example.
      slab_rows: ``(N,)`` int32 row of each example in its slab.
      stored: ``(N, D)`` int32 size of each example as held.
      epoch_rows: ``(S, B, 1 + 3D)`` int32 rows of every step of the epoch (one step where
        batch sizes vary).
      position: ``()`` int32 index of this step in ``epoch_rows``.
      rows: ``(B, 1 + 3D)`` int32 this step's rows: example index, size (D), content extent
        (D) and content start (D) on the canvas.
    """

    images: jax.Array
    labels: jax.Array
    slab_rows: jax.Array
    stored: jax.Array
    epoch_rows: jax.Array
    position: jax.Array
    rows: jax.Array

    def key(self) -> tuple:
        """Shapes and dtypes (dtype objects, cheaper than their names: this runs every step):
        what a compile depends on."""
        return tuple((a.shape, a.dtype) for a in (getattr(self, n) for n in _HELD))


_HELD = tuple(f.name for f in dataclasses.fields(Held))


@dataclasses.dataclass(frozen=True)
class OnDevice:
    """A train batch that the step assembles itself from arrays held on the devices, so that
    a step is one dispatch, not two.

    ``build(held) -> (batch, carry)`` is traceable and the same object for every batch it
    makes (it keys the compile); ``keep(carry)``, when given, hands ``carry`` (the loader's
    next position and rows, on the devices) back to the loader.
    """

    build: Callable
    held: Held
    keep: Callable | None = None


def batch_key(batch) -> tuple:
    """What a compile of a step depends on: the shapes and dtypes of a batch (a dict) or of
    an :class:`OnDevice`'s held arrays, with its assembly."""
    if isinstance(batch, OnDevice):
        return (batch.build, *batch.held.key())
    return tuple(sorted((k, v.shape, v.dtype) for k, v in batch.items()))


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


def assemble_next(held: Held, **kw) -> tuple[dict, tuple[jax.Array, jax.Array]]:
    """The batch of ``held.rows`` (see :func:`assemble`; ``kw``: its canvas, resize and
    padded) and the next position: ``(position + 1, its rows)``. The position advances on the
    device, so a step needs no transfer from the host (a small one can make the host wait for
    the device on GPUs). The next rows are an output, made once: sliced from ``epoch_rows``
    where they are used, the slice was fused into every per-pixel loop that reads a size."""
    # Clamped at the epoch's last step: the next epoch's rows are uploaded with the epoch.
    position = held.position
    following = jax.lax.dynamic_index_in_dim(held.epoch_rows, position + 1, keepdims=False)
    batch = assemble(held.images, held.labels, held.slab_rows, held.stored, held.rows, **kw)
    return batch, (position + 1, following)
