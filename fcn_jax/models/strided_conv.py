"""Strided convolutions whose input gradient skips XLA's zero-stuffing, and the switch that
routes ``nnx.Conv`` to them (``--conv_grad``).

Autodiff computes the input gradient of a strided convolution as a convolution of the output
gradient dilated by the stride; XLA:CPU runs that on mostly zeros. :func:`strided_conv`
computes the same sums as a stride-1 convolution plus depth-to-space (about 2x faster training
steps on CPU; measured per backend in docs/benchmarks.md).
"""

from __future__ import annotations

import contextlib
import functools
import math

import jax
import jax.numpy as jnp
from jax import lax


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
# "auto" (per backend). Read when a step is traced: each compiled step traces under its run's
# choice (conv_grad_mode, fcn_jax.steps.CompiledStep).
_conv_grad = "auto"


def resolve_conv_grad(mode: str, backend: str | None = None) -> str:
    """``auto`` → ``custom`` where it was measured faster: on CPU (about 2x faster steps) and
    on an H100 (1.0-1.26x at 28² and 64², batch 256 and 1024; docs/benchmarks.md); elsewhere
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


@contextlib.contextmanager
def conv_grad_mode(mode: str):
    """:func:`set_conv_grad` for the steps traced inside the block only."""
    previous = set_conv_grad(mode)
    try:
        yield
    finally:
        set_conv_grad(previous)


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
