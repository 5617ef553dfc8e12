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

import functools
import math

import jax
import jax.numpy as jnp
from flax import nnx
from jax import lax

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


def _channels_last(nd: int) -> lax.ConvDimensionNumbers:
    """(B, *S, C) inputs and outputs, (*K, C_in, C_out) kernels: what ``nnx.Conv`` uses."""
    lhs = (0, nd + 1, *range(1, nd + 1))
    return lax.ConvDimensionNumbers(lhs, (nd + 1, nd, *range(nd)), lhs)


def _conv(x, w, strides, padding, precision):
    nd = x.ndim - 2
    return lax.conv_general_dilated(
        x, w, strides, padding, dimension_numbers=_channels_last(nd), precision=precision
    )


def _strided_input_grad(dy, w, strides, padding, in_shape, precision):
    """The input gradient of a strided convolution without zero-stuffing ``dy``.

    Autodiff would compute it as a convolution of ``dy`` dilated by the stride, which XLA:CPU
    runs on mostly zeros (and, when the input is barely larger than the kernel, with a very
    slow loop). Splitting each kernel tap ``t = s * a + r`` instead gives a stride-1
    convolution over the output grid producing ``prod(s) * C`` channels, rearranged into the
    input grid (depth-to-space). Same products, summed in another order.
    """
    nd = dy.ndim - 2
    c, o = w.shape[-2:]
    taps = [-(-k // s) for k, s in zip(w.shape[:nd], strides)]  # ceil(k / s) per axis
    w = jnp.pad(w, [(0, a * s - k) for a, s, k in zip(taps, strides, w.shape[:nd])] + [(0, 0)] * 2)
    w = w.reshape(*[d for a, s in zip(taps, strides) for d in (a, s)], c, o)
    w = jnp.flip(w, axis=tuple(range(0, 2 * nd, 2)))
    perm = [*range(0, 2 * nd, 2), 2 * nd + 1, *range(1, 2 * nd, 2), 2 * nd]
    w = w.transpose(perm).reshape(*taps, o, math.prod(strides) * c)
    dxs = _conv(dy, w, (1,) * nd, [(a - 1, a - 1) for a in taps], precision)
    b, grid = dxs.shape[0], dxs.shape[1 : nd + 1]
    dxs = dxs.reshape(b, *grid, *strides, c)
    perm = [0, *(i for ax in range(nd) for i in (1 + ax, 1 + nd + ax)), 1 + 2 * nd]
    dxs = dxs.transpose(perm).reshape(b, *(g * s for g, s in zip(grid, strides)), c)
    # dxs covers padded-input positions [0, grid * s); the input is [lo, lo + n).
    crop = [(-lo, n + lo - g * s, 0) for (lo, _), n, g, s in zip(padding, in_shape, grid, strides)]
    return lax.pad(dxs, jnp.zeros((), dxs.dtype), [(0, 0, 0), *crop, (0, 0, 0)])


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def strided_conv(x, w, strides, padding, precision=None):
    """Channels-last convolution with explicit padding whose input gradient is computed by
    :func:`_strided_input_grad` (the kernel gradient is the usual one)."""
    return _conv(x, w, strides, padding, precision)


def _strided_conv_fwd(x, w, strides, padding, precision):
    return _conv(x, w, strides, padding, precision), (x, w)


def _strided_conv_bwd(strides, padding, precision, residuals, dy):
    x, w = residuals
    _, kernel_vjp = jax.vjp(lambda w: _conv(x, w, strides, padding, precision), w)
    dx = _strided_input_grad(dy, w, strides, padding, x.shape[1:-1], precision)
    return dx.astype(x.dtype), kernel_vjp(dy)[0]


strided_conv.defvjp(_strided_conv_fwd, _strided_conv_bwd)

# The input gradient of strided convolutions: "custom" (:func:`strided_conv`), "autodiff" or
# "auto" (per backend). Read when a step is traced; training sets it per run (set_conv_grad).
_conv_grad = "auto"


def resolve_conv_grad(mode: str, backend: str | None = None) -> str:
    """``auto`` → ``custom`` where it was measured faster: on CPU (about 2x faster steps) and
    on an H100 (1.0-1.26x at 28² and 64², batch 256 and 1024; README, Performance); elsewhere
    (TPU, unmeasured) XLA's own ``autodiff``."""
    if mode != "auto":
        return mode
    return "custom" if (backend or jax.default_backend()) in ("cpu", "gpu", "cuda") else "autodiff"


def set_conv_grad(mode: str) -> str:
    """Use ``mode`` (custom, autodiff or auto) in steps traced from now on; returns the
    mode that was in force."""
    global _conv_grad
    if mode not in ("auto", "custom", "autodiff"):
        raise ValueError(f"conv_grad {mode!r}: expected auto, custom or autodiff")
    previous, _conv_grad = _conv_grad, mode
    return previous


def conv_general_dilated(
    lhs,
    rhs,
    window_strides,
    padding,
    lhs_dilation=None,
    rhs_dilation=None,
    dimension_numbers=None,
    feature_group_count=1,
    precision=None,
    **kwargs,
):
    """``lax.conv_general_dilated`` for ``nnx.Conv``, routing strided channels-last
    convolutions with explicit padding to :func:`strided_conv` (about 2× faster training steps
    on CPU for the ``seed`` model) unless :func:`set_conv_grad` chose autodiff; anything else
    goes to ``lax`` unchanged."""
    nd = lhs.ndim - 2
    plain = all(d in (None, 1) or tuple(d) == (1,) * nd for d in (lhs_dilation, rhs_dilation))
    if (
        resolve_conv_grad(_conv_grad) == "custom"
        and plain
        and feature_group_count == 1
        and any(s > 1 for s in window_strides)
        and not isinstance(padding, str)
        and dimension_numbers == _channels_last(nd)
        and all(v is None for v in kwargs.values())
    ):
        pads = tuple((int(lo), int(hi)) for lo, hi in padding)
        return strided_conv(lhs, rhs, tuple(window_strides), pads, precision)
    return lax.conv_general_dilated(
        lhs,
        rhs,
        window_strides,
        padding,
        lhs_dilation,
        rhs_dilation,
        dimension_numbers,
        feature_group_count,
        precision=precision,
        **kwargs,
    )


def make_norm(kind: str | None, features: int, dtype, rngs: nnx.Rngs) -> nnx.Module | None:
    """``"batch"`` (BatchNorm), ``"group"`` (GroupNorm) or ``None``."""
    if kind is None or kind == "none":
        return None
    if kind == "batch":
        return nnx.BatchNorm(features, momentum=0.9, epsilon=1e-5, dtype=dtype, rngs=rngs)
    if kind == "group":
        return nnx.GroupNorm(features, num_groups=math.gcd(features, 8), dtype=dtype, rngs=rngs)
    raise ValueError(f"norm must be 'batch', 'group' or None, got {kind!r}")


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
