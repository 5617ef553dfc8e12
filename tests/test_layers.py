"""The strided convolution's custom input gradient equals autodiff's."""

import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from jax import lax

from fcn_jax.models.strided_conv import _channels_last, strided_conv


@settings(max_examples=10, deadline=None)
@given(
    spatial_dims=st.sampled_from([1, 2]),
    kernel=st.sampled_from([1, 3, 4, 5]),
    stride=st.sampled_from([2, 3]),
    pad=st.tuples(st.integers(0, 2), st.integers(0, 2)),
    extent=st.integers(5, 13),
)
def test_strided_conv_gradients_match_autodiff(spatial_dims, kernel, stride, pad, extent):
    rng = np.random.default_rng(extent)
    shape = (2, *[extent + d for d in range(spatial_dims)], 3)  # odd and even extents
    x = jnp.asarray(rng.normal(size=shape), jnp.float32)
    w = jnp.asarray(rng.normal(size=(*(kernel,) * spatial_dims, 3, 4)), jnp.float32)
    strides, padding = (stride,) * spatial_dims, (pad,) * spatial_dims

    def reference(x, w):
        dims = _channels_last(spatial_dims)
        return lax.conv_general_dilated(x, w, strides, padding, dimension_numbers=dims)

    def ours(x, w):
        return strided_conv(x, w, strides, padding)

    y = reference(x, w)
    np.testing.assert_allclose(ours(x, w), y, rtol=1e-5, atol=1e-5)
    dy = jnp.asarray(rng.normal(size=y.shape), jnp.float32)
    want = jax.vjp(reference, x, w)[1](dy)
    got = jax.vjp(ours, x, w)[1](dy)
    for a, b in zip(got, want, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
