"""The on-device input pipeline: same batches as the host loader, exact resume, jit resize,
pipeline choice; and the strided-conv gradient chosen both ways."""

import contextlib

import jax
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tiny import TINY_TRAIN

import fcn_jax
from fcn_jax import sharding
from fcn_jax.config import TrainConfig
from fcn_jax.data import TrainLoader, parse_size_policy, resize, resolve_buckets
from fcn_jax.data.arrays import ArraySource
from fcn_jax.data.assemble import assemble
from fcn_jax.data.augment import parse_augmentation
from fcn_jax.data.device_loader import DeviceLoader, device_data_problem, device_layout, read_split
from fcn_jax.data.plan import BatchPlan
from fcn_jax.data.sources import Dataset
from fcn_jax.run import train_and_evaluate
from fcn_jax.setup import build
from fcn_jax.train import train

RESIZE_TOLERANCE = 1e-5  # PIL and jax.image apply the same bilinear filter in float32
MESH = sharding.make_mesh()


def _source(spatial_shape, n=40, uint8=True, seed=0):
    rng = np.random.default_rng(seed)
    shape = (n, *spatial_shape, 1)
    images = rng.integers(0, 256, shape, dtype=np.uint8) if uint8 else rng.random(shape, "f4")
    return ArraySource(images, np.arange(n) % 5, len(spatial_shape))


def _varied(n=40, low=5, high=20, spatial_dims=2, seed=0):
    """``n`` uint8 examples of random sizes ``low..high`` per axis."""
    rng = np.random.default_rng(seed)
    shapes = rng.integers(low, high + 1, (n, spatial_dims))
    images = [rng.integers(0, 256, (*s, 1), dtype=np.uint8) for s in shapes]
    return ArraySource(images, np.arange(n) % 5, spatial_dims)


def _pair(source, spec, zoom=None, translate=0.0, seed=3):
    policy = parse_size_policy(spec, source.spatial_dims)
    min_size = (4,) * source.spatial_dims
    spec_k = "auto:3" if policy.pads else None
    buckets = resolve_buckets(spec_k, policy, source.sizes(), min_size=min_size)
    kw = dict(min_size=min_size, augmentation=parse_augmentation(zoom, translate))
    plan = BatchPlan(source, policy, buckets, 8, seed, **kw)
    return TrainLoader(plan, num_threads=1), DeviceLoader(plan, mesh=MESH)


@pytest.mark.parametrize(
    "shape,spec,zoom,translate,uint8",
    [
        ((12, 12), "fixed:12", None, 0.0, True),  # stored as is: bit-identical
        ((12, 12), "mixed_step:8-16:4", None, 0.0, True),
        ((12, 12), "mixed_step:8-16:4:scale", None, 0.0, True),  # batch sizes vary
        ((12, 12), "mixed_example:6-20:log", "0.8-1.2", 0.1, True),
        ((30,), "mixed_example:16-40", None, 0.05, False),  # 1-D float signals
        # Sizes vary (None: the source of _varied): held padded, or in slabs per bucket.
        (None, "native", None, 0.0, True),  # stored as is: bit-identical
        (None, "native", "0.8-1.2", 0.1, True),
        (None, "mixed_example:6-20:log", "0.8-1.2", 0.1, True),
        (None, "mixed_step:8-16:4", None, 0.0, True),
        ((1,), "native", None, 0.0, True),  # 1-D, lengths 2-20: some raised to min_size 4
    ],
)
def test_device_batches_match_host_batches(shape, spec, zoom, translate, uint8):
    if shape is None or shape == (1,):
        source = _varied(spatial_dims=2) if shape is None else _varied(low=2, spatial_dims=1)
    else:
        source = _source(shape, uint8=uint8)
    host, device = _pair(source, spec, zoom, translate)
    assert device.storage_dtype == (np.uint8 if uint8 else np.float32)
    for _ in range(7):  # crosses an epoch (40 // 8 = 5 batches)
        h, d = next(host), jax.device_get(next(device))
        assert h["image"].shape == d["image"].shape
        np.testing.assert_array_equal(h["label"], d["label"])
        np.testing.assert_array_equal(h["sizes"], d["sizes"])
        exact = spec == "fixed:12" or (spec == "native" and shape is None and zoom is None)
        tolerance = 0 if exact else RESIZE_TOLERANCE
        np.testing.assert_allclose(d["image"], h["image"], rtol=0, atol=tolerance)
    assert device.tally == host.tally


