"""Model presets. Each builds the body of an :class:`FCN`; the 1×1 class head and global pooling
are shared. ``width`` scales every channel count, ``depth`` the number of stages/blocks."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
from flax import nnx

from fcn_jax.models.fcn import FCN, ModelSpec
from fcn_jax.models.layers import ConvLayer, ResidualBlock, check_choices


def _ch(base: int, width: float) -> int:
    return max(1, round(base * width))


def seed_body(spec: ModelSpec, conv) -> tuple[list, int]:
    """The network from the discussion: 4-wide stride-2 convolutions (padding 1) that floor-halve
    the size, 32 → 64 → 128 channels (doubling per extra stage), ReLU; receptive field 22.

    Stages after the third are 3-wide (padding 1: ceil-halving, 1 → 1), so depth widens the
    receptive field (38 at depth 4) and keeps the minimum size at 8; a fourth 4-wide stage would
    map 1 → 0 and raise it to 16."""
    layers, c = [], spec.in_channels
    for i in range(spec.depth or 3):
        out = _ch(32 * 2**i, spec.width)
        layers.append(conv(c, out, 4 if i < 3 else 3, 2, pad=(1, 1)))
        c = out
    return layers, c


def vgg_body(spec: ModelSpec, conv) -> tuple[list, int]:
    """The ``seed`` stages, each followed by a 3-wide stride-1 convolution at the halved size
    (VGG-style: two convolutions per stage), 32 → 64 → 128 → 256 channels: twice the
    nonlinearities and a receptive field of 66 px at the default depth 4 (``seed``: 38) for
    about the same arithmetic as ``seed`` at width 1.5; minimum size 8, as ``seed``."""
    stages, c = seed_body(dataclasses.replace(spec, depth=spec.depth or 4), conv)
    layers = []
    for stage in stages:
        out = stage.conv.out_features
        layers += [stage, conv(out, out, 3, 1)]
    return layers, c


def allcnn_body(spec: ModelSpec, conv) -> tuple[list, int]:
    """All-CNN-C (Springenberg et al. 2014): per stage two 3-wide convolutions and a stride-2
    one instead of pooling (96, 192 channels), then a 3-wide and a 1-wide convolution."""
    layers, c = [], spec.in_channels
    for i in range(spec.depth or 2):
        out = _ch(96 * 2 ** min(i, 1), spec.width)
        layers += [conv(c, out, 3, 1), conv(out, out, 3, 1), conv(out, out, 3, 2)]
        c = out
    out = _ch(192, spec.width)
    layers += [conv(c, out, 3, 1), conv(out, out, 1, 1)]
    return layers, out


def nin_body(spec: ModelSpec, conv) -> tuple[list, int]:
    """Network in Network (Lin et al. 2013): mlpconv blocks (k-wide conv, then two 1-wide
    convs); blocks after the first start with a stride-2 convolution instead of max pooling."""
    blocks = [(5, 192, 160, 96), (5, 192, 192, 192), (3, 192, 192, 192)]
    depth = spec.depth or 3
    blocks = blocks + [blocks[-1]] * max(0, depth - len(blocks))
    layers, c = [], spec.in_channels
    for i, (k, c1, c2, c3) in enumerate(blocks[:depth]):
        c1, c2, c3 = (_ch(v, spec.width) for v in (c1, c2, c3))
        layers += [conv(c, c1, k, 1 if i == 0 else 2), conv(c1, c2, 1, 1), conv(c2, c3, 1, 1)]
        c = c3
    return layers, c


def resnet_body(spec: ModelSpec, conv) -> tuple[list, int]:
    """A small residual FCN (CIFAR ResNet style): a 3-wide stem, three stages of 16/32/64
    channels with ``depth`` basic blocks each (default 2), stride 2 entering stages 2 and 3."""
    norm = spec.norm or "batch"
    c = _ch(16, spec.width)
    layers = [conv(spec.in_channels, c, 3, 1, norm=norm)]
    for stage in range(3):
        out = _ch(16 * 2**stage, spec.width)
        for b in range(spec.depth or 2):
            stride = 2 if stage > 0 and b == 0 else 1
            layers.append(ResidualBlock(c, out, stride, **_common(spec), norm=norm, rngs=conv.rngs))
            c = out
    return layers, c


def fcn_body(spec: ModelSpec, conv) -> tuple[list, int]:
    """The fully convolutional network of Wang, Yan & Oates (2017), the time-series baseline:
    stride-1 convolutions 8, 5 and 3 wide with 128, 256 and 128 channels, each with BatchNorm
    and ReLU, then global average pooling (the 1×1 head before the pooling equals their dense
    layer after it). "Same" padding as Keras pads it (the extra position after the content);
    minimum size 1. ``depth`` takes the first blocks, or repeats the last beyond three."""
    depth = spec.depth or 3
    blocks = ([(8, 128), (5, 256)] + [(3, 128)] * max(1, depth - 2))[:depth]
    layers, c = [], spec.in_channels
    for k, base in blocks:
        out = _ch(base, spec.width)
        layers.append(conv(c, out, k, 1, pad=((k - 1) // 2, k // 2), norm=spec.norm or "batch"))
        c = out
    return layers, c


PRESETS: dict[str, Callable] = {
    "seed": seed_body,
    "vgg": vgg_body,
    "allcnn": allcnn_body,
    "nin": nin_body,
    "resnet": resnet_body,
    "fcn": fcn_body,
}


def _common(spec: ModelSpec) -> dict:
    return dict(spatial_dims=spec.spatial_dims, dtype=jnp.dtype(spec.dtype))


class _ConvFactory:
    """``conv(in, out, kernel, stride, **kw)`` with the spec's dims, norm, dtype and rngs."""

    def __init__(self, spec: ModelSpec, rngs: nnx.Rngs):
        self.spec, self.rngs = spec, rngs

    def __call__(self, c_in, c_out, kernel, stride, **kw):
        kw.setdefault("norm", self.spec.norm)
        return ConvLayer(c_in, c_out, kernel, stride, **_common(self.spec), rngs=self.rngs, **kw)


