"""The on-device input pipeline: same batches as the host loader, exact resume, jit resize,
pipeline choice; and the strided-conv gradient chosen both ways."""

import contextlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from hypothesis import given, settings
from hypothesis import strategies as st
from tiny import TINY_TRAIN

from fcn_jax import sharding
from fcn_jax.config import TrainConfig
from fcn_jax.data import TrainLoader, parse_size_policy, resize, resolve_buckets
from fcn_jax.data.arrays import ArraySource
from fcn_jax.data.augment import parse_augmentation
from fcn_jax.data.device_loader import DeviceLoader, assemble, device_data_problem, read_arrays
from fcn_jax.models import layers, strided_conv
from fcn_jax.run import train_and_evaluate

RESIZE_TOLERANCE = 1e-5  # PIL and jax.image apply the same bilinear filter in float32
MESH = sharding.make_mesh()


def _source(spatial_shape, n=40, uint8=True, seed=0):
    rng = np.random.default_rng(seed)
    shape = (n, *spatial_shape, 1)
    images = rng.integers(0, 256, shape, dtype=np.uint8) if uint8 else rng.random(shape, "f4")
    return ArraySource(images, np.arange(n) % 5, len(spatial_shape))


def _pair(source, spec, zoom=None, translate=0.0, seed=3):
    policy = parse_size_policy(spec, source.spatial_dims)
    min_size = (4,) * source.spatial_dims
    spec_k = "auto:3" if policy.pads else None
    buckets = resolve_buckets(spec_k, policy, source.sizes(), min_size=min_size)
    kw = dict(min_size=min_size, augmentation=parse_augmentation(zoom, translate))
    host = TrainLoader(source, policy, buckets, 8, seed, num_threads=1, **kw)
    return host, DeviceLoader(source, policy, buckets, 8, seed, mesh=MESH, **kw)


@pytest.mark.parametrize(
    "shape,spec,zoom,translate,uint8",
    [
        ((12, 12), "fixed:12", None, 0.0, True),  # stored as is: bit-identical
        ((12, 12), "mixed_step:8-16:4", None, 0.0, True),
        ((12, 12), "mixed_step:8-16:4:scale", None, 0.0, True),  # batch sizes vary
        ((12, 12), "mixed_example:6-20:log", "0.8-1.2", 0.1, True),
        ((30,), "mixed_example:16-40", None, 0.05, False),  # 1-D float signals
    ],
)
def test_device_batches_match_host_batches(shape, spec, zoom, translate, uint8):
    host, device = _pair(_source(shape, uint8=uint8), spec, zoom, translate)
    assert device.storage_dtype == (np.uint8 if uint8 else np.float32)
    for _ in range(7):  # crosses an epoch (40 // 8 = 5 batches)
        h, d = next(host), jax.device_get(next(device))
        assert h["image"].shape == d["image"].shape
        np.testing.assert_array_equal(h["label"], d["label"])
        np.testing.assert_array_equal(h["sizes"], d["sizes"])
        tolerance = 0 if spec == "fixed:12" else RESIZE_TOLERANCE
        np.testing.assert_allclose(d["image"], h["image"], rtol=0, atol=tolerance)
    assert device.tally == host.tally


def test_device_resume_mid_epoch_is_exact():
    source = _source((12, 12))
    _, loader = _pair(source, "mixed_example:6-20", "0.9-1.1", 0.05)
    batches = [jax.device_get(next(loader)) for _ in range(7)]
    _, first = _pair(source, "mixed_example:6-20", "0.9-1.1", 0.05)
    for _ in range(3):
        next(first)
    state = first.get_state()
    _, resumed = _pair(source, "mixed_example:6-20", "0.9-1.1", 0.05)
    resumed.set_state(state)
    for want in batches[3:]:
        got = jax.device_get(next(resumed))
        assert all(np.array_equal(got[k], want[k]) for k in want)
    _, other_seed = _pair(source, "mixed_example:6-20", seed=4)
    with pytest.raises(ValueError, match="different seed"):
        other_seed.set_state(state)