@pytest.mark.parametrize("varied", [False, True])
def test_device_resume_mid_epoch_is_exact(varied):
    source = _varied() if varied else _source((12, 12))
    spec = "native" if varied else "mixed_example:6-20"

    def loader(**kw):
        return _pair(source, spec, **({"zoom": "0.9-1.1", "translate": 0.05} | kw))[1]

    uninterrupted = loader()
    batches = [jax.device_get(next(uninterrupted)) for _ in range(7)]
    first = loader()
    for _ in range(3):
        next(first)
    state = first.get_state()
    resumed = loader()
    resumed.set_state(state)
    for want in batches[3:]:
        got = jax.device_get(next(resumed))
        assert all(np.array_equal(got[k], want[k]) for k in want)
    with pytest.raises(ValueError, match="different seed"):
        loader(seed=4).set_state(state)


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
        # the epoch's rows, the position and its rows
        assert len(copies) - before == (3 if new_epoch else 0), step


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
    source = _source((16, 16), n=1)
    layout = device_layout(source)
    (images,), labels = read_split(source, layout)
    held = (labels, layout.row, source.sizes().astype(np.int32))
    rows = np.asarray([[0, 20, 20, h, w, top, left]], np.int32)
    kw = dict(canvas=(24, 24), resize=True, padded=False)
    got = assemble(images, *held, rows, **kw)["image"][0]
    # Held inside a larger, zero-padded slab: the filter still sees the example's own edges.
    slab = np.zeros((1, 19, 21, 1), np.uint8)
    slab[0, :16, :16] = images[0]
    kw["padded"] = True
    np.testing.assert_allclose(assemble(slab, *held, rows, **kw)["image"][0], got, atol=1e-6)
    content = resize(images[0].astype(np.float32) / 255.0, (h, w))
    want = np.zeros((24, 24, 1), np.float32)
    for y in range(h):
        for x in range(w):
            if 0 <= top + y < 20 and 0 <= left + x < 20:
                want[top + y, left + x] = content[y, x]
    np.testing.assert_allclose(np.asarray(got), want, rtol=0, atol=RESIZE_TOLERANCE)


def test_read_split_reads_a_source_once():
    source = _source((6,), n=3)
    first, again = (
        read_split(source, device_layout(source)),
        read_split(source, device_layout(source)),
    )
    assert first[0][0] is again[0][0] and first[1] is again[1]  # the runs of a comparison share it
    other = _source((6,), n=3)
    assert read_split(other, device_layout(other))[0][0] is not first[0][0]  # its own read


def test_read_split_keeps_floats_that_are_not_bytes():
    for uint8, dtype in ((False, np.float32), (True, np.uint8)):
        source = _source((6,), n=3, uint8=uint8)
        assert read_split(source, device_layout(source))[0][0].dtype == dtype


def test_layouts_of_a_split_whose_sizes_vary():
    """Padded to the largest size, or, for native batches when that padding would take most
    of the memory, one slab per bucket padded to its largest member."""
    sizes = [(4, 4)] * 30 + [(20, 20)] * 2  # padding to 20x20 would hold 6% examples
    source = ArraySource([np.ones((*s, 1), np.uint8) for s in sizes], np.zeros(32, int), 2)
    policy, buckets = parse_size_policy("native", 2), [(4, 4), (20, 20)]
    assert device_layout(source).shapes == ((20, 20),)
    layout = device_layout(source, policy, buckets)
    assert layout.shapes == ((4, 4), (20, 20)) and layout.elements() == 30 * 16 + 2 * 400
    assert list(layout.row[28:]) == [28, 29, 0, 1]
    slabs, _ = read_split(source, layout)
    assert [x.shape for x in slabs] == [(30, 4, 4, 1), (2, 20, 20, 1)] and slabs[1].all()
    batches = DeviceLoader(BatchPlan(source, policy, buckets, 2, 0), mesh=MESH)
    assert batches.storage_dtype == np.uint8
    for _ in range(16):  # every batch of an epoch, from its bucket's slab
        batch = jax.device_get(next(batches))
        assert batch["image"].all()  # ones everywhere: no example is padded in its bucket


def test_device_data_problem():
    assert device_data_problem(_source((12, 12)), 0.5) is None
    assert "MiB" in device_data_problem(_source((12, 12)), 1e-12)
    assert device_data_problem(_varied(), 0.5) is None  # sizes vary: held padded