def build_model(spec: ModelSpec, seed: int = 0) -> FCN:
    """Build the model a :class:`ModelSpec` describes, with parameters drawn from ``seed``."""
    if spec.name not in PRESETS:
        raise ValueError(f"unknown model {spec.name!r}; expected one of {sorted(PRESETS)}")
    if spec.spatial_dims not in (1, 2, 3):
        raise ValueError(f"spatial_dims must be 1, 2 or 3, got {spec.spatial_dims}")
    check_choices(spec.norm, spec.pool)
    if spec.width <= 0 or (spec.depth is not None and spec.depth < 1):
        raise ValueError(f"width must be > 0 and depth >= 1, got {spec.width}, {spec.depth}")
    return _jitted_builder(spec)(jax.random.key(seed))


@functools.lru_cache(maxsize=32)
def _jitted_builder(spec: ModelSpec):
    """One compiled initializer per spec (the seed is an argument), instead of one small
    compile per parameter shape: creating a model again, with any seed, compiles nothing."""

    return nnx.jit(functools.partial(_build, spec))


def _build(spec: ModelSpec, key: jax.Array) -> FCN:
    rngs = nnx.Rngs(key)
    body, last = PRESETS[spec.name](spec, _ConvFactory(spec, rngs))
    return FCN(spec, body, last, rngs)


def abstract_model(spec: ModelSpec) -> FCN:
    """The model of ``spec`` with shape-only variables, nothing computed or compiled: a
    skeleton to restore a checkpoint into."""
    return nnx.eval_shape(lambda: _build(spec, jax.random.key(0)))


def create_model(
    name: str = "seed",
    *,
    num_classes: int,
    in_channels: int = 1,
    spatial_dims: int = 2,
    seed: int = 0,
    width: float = 1.0,
    depth: int | None = None,
    norm: str | None = None,
    pool: str = "avg",
    dtype: str = "float32",
) -> FCN:
    """Create a preset FCN (``seed``, ``allcnn``, ``nin``, ``resnet``).

    ``dtype`` is the computation dtype (``"bfloat16"`` for mixed precision); parameters stay
    float32. ``norm`` adds BatchNorm (``"batch"``) or GroupNorm (``"group"``) after each conv
    (``resnet`` uses BatchNorm unless told otherwise).
    """
    spec = ModelSpec(
        name, num_classes, in_channels, spatial_dims, width, depth, norm, pool, str(dtype)
    )
    return build_model(spec, seed)
