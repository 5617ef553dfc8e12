"""The strided convolution (fcn_jax.models.strided_conv): its custom input gradient equals
autodiff's, and the gradient chosen is the one traced."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from hypothesis import given, settings
from hypothesis import strategies as st
from jax import lax

from fcn_jax.models.layers import ConvLayer
from fcn_jax.models.strided_conv import (
    _channels_last,
    resolve_conv_grad,
    set_conv_grad,
    strided_conv,
)


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


@pytest.mark.parametrize("mode", ["custom", "autodiff"])
def test_conv_grad_choice(mode):
    """The chosen input gradient is the one traced, and both give the same gradients."""
    conv = ConvLayer(1, 3, 3, 2, spatial_dims=2, rngs=nnx.Rngs(0))
    x = jnp.asarray(np.random.default_rng(0).random((2, 9, 9, 1), np.float32))

    def grad_of_input(x):
        return jax.grad(lambda x: (conv(x, None)[0] ** 2).sum())(x)

    previous = set_conv_grad("custom")
    try:
        reference = grad_of_input(x)
        set_conv_grad(mode)
        text = str(jax.make_jaxpr(grad_of_input)(x))
        # autodiff convolves dy dilated by the stride; the custom form never dilates it.
        assert ("lhs_dilation=(2, 2)" in text) == (mode == "autodiff")
        np.testing.assert_allclose(grad_of_input(x), reference, rtol=1e-5, atol=1e-6)
    finally:
        set_conv_grad(previous)
    assert resolve_conv_grad("auto", "cpu") == "custom"
    assert resolve_conv_grad("auto", "gpu") == "custom"
    assert resolve_conv_grad("auto", "tpu") == "autodiff"