def test_device_pipeline_over_budget_is_an_error(tfds_dir, tmp_path):
    """(auto's choice is checked in tests/integration/test_train.py.)"""
    config = TrainConfig(
        **TINY_TRAIN, data_dir=tfds_dir, input_pipeline="device", device_data_fraction=1e-9
    )
    with pytest.raises(ValueError, match=r"^--input_pipeline=device: .* more than 0 MiB"):
        train_and_evaluate(config, str(tmp_path))


@settings(max_examples=2, deadline=None)
@given(step=st.integers(0, 10_000))
def test_padded_native_device_batch_equals_each_example_alone(step):
    """The model on a native batch built on the devices gives each example's logits run alone
    at its own size."""
    source = _varied(n=12, low=8, high=20, seed=step)
    policy = parse_size_policy("native", 2)
    buckets = resolve_buckets("auto:2", policy, source.sizes(), min_size=(4, 4))
    plan = BatchPlan(source, policy, buckets, 3, step, min_size=(4, 4))
    loader = DeviceLoader(plan, mesh=MESH)
    batch = jax.device_get(next(loader))
    model = fcn_jax.create_model("seed", num_classes=5, width=0.25, seed=1)
    padded = np.asarray(model(batch["image"], sizes=batch["sizes"]))
    assert (batch["sizes"] < batch["image"].shape[1:3]).any()  # some example is padded
    for row, (label, n) in enumerate(zip(batch["label"], batch["sizes"], strict=True)):
        alone = np.asarray(model(batch["image"][row : row + 1, : n[0], : n[1]]))[0]
        np.testing.assert_allclose(padded[row], alone, rtol=1e-5, atol=1e-5)
        assert label in range(5)


@pytest.mark.parametrize("spec", ["native", "mixed_step:8-16:4:scale"])
def test_the_train_step_assembles_its_own_batch(spec):
    """The training loop's step takes step_input() and assembles the batch itself (one
    computation a step): the same state and metrics as the step on the loader's own batches,
    and one compile per bucket."""
    source = _varied(n=24, low=6, high=16)
    dataset = Dataset("varied", source, source, 5, 1, 2)
    config = TrainConfig(
        dataset="varied",
        train_size=spec,
        buckets="auto:2" if spec == "native" else None,
        model="seed",
        width=0.125,
        batch_size=4,
        steps=6,
        eval_sizes="12",
        zoom="0.9-1.1",
        input_pipeline="device",
    )
    fused, plain = build(config, dataset), build(config, dataset)
    states = [jax.tree.leaves(jax.device_put(s.state)) for s in (fused, plain)]
    for _ in range(6):
        states[0], m0 = fused.train_step(states[0], fused.loader.step_input())
        states[1], m1 = plain.train_step(states[1], next(plain.loader))
        np.testing.assert_allclose(m0["loss"], m1["loss"], rtol=1e-5)
    for a, b in zip(*states, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    assert fused.loader.compile_seconds == 0  # no assembly compiled on its own
    assert fused.train_step.compiles == len({s[1:3] for s in fused.train_step.shapes}) <= 4


def test_an_epoch_in_the_loop_copies_nothing_unplanned_to_the_devices(tmp_path):
    """On the device path the loop's steps copy nothing from the host but the loader's planned
    uploads (an epoch's rows): an epoch and the start of the next train under
    ``jax.transfer_guard("disallow")``, where any other host-to-device copy fails."""
    source = _varied(n=24, low=6, high=16)
    dataset = Dataset("varied", source, source, 5, 1, 2)
    config = TrainConfig(
        dataset="varied",
        train_size="mixed_example:8-16",
        buckets="auto:2",
        model="seed",
        width=0.125,
        batch_size=4,
        steps=8,  # 6 steps an epoch
        eval_sizes="12",
        zoom="0.9-1.1",
        input_pipeline="device",
        log_every=4,
        checkpoint_every=8,
    )
    setup = build(config, dataset)
    with jax.transfer_guard("disallow"):
        trained = train(setup, str(tmp_path))
    assert trained.examples == 8 * 4 and np.isfinite(trained.final_loss)
    canvas = setup.buckets[0]  # the guard holds: a batch from the host is refused
    host = {
        "image": np.zeros((4, *canvas, 1), np.float32),
        "label": np.zeros(4, np.int32),
        "sizes": np.tile(np.asarray(canvas, np.int32), (4, 1)),
    }
    with pytest.raises(Exception, match="Disallowed host-to-device transfer"):
        with jax.transfer_guard("disallow"):
            setup.train_step(jax.tree.leaves(trained.state), host)