def test_device_loader_copies_nothing_within_an_epoch(monkeypatch):
    """A step's rows go up with its epoch's, once: within an epoch a batch is built from what
    the devices hold (on a GPU a per-step copy waits for the device and sets the pace)."""
    copies, replicate = [], sharding.replicate
    monkeypatch.setattr(sharding, "replicate", lambda *a: copies.append(1) or replicate(*a))
    _, loader = _pair(_source((12, 12)), "mixed_example:6-20:log", "0.8-1.2", 0.1)
    for step in range(12):  # 5 batches an epoch: new epochs at steps 0, 5 and 10
        before, new_epoch = len(copies), step % 5 == 0
        # Within an epoch no implicit host-to-device transfer either.
        with contextlib.nullcontext() if new_epoch else jax.transfer_guard("disallow"):
            jax.block_until_ready(next(loader))
        assert len(copies) - before == (2 if new_epoch else 0), step  # the rows, the position


@settings(max_examples=8, deadline=None)
@given(
    h=st.integers(4, 24),
    w=st.integers(4, 24),
    top=st.integers(-3, 3),
    left=st.integers(-3, 3),
)
def test_jit_resize_matches_host_resize(h, w, top, left):
    """One example resized to (h, w) and placed at (top, left) on a 24x24 canvas of size
    (20, 20): the host's resize pasted there, within the stated tolerance."""
    images, labels = read_arrays(_source((16, 16), n=1))
    rows = np.asarray([[0, 20, 20, h, w, top, left]], np.int32)
    got = assemble(images, labels, rows, canvas=(24, 24), resize=True)["image"][0]
    content = resize(images[0].astype(np.float32) / 255.0, (h, w))
    want = np.zeros((24, 24, 1), np.float32)
    for y in range(h):
        for x in range(w):
            if 0 <= top + y < 20 and 0 <= left + x < 20:
                want[top + y, left + x] = content[y, x]
    np.testing.assert_allclose(np.asarray(got), want, rtol=0, atol=RESIZE_TOLERANCE)


def test_read_arrays_reads_a_source_once():
    source = _source((6,), n=3)
    first, again = read_arrays(source), read_arrays(source)
    assert first[0] is again[0] and first[1] is again[1]  # the runs of a comparison share it
    assert read_arrays(_source((6,), n=3))[0] is not first[0]  # another source: its own read


def test_read_arrays_keeps_floats_that_are_not_bytes():
    assert read_arrays(_source((6,), n=3, uint8=False))[0].dtype == np.float32
    assert read_arrays(_source((6,), n=3))[0].dtype == np.uint8


def test_device_data_problem():
    assert device_data_problem(_source((12, 12)), 0.5) is None
    assert "MiB" in device_data_problem(_source((12, 12)), 1e-12)
    varied = ArraySource([np.zeros((5, 6, 1)), np.zeros((6, 6, 1))], np.zeros(2, int), 2)
    assert "differ in size" in device_data_problem(varied, 0.5)


def test_device_pipeline_needs_one_size(tfds_dir, tmp_path):
    """(auto's choice is checked in tests/test_train.py.)"""
    config = TrainConfig(**TINY_TRAIN, data_dir=tfds_dir, input_pipeline="device")
    with pytest.raises(ValueError, match="^--input_pipeline=device: .*differ in size"):
        train_and_evaluate(config, str(tmp_path))


@pytest.mark.parametrize("mode", ["custom", "autodiff"])
def test_conv_grad_choice(mode):
    """The chosen input gradient is the one traced, and both give the same gradients."""
    conv = layers.ConvLayer(1, 3, 3, 2, spatial_dims=2, rngs=nnx.Rngs(0))
    x = jnp.asarray(np.random.default_rng(0).random((2, 9, 9, 1), np.float32))

    def grad_of_input(x):
        return jax.grad(lambda x: (conv(x, None)[0] ** 2).sum())(x)

    previous = strided_conv.set_conv_grad("custom")
    try:
        reference = grad_of_input(x)
        strided_conv.set_conv_grad(mode)
        text = str(jax.make_jaxpr(grad_of_input)(x))
        # autodiff convolves dy dilated by the stride; the custom form never dilates it.
        assert ("lhs_dilation=(2, 2)" in text) == (mode == "autodiff")
        np.testing.assert_allclose(grad_of_input(x), reference, rtol=1e-5, atol=1e-6)
    finally:
        strided_conv.set_conv_grad(previous)
    assert strided_conv.resolve_conv_grad("auto", "cpu") == "custom"
    assert strided_conv.resolve_conv_grad("auto", "gpu") == "custom"
    assert strided_conv.resolve_conv_grad("auto", "tpu") == "autodiff"
