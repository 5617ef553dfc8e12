"""Layers that stay exact under zero padding.

A batch may hold examples of different sizes, zero-padded after their content to one array
shape, with ``sizes`` (B, D) giving each example's true extent. Every layer here

- pads explicitly on the leading side by an amount that does not depend on the input size, so
  the sampling grid of a strided convolution is the same for the padded and the lone example;
- computes each example's new extent exactly (``floor((n + lo + hi - k) / s) + 1``);
- re-zeroes positions beyond that extent, so the next layer sees what the lone example's own
  zero padding would have been;
- normalizes and pools over valid positions only.

``sizes=None`` means every example fills the whole array; no masking is done then.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from fcn_jax.models.strided_conv import conv_general_dilated

Sizes = jax.Array | None  # (B, D) int32 true extents, or None for "the whole array"


def conv_out_size(n, kernel: int, stride: int, pad: tuple[int, int]):
    """Extent after a convolution; ``n`` is an int or an int array."""
    return (n + pad[0] + pad[1] - kernel) // stride + 1


def valid_mask(sizes: jax.Array, spatial_shape: tuple[int, ...]) -> jax.Array:
    """(B, *spatial, 1) bool mask of the positions inside each example's extent."""
    mask = None
    for axis, length in enumerate(spatial_shape):
        inside = jnp.arange(length) < sizes[:, axis : axis + 1]  # (B, length)
        shape = [sizes.shape[0]] + [1] * len(spatial_shape) + [1]
        shape[1 + axis] = length
        inside = inside.reshape(shape)
        mask = inside if mask is None else mask & inside
    return mask


# The normalizations and global poolings the layers have (None: no normalization).
NORMS = (None, "none", "batch", "group")
POOLS = ("avg", "max")


def check_choices(norm: str | None, pool: str) -> None:
    """The one check of ``norm`` and ``pool``: a one-line ValueError naming the flag."""
    if norm not in NORMS:
        raise ValueError(f"--norm={norm!r}: expected one of {NORMS}")
    if pool not in POOLS:
        raise ValueError(f"--pool={pool!r}: expected one of {POOLS}")


def make_norm(kind: str | None, features: int, dtype, rngs: nnx.Rngs) -> nnx.Module | None:
    """``"batch"`` (BatchNorm), ``"group"`` (GroupNorm) or ``None`` / ``"none"`` (checked by
    :func:`check_choices`)."""
    if kind is None or kind == "none":
        return None
    if kind == "batch":
        return nnx.BatchNorm(features, momentum=0.9, epsilon=1e-5, dtype=dtype, rngs=rngs)
    return nnx.GroupNorm(features, num_groups=math.gcd(features, 8), dtype=dtype, rngs=rngs)


def apply_norm(norm: nnx.Module | None, x: jax.Array, mask: jax.Array | None) -> jax.Array:
    """Normalize with statistics over valid positions only (masked BatchNorm/GroupNorm)."""
    if norm is None:
        return x
    if mask is None:
        return norm(x)
    return norm(x, mask=jnp.broadcast_to(mask, x.shape))


class ConvLayer(nnx.Module):
    """Convolution (fixed explicit padding) → optional norm → optional ReLU → re-zero padding.

    (B, *S, C_in) → (B, *S', C_out) with ``S' = floor((S + lo + hi - k) / stride) + 1``.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        kernel: int,
        stride: int = 1,
        *,
        spatial_dims: int,
        pad: tuple[int, int] | None = None,
        norm: str | None = None,
        relu: bool = True,
        dtype=jnp.float32,
        rngs: nnx.Rngs,
    ):
        self.kernel, self.stride = kernel, stride
        self.pad = pad if pad is not None else ((kernel - 1) // 2, (kernel - 1) // 2)
        self.relu = relu
        init = nnx.initializers.kaiming_normal() if relu else nnx.initializers.lecun_normal()
        self.conv = nnx.Conv(
            in_features,
            out_features,
            kernel_size=(kernel,) * spatial_dims,
            strides=(stride,) * spatial_dims,
            padding=[self.pad] * spatial_dims,
            use_bias=norm in (None, "none"),
            kernel_init=init,
            dtype=dtype,
            conv_general_dilated=conv_general_dilated,
            rngs=rngs,
        )
        self.norm = make_norm(norm, out_features, dtype, rngs)

    def out_size(self, n):
        return conv_out_size(n, self.kernel, self.stride, self.pad)

    def __call__(self, x: jax.Array, sizes: Sizes) -> tuple[jax.Array, Sizes]:
        y = self.conv(x)
        sizes = None if sizes is None else self.out_size(sizes)
        mask = None if sizes is None else valid_mask(sizes, y.shape[1:-1])
        y = apply_norm(self.norm, y, mask)
        if self.relu:
            y = nnx.relu(y)
        if mask is not None:
            y = jnp.where(mask, y, 0)
        return y, sizes


class ResidualBlock(nnx.Module):
    """Basic residual block: two 3-wide convolutions with norm, and a 1-wide projection
    shortcut when the stride or width changes. Both paths map extent n to ceil(n / stride)."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        stride: int,
        *,
        spatial_dims: int,
        norm: str,
        dtype=jnp.float32,
        rngs: nnx.Rngs,
    ):
        common = dict(spatial_dims=spatial_dims, norm=norm, dtype=dtype, rngs=rngs)
        self.conv1 = ConvLayer(in_features, out_features, 3, stride, **common)
        self.conv2 = ConvLayer(out_features, out_features, 3, 1, relu=False, **common)
        project = stride != 1 or in_features != out_features
        self.shortcut = (
            ConvLayer(in_features, out_features, 1, stride, pad=(0, 0), relu=False, **common)
            if project
            else None
        )

    def out_size(self, n):
        return self.conv1.out_size(n)

    def __call__(self, x: jax.Array, sizes: Sizes) -> tuple[jax.Array, Sizes]:
        y, new_sizes = self.conv1(x, sizes)
        y, _ = self.conv2(y, new_sizes)
        skip = x if self.shortcut is None else self.shortcut(x, sizes)[0]
        # Both operands are zero beyond the valid extent, and relu(0) = 0: no re-mask needed.
        return nnx.relu(y + skip), new_sizes


def global_pool(x: jax.Array, sizes: Sizes, kind: str = "avg") -> jax.Array:
    """(B, *S, K) → (B, K), averaging (or taking the max) over valid positions only."""
    axes = tuple(range(1, x.ndim - 1))
    if sizes is None:
        return x.mean(axes) if kind == "avg" else x.max(axes)
    mask = valid_mask(sizes, x.shape[1:-1])
    if kind == "avg":
        count = jnp.prod(sizes, axis=1, keepdims=True).astype(x.dtype)
        return jnp.where(mask, x, 0).sum(axes) / count
    return jnp.where(mask, x, -jnp.inf).max(axes)
