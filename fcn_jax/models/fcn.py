"""The fully convolutional classifier: body → 1×1 convolution to classes → global pooling."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from fcn_jax.models.inputs import check_input_shape, check_sizes, check_sizes_shape
from fcn_jax.models.layers import ConvLayer, Sizes, global_pool, valid_mask


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """Everything needed to rebuild a model (kept with checkpoints and exports)."""

    name: str
    num_classes: int
    in_channels: int
    spatial_dims: int
    width: float = 1.0
    depth: int | None = None
    norm: str | None = None
    pool: str = "avg"
    dtype: str = "float32"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _concrete(a) -> np.ndarray | None:
    """The value of ``a`` as numpy, or None when it is traced (checks then happen elsewhere)."""
    try:
        return np.asarray(a)
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
        return None


class FCN(nnx.Module):
    """A fully convolutional classifier for inputs of any size, 1-D ``(B, L, C)`` or
    2-D ``(B, H, W, C)``.

    ``model(x, sizes)`` gives logits ``(B, num_classes)``; ``sizes`` (B, D) int holds each
    example's true extent, with ``x`` zero-padded after it. Each example's result equals that
    of the example run alone at its true size.
    """

    def __init__(self, spec: ModelSpec, body: list[nnx.Module], last_features: int, rngs):
        self.spec = spec
        self.body = nnx.List(body)
        self.head = ConvLayer(
            last_features,
            spec.num_classes,
            1,
            spatial_dims=spec.spatial_dims,
            relu=False,
            dtype=jnp.dtype(spec.dtype),
            rngs=rngs,
        )
        self.min_size = (self._min_extent(),) * spec.spatial_dims

    def out_size(self, n):
        """Extent of the class map for input extent ``n`` (int or int array)."""
        for layer in (*self.body, self.head):
            n = layer.out_size(n)
        return n

    def _min_extent(self) -> int:
        n = 1
        while True:
            m, ok = n, True
            for layer in (*self.body, self.head):
                m = layer.out_size(m)
                ok = ok and m >= 1
            if ok:
                return n
            n += 1

    def _check(self, x: jax.Array, sizes) -> None:
        """The input checks of :mod:`fcn_jax.models.inputs` (shared with exported models)."""
        spec = self.spec
        check_input_shape(x.shape, spec.spatial_dims, spec.in_channels, self.min_size)
        if sizes is None:
            return
        values = _concrete(sizes)
        if values is None:  # traced: its values are checked where they were made
            check_sizes_shape(sizes.shape, x.shape)
        else:
            check_sizes(values, x.shape, self.min_size)

    def features(self, x: jax.Array, sizes: Sizes = None) -> tuple[jax.Array, Sizes]:
        """Class map (B, *S', num_classes), zero beyond each example's extent, and that extent."""
        self._check(x, sizes)
        if sizes is not None:
            sizes = jnp.asarray(sizes, jnp.int32)
            x = jnp.where(valid_mask(sizes, x.shape[1:-1]), x, 0)
        x = x.astype(self.spec.dtype)
        for layer in self.body:
            x, sizes = layer(x, sizes)
        x, sizes = self.head(x, sizes)
        return x.astype(jnp.float32), sizes

    def class_map(self, x: jax.Array, sizes: Sizes = None) -> jax.Array:
        """The class activation map before pooling: (B, *S', num_classes)."""
        return self.features(x, sizes)[0]

    def __call__(self, x: jax.Array, sizes: Sizes = None) -> jax.Array:
        """Logits (B, num_classes)."""
        cmap, out_sizes = self.features(x, sizes)
        return global_pool(cmap, out_sizes, self.spec.pool)
