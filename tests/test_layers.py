"""The masked layers (fcn_jax.models.layers): exact extents, valid masks, re-zeroed padding,
masked normalization statistics and global pooling over valid positions only."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from batches import padded_batch
from flax import nnx
from jax import lax

from fcn_jax.models.layers import (
    ConvLayer,
    ResidualBlock,
    check_choices,
    conv_out_size,
    global_pool,
    valid_mask,
)


@pytest.mark.parametrize("kernel, stride, pad", [(3, 1, (1, 1)), (3, 2, (1, 1)), (4, 3, (0, 2))])
def test_conv_out_size_is_the_convolution_s_extent(kernel, stride, pad):
    """The formula equals the extent lax's convolution gives, for ints and int arrays."""
    extents = np.arange(kernel, kernel + 12)
    for n in extents:
        x = jax.ShapeDtypeStruct((1, int(n), 1), jnp.float32)
        w = jax.ShapeDtypeStruct((kernel, 1, 1), jnp.float32)
        conv = lambda x, w: lax.conv_general_dilated(  # noqa: E731
            x, w, (stride,), (pad,), dimension_numbers=("NWC", "WIO", "NWC")
        )
        assert conv_out_size(int(n), kernel, stride, pad) == jax.eval_shape(conv, x, w).shape[1]
    got = np.asarray(conv_out_size(jnp.asarray(extents), kernel, stride, pad))
    np.testing.assert_array_equal(
        got, [conv_out_size(int(n), kernel, stride, pad) for n in extents]
    )


def test_valid_mask_marks_each_example_s_extent():
    sizes = jnp.asarray([[2, 3], [4, 1], [0, 5]], jnp.int32)
    mask = np.asarray(valid_mask(sizes, (4, 5)))
    assert mask.shape == (3, 4, 5, 1) and mask.dtype == bool
    for k, (h, w) in enumerate(np.asarray(sizes)):
        want = np.zeros((4, 5), bool)
        want[:h, :w] = True
        np.testing.assert_array_equal(mask[k, ..., 0], want)
    one_d = np.asarray(valid_mask(jnp.asarray([[3]]), (5,)))
    np.testing.assert_array_equal(one_d[0, :, 0], [True, True, True, False, False])


def test_global_pool_ignores_what_lies_beyond_the_extent():
    """Average and max over each example's valid positions, whatever the padding holds (here
    large values that would win a max and move a mean); sizes=None pools everything."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 4, 6, 3)).astype(np.float32)
    sizes = np.array([[2, 5], [4, 1]])
    padded = x.copy()
    for k, (h, w) in enumerate(sizes):
        padded[k, h:], padded[k, :, w:] = 100.0, 100.0
    avg = np.asarray(global_pool(jnp.asarray(padded), jnp.asarray(sizes), "avg"))
    top = np.asarray(global_pool(jnp.asarray(padded), jnp.asarray(sizes), "max"))
    for k, (h, w) in enumerate(sizes):
        np.testing.assert_allclose(avg[k], x[k, :h, :w].mean((0, 1)), rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(top[k], x[k, :h, :w].max((0, 1)))
    np.testing.assert_allclose(global_pool(jnp.asarray(x), None), x.mean((1, 2)), rtol=1e-5)
    np.testing.assert_array_equal(global_pool(jnp.asarray(x), None, "max"), x.max((1, 2)))


def test_bad_norm_or_pool_is_a_one_line_error_naming_the_flag():
    for norm in (None, "none", "batch", "group"):
        check_choices(norm, "avg")
    check_choices(None, "max")
    with pytest.raises(ValueError, match=r"^--norm='layer': expected one of"):
        check_choices("layer", "avg")
    with pytest.raises(ValueError, match=r"^--pool='sum': expected one of"):
        check_choices(None, "sum")


def test_a_padded_batch_through_a_layer_equals_each_example_alone():
    """A strided ConvLayer (bias, ReLU) and ResidualBlock (GroupNorm, projection shortcut): on
    the valid extent the lone example's output, beyond it zeros, and the extent a layer
    reports is the lone output's."""
    rngs = nnx.Rngs(0)
    layers = [
        ConvLayer(2, 4, 3, 2, spatial_dims=2, rngs=rngs),
        ResidualBlock(2, 4, 2, spatial_dims=2, norm="group", rngs=rngs),
    ]
    forward = nnx.jit(lambda layers, x, s: [layer(x, s) for layer in layers])
    x, s, alone = padded_batch(np.random.default_rng(0), [[5, 9], [8, 4]], 2)
    padded = forward(layers, x, s)
    for k, xk in enumerate(alone):
        lone = forward(layers, jnp.asarray(xk)[None], None)
        for layer, (y, out_sizes), (want, _) in zip(layers, padded, lone, strict=True):
            np.testing.assert_array_equal(out_sizes, layer.out_size(s))
            h, w = np.asarray(out_sizes[k])
            assert want.shape[1:3] == (h, w)
            np.testing.assert_allclose(y[k, :h, :w], want[0], rtol=1e-5, atol=1e-5)
            assert not np.asarray(y[k, h:]).any() and not np.asarray(y[k, :, w:]).any()


@pytest.mark.parametrize("spatial_dims", [1, 2])
def test_masked_batchnorm_statistics(spatial_dims):
    """Train-mode BatchNorm over a padded batch uses the valid positions only."""
    layer = ConvLayer(2, 4, 3, 2, spatial_dims=spatial_dims, norm="batch", rngs=nnx.Rngs(0))
    layer.train()
    rng = np.random.default_rng(0)
    sizes = rng.integers(5, 15, size=(3, spatial_dims))
    x, s, alone = padded_batch(rng, sizes, 2)
    y, out_sizes = layer(x, s)
    # Reference: the conv outputs of each example alone, pooled over valid positions only.
    conv_alone = [np.asarray(layer.conv(jnp.asarray(xi)[None]))[0] for xi in alone]
    flat = np.concatenate([c.reshape(-1, 4) for c in conv_alone])
    momentum = 0.9  # running stats start at mean 0, var 1
    # A mean of values of both signs can be near 0: its error is relative to their scale
    # (float32 sums in another order, as on GPU), not to the mean itself.
    scale = (1 - momentum) * np.abs(flat).max()
    np.testing.assert_allclose(
        layer.norm.mean[...], (1 - momentum) * flat.mean(0), rtol=1e-5, atol=1e-6 * scale
    )
    np.testing.assert_allclose(
        layer.norm.var[...], momentum + (1 - momentum) * flat.var(0), rtol=1e-5
    )
    # More padding changes nothing: same outputs on the valid region.
    layer2 = ConvLayer(2, 4, 3, 2, spatial_dims=spatial_dims, norm="batch", rngs=nnx.Rngs(0))
    layer2.train()
    big = jnp.pad(x, [(0, 0)] + [(0, 7)] * spatial_dims + [(0, 0)])
    y2, _ = layer2(big, s)
    region = (slice(None), *(slice(0, n) for n in y.shape[1:-1]))
    np.testing.assert_allclose(np.asarray(y2[region]), np.asarray(y), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(layer2.norm.var[...], layer.norm.var[...], rtol=1e-6)
