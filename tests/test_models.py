"""Model core: shapes, exactness under padding, masked statistics, errors, compile counts."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from batches import padded_batch
from flax import nnx
from hypothesis import given, settings
from hypothesis import strategies as st

import fcn_jax
from fcn_jax.models.layers import global_pool

TINY = dict(num_classes=5, in_channels=2, width=0.125)
PRESET_NORMS = [
    ("seed", None),
    ("seed", "batch"),
    ("allcnn", None),
    ("nin", "group"),
    ("vgg", "batch"),
    ("resnet", "batch"),
    ("resnet", "group"),
]


@nnx.jit
def logits_and_map(model, x, sizes=None):
    """Jitted forward (one compile per shape, faster than op-by-op in tests)."""
    cmap, out_sizes = model.features(x, sizes)
    return global_pool(cmap, out_sizes, model.spec.pool), cmap


def layer_shapes(model, x):
    shapes = [x.shape]
    sizes = None
    for layer in (*model.body, model.head):
        x, sizes = layer(x, sizes)
        shapes.append(x.shape)
    shapes.append(model(jnp.ones(shapes[0])).shape)
    return shapes


def test_seed_shapes_layer_by_layer():
    model = fcn_jax.create_model("seed", num_classes=10, in_channels=1, spatial_dims=2, seed=0)
    assert layer_shapes(model, jnp.ones((4, 28, 28, 1))) == [
        (4, 28, 28, 1),
        (4, 14, 14, 32),
        (4, 7, 7, 64),
        (4, 3, 3, 128),
        (4, 3, 3, 10),
        (4, 10),
    ]
    assert layer_shapes(model, jnp.ones((4, 28, 16, 1))) == [
        (4, 28, 16, 1),
        (4, 14, 8, 32),
        (4, 7, 4, 64),
        (4, 3, 2, 128),
        (4, 3, 2, 10),
        (4, 10),
    ]
    assert model.class_map(jnp.ones((4, 28, 16, 1))).shape == (4, 3, 2, 10)
    assert model.min_size == (8, 8)
    # A fourth stage (3-wide) ceil-halves: 14 -> 7 -> 3 -> 1 -> 1, the minimum size stays 8.
    deep = fcn_jax.create_model("seed", num_classes=10, depth=4, width=0.125)
    assert deep.class_map(jnp.ones((1, 14, 64, 1))).shape == (1, 1, 4, 10)
    assert deep.min_size == (8, 8)


def n_params(name, **kw):
    """Parameter count, from shapes only (no initialization, no input size involved)."""
    model = nnx.eval_shape(lambda: fcn_jax.create_model(name, num_classes=10, **kw))
    return sum(p.size for p in jax.tree.leaves(nnx.state(model, nnx.Param)))


@pytest.mark.parametrize("name", sorted(fcn_jax.PRESETS))
def test_width_and_depth_scale_the_model(name):
    small = n_params(name, width=0.25)
    assert small < n_params(name, width=0.5)
    assert small < n_params(name, width=0.25, depth=5)  # above every preset's default
    # 1-D and 2-D come from the same code; the 2-D kernels have more taps.
    assert 0 < n_params(name, width=0.25, spatial_dims=1) < small


@settings(max_examples=8, deadline=None)
@given(
    spatial_dims=st.sampled_from([1, 2]),
    extent=st.lists(st.integers(8, 70), min_size=2, max_size=2),
    batch=st.integers(1, 3),
)
def test_logits_shape_for_any_size(spatial_dims, extent, batch):
    model = _tiny_seed(spatial_dims)
    shape = (batch, *extent[:spatial_dims], 2)
    x = jnp.asarray(np.random.default_rng(0).normal(size=shape), jnp.float32)
    logits, cmap = logits_and_map(model, x)
    assert logits.shape == (batch, 5)
    assert np.isfinite(np.asarray(logits)).all()
    assert cmap.shape[1:-1] == tuple(int(model.out_size(n)) for n in extent[:spatial_dims])


_SEEDS = {}


def _tiny_seed(spatial_dims):
    if spatial_dims not in _SEEDS:
        _SEEDS[spatial_dims] = fcn_jax.create_model("seed", spatial_dims=spatial_dims, **TINY)
    return _SEEDS[spatial_dims]


def rel_err(a, b):
    return float(np.abs(np.asarray(a) - np.asarray(b)).max() / np.abs(np.asarray(b)).max())


@pytest.mark.parametrize("spatial_dims", [1, 2])
@pytest.mark.parametrize(
    "name,norm,depth", [(*p, None) for p in PRESET_NORMS] + [("seed", None, 4)]
)
def test_padded_equals_alone(name, norm, depth, spatial_dims):
    model = fcn_jax.create_model(
        name, spatial_dims=spatial_dims, norm=norm, depth=depth, seed=1, **TINY
    )
    model.eval()
    rng = np.random.default_rng(spatial_dims)
    lo = model.min_size[0]
    sizes = rng.integers(lo, lo + 20, size=(3, spatial_dims))
    x, s, alone = padded_batch(rng, sizes, 2)
    logits, cmap = logits_and_map(model, x, s)
    out_sizes = np.asarray(model.out_size(s))
    for i, xi in enumerate(alone):
        ref_logits, ref_cmap = (a[0] for a in logits_and_map(model, jnp.asarray(xi)[None]))
        assert ref_cmap.shape[:-1] == tuple(out_sizes[i])
        assert rel_err(logits[i], ref_logits) <= 1e-5
        valid = tuple(slice(0, n) for n in out_sizes[i])
        assert rel_err(cmap[i][valid], ref_cmap) <= 1e-5
        # Beyond the valid extent the class map is zero.
        outside = np.asarray(cmap[i]).copy()
        outside[valid] = 0
        assert not outside.any()


def test_max_pool_ignores_padding():
    model = fcn_jax.create_model("seed", spatial_dims=2, pool="max", **TINY)
    rng = np.random.default_rng(3)
    x, s, alone = padded_batch(rng, [[9, 30], [20, 11]], 2)
    logits, _ = logits_and_map(model, x, s)
    for i, xi in enumerate(alone):
        assert rel_err(logits[i], logits_and_map(model, jnp.asarray(xi)[None])[0][0]) <= 1e-5


@pytest.mark.parametrize(
    "shape,sizes,match",
    [
        ((2, 28, 28), None, "rank 4"),
        ((2, 28, 28, 3), None, "1 channels"),
        ((2, 5, 28, 1), None, "below the model's minimum"),
        ((2, 28, 28, 1), [[28, 28]], r"sizes must have shape \(B, D\) = \(2, 2\)"),
        ((2, 28, 28, 1), [[28, 29], [10, 10]], "exceed"),
        ((2, 28, 28, 1), [[28, 28], [4, 10]], "below the model's minimum"),
        ((2, 28, 28, 1), [[28, 28], [0, 10]], "below the model's minimum"),
    ],
)
def test_bad_input_errors(shape, sizes, match):
    model = fcn_jax.create_model("seed", num_classes=10, in_channels=1, spatial_dims=2)
    sizes = None if sizes is None else jnp.asarray(sizes)
    with pytest.raises(ValueError, match=match):
        model(jnp.ones(shape), sizes=sizes)


def test_unknown_preset_errors():
    with pytest.raises(ValueError, match="unknown model 'lenet'"):
        fcn_jax.create_model("lenet", num_classes=10)


def test_jit_compiles_once_per_shape():
    model = _tiny_seed(2)
    graphdef, state = nnx.split(model)
    traces = []

    @jax.jit
    def forward(state, x, sizes):
        traces.append(x.shape)
        return nnx.merge(graphdef, state)(x, sizes)

    rng = np.random.default_rng(0)
    shapes = [(2, 16, 16, 2), (2, 24, 16, 2), (2, 16, 16, 2), (2, 24, 16, 2), (2, 16, 16, 2)]
    for shape in shapes:
        # New sizes inside a seen shape never retrace: sizes are data, not shape.
        sizes = jnp.asarray(rng.integers(8, 17, size=(2, 2)), jnp.int32)
        forward(state, jnp.zeros(shape), sizes)
    assert traces == [(2, 16, 16, 2), (2, 24, 16, 2)]
    assert forward._cache_size() == 2
