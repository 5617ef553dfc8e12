"""Resizing, and the train/eval loaders (the size policies and the buckets they follow:
test_policies.py, test_buckets.py)."""

import itertools
import json
import math

import jax
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from loaders import make_loader as _loader
from loaders import same as _same
from loaders import take as _take

import fcn_jax
from fcn_jax import sharding
from fcn_jax.data import (
    EvalLoader,
    load_dataset,
    place_on_canvas,
    resize,
)
from fcn_jax.data.arrays import save_npz

# --- resizing ------------------------------------------------------------------------------


def test_resize_antialiases_when_shrinking():
    checker = (np.indices((64, 64)).sum(0) % 2).astype(np.float32)[..., None]
    small = resize(checker, (16, 16))
    assert small.shape == (16, 16, 1)
    assert np.abs(small[2:-2, 2:-2] - 0.5).max() < 0.05  # no aliasing into stripes
    signal = np.tile([0.0, 1.0], 32).astype(np.float32)[:, None]
    assert np.abs(resize(signal, (8,))[1:-1] - 0.5).max() < 0.05  # 1-D too
    ramp = np.linspace(0, 1, 10, dtype=np.float32).reshape(10, 1, 1)
    np.testing.assert_array_equal(resize(ramp, (10, 1)), ramp)  # same size: unchanged


@settings(max_examples=30, deadline=None)
@given(
    shape=st.tuples(st.integers(1, 20), st.integers(1, 20), st.sampled_from([1, 3])),
    size=st.tuples(st.integers(1, 20), st.integers(1, 20)),
)
def test_resize_and_canvas_shapes(shape, size):
    image = np.random.default_rng(0).random(shape, np.float32)
    out = resize(image, size)
    assert out.shape == (*size, shape[2]) and out.dtype == np.float32
    assert image.min() - 1e-5 <= out.min() and out.max() <= image.max() + 1e-5
    canvas = place_on_canvas(image, size)
    assert canvas.shape == (*size, shape[2])
    # Content keeps its scale: the overlap is a centered copy, the rest is zero.
    n = [min(a, b) for a, b in zip(shape, size, strict=False)]
    dst = [max(0, (b - a) // 2) for a, b in zip(shape, size, strict=False)]
    src = [max(0, (a - b) // 2) for a, b in zip(shape, size, strict=False)]
    inner = canvas[dst[0] : dst[0] + n[0], dst[1] : dst[1] + n[1]]
    np.testing.assert_array_equal(inner, image[src[0] : src[0] + n[0], src[1] : src[1] + n[1]])
    assert canvas.sum() == pytest.approx(inner.sum(), rel=1e-5, abs=1e-5)


# --- train loader --------------------------------------------------------------------------


def test_scale_batch_in_loader(small):
    loader = _loader(small, "mixed:8-24:4:scale", batch_size=8)
    pixels = [len(b["label"]) * math.prod(b["image"].shape[1:3]) for b in _take(loader, 20)]
    ref = 8 * 16 * 16
    assert all(abs(p / ref - 1) < 0.5 for p in pixels), pixels
    assert abs(np.mean(pixels) / ref - 1) < 0.2


@pytest.mark.parametrize("spec", ["native", "fixed:12x9", "mixed:4-20:4", "mixed:8-16:4:scale"])
def test_batches_shapes_sizes_and_padding(small, spec):
    loader = _loader(small, spec, batch_size=6)
    policy = loader.plan.policy
    for batch in _take(loader, 12):
        b, *size, c = batch["image"].shape
        assert tuple(size) in loader.plan.buckets and c == 1
        assert batch["label"].dtype == np.int32 and batch["sizes"].dtype == np.int32
        assert batch["sizes"].shape == (b, 2) and batch["index"].shape == (b,)
        assert policy.kind == "native" or (batch["sizes"] == size).all()
        for image, n, i, y in zip(
            *(batch[k] for k in ("image", "sizes", "index", "label")), strict=True
        ):
            ex = small.train[int(i)]
            want = ex["image"] if policy.kind == "native" else resize(ex["image"], size)
            np.testing.assert_array_equal(image[: n[0], : n[1]], want)
            assert y == ex["label"]
            padding = image.copy()
            padding[: n[0], : n[1]] = 0
            assert not padding.any()


def test_native_epochs_reshuffle_and_cover(small):
    loader = _loader(small, "native", batch_size=4, buckets="auto:3")
    per_epoch = loader.plan.batches_per_epoch
    epochs = [np.concatenate([b["index"] for b in _take(loader, per_epoch)]) for _ in range(3)]
    for e in epochs:
        assert len(set(e.tolist())) == len(e)  # each example at most once per epoch
        assert len(e) >= 60 - 3 * 3  # only per-bucket remainders dropped
    assert not np.array_equal(epochs[0], epochs[1])


def test_deterministic_for_seed(small):
    for spec in ("native", "mixed:4-20:4"):
        a, b = _take(_loader(small, spec), 10), _take(_loader(small, spec), 10)
        c = _take(_loader(small, spec, seed=1), 10)
        assert _same(a, b) and not _same(a, c)


@pytest.mark.parametrize("spec", ["native", "mixed:4-20:4", "mixed:8-16:4:scale", "fixed:10"])
def test_save_restore(small, spec):
    loader = _loader(small, spec, batch_size=5)
    _take(loader, 17)  # past the first epoch
    state = json.loads(json.dumps(loader.get_state()))
    want = _take(loader, 15)
    resumed = _loader(small, spec, batch_size=5)
    resumed.set_state(state)
    assert _same(_take(resumed, 15), want)
    with pytest.raises(ValueError, match="different seed"):
        resumed.set_state({**state, "seed": 9})


def test_multi_host_shares(small):
    whole = _take(_loader(small, "native", batch_size=8), 6)
    shares = [
        _take(_loader(small, "native", batch_size=8, process_index=p, process_count=2), 6)
        for p in range(2)
    ]
    for g, s0, s1 in zip(whole, *shares, strict=True):
        assert len(s0["label"]) == 4
        np.testing.assert_array_equal(g["index"][0::2], s0["index"])
        np.testing.assert_array_equal(g["image"][1::2], s1["image"])
    with pytest.raises(ValueError, match="not divisible by 3 hosts"):
        _loader(small, "native", batch_size=8, process_count=3)


def test_min_size(small):
    loader = _loader(small, "native", min_size=(8, 12))
    for batch in _take(loader, 5):
        assert (batch["sizes"] >= [8, 12]).all()
    with pytest.raises(ValueError, match="below the model's minimum size"):
        _loader(small, "fixed:10", min_size=(12, 12))


def test_reporting(small):
    loader = _loader(small, "native", buckets="auto:2")
    _take(loader, 3)
    assert len(loader.plan.buckets) <= 2
    assert 0 < loader.padding_efficiency <= 1 and loader.examples_per_second > 0
    assert _loader(small, "fixed:8").padding_efficiency == 1.0


def test_train_loader_on_procedural_digits(digits):
    loader = _loader(digits, "native", batch_size=16, min_size=(16, 16))
    for batch in _take(loader, 4):
        assert tuple(batch["image"].shape[1:3]) in loader.plan.buckets


# --- eval ----------------------------------------------------------------------------------


@pytest.mark.parametrize("size, mode", [(None, "resize"), (24, "resize"), ((20, 40), "canvas")])
def test_eval_covers_once_with_fixed_shapes(digits, size, mode):
    loader = EvalLoader(digits.test, size, mode, batch_size=48, min_size=(16, 16))
    assert isinstance(loader, EvalLoader)
    batches = list(loader)
    assert len(batches) == len(loader)
    assert {b["image"].shape[0] for b in batches} == {48}
    assert {tuple(b["image"].shape[1:3]) for b in batches} <= set(loader.buckets)
    index = np.concatenate([b["index"][b["valid"]] for b in batches])
    assert sorted(index.tolist()) == list(range(len(digits.test)))
    for b in batches:
        assert (b["index"][~b["valid"]] == -1).all() and not b["image"][~b["valid"]].any()
        assert (b["bbox"][:, 2:] >= b["bbox"][:, :2]).all()
        assert (b["bbox"][:, 2:] <= b["sizes"]).all()
    assert _same(batches, list(loader))  # re-iterable, same order


def test_eval_bbox_follows_the_transform(digits):
    ex = digits.test[0]
    (h, w), box = ex["image"].shape[:2], ex["bbox"]
    resized = next(iter(EvalLoader(digits.test, (2 * h, 3 * w), "resize", batch_size=1)))
    np.testing.assert_array_equal(resized["bbox"][0], box * [2, 3, 2, 3])
    canvas = next(iter(EvalLoader(digits.test, (h + 10, w + 4), "canvas", batch_size=1)))
    np.testing.assert_array_equal(canvas["bbox"][0], box + [5, 2, 5, 2])
    np.testing.assert_array_equal(canvas["image"][0, 5 : 5 + h, 2 : 2 + w], ex["image"])
    native = next(iter(EvalLoader(digits.test, None, batch_size=1, buckets=[(64, 64)])))
    np.testing.assert_array_equal(native["bbox"][0], box)


def test_eval_1d(tmp_path):
    signals = [np.arange(n, dtype=np.float32) for n in (5, 9, 12, 3, 7)]
    split = dict(images=signals, labels=np.arange(5))
    save_npz(
        str(tmp_path / "s.npz"),
        {f"{s}_{k}": v for s in ("train", "test") for k, v in split.items()},
    )
    ds = load_dataset(f"npz:{tmp_path}/s.npz", pixel_range=(0.0, 12.0))  # values 0..11
    batches = list(EvalLoader(ds.test, None, batch_size=2, buckets=[(8,), (12,)], min_size=(4,)))
    assert [b["image"].shape for b in batches] == [(2, 8, 1)] * 2 + [(2, 12, 1)]
    got = {
        int(i): (s, im)
        for b in batches
        for i, s, im in zip(b["index"], b["sizes"], b["image"], strict=True)
    }
    assert got[3][0].tolist() == [4]  # upsized to min_size
    np.testing.assert_array_equal(got[1][1][:9, 0], np.arange(9))
    assert not got[1][1][9:].any()
    assert [b["valid"].tolist() for b in batches] == [[True, True], [True, False], [True, True]]
    loader = _loader(ds, "mixed:4-12:4", batch_size=2)
    assert all(b["image"].shape[1] in (4, 8, 12) for b in itertools.islice(loader, 10))


def test_worker_processes_give_the_same_batches(small):
    """Grain multiprocessing (the loader pickled to a worker, without its mesh) yields the
    threads' batches, also when copied to the devices, and resumes at the same step."""
    mesh = sharding.make_mesh()
    threads = _loader(small, "mixed_example:6-20", min_size=(4, 4))
    workers = _loader(small, "mixed_example:6-20", min_size=(4, 4), worker_count=1, mesh=mesh)
    assert _same(_take(threads, 9), jax.device_get(_take(workers, 9)))  # crosses an epoch
    resumed = _loader(small, "mixed_example:6-20", min_size=(4, 4), worker_count=1)
    resumed.set_state(workers.get_state())
    assert _same(_take(threads, 2), _take(resumed, 2))


@pytest.mark.parametrize("spec", ["native", "mixed_example:6-20"])
def test_device_prefetch_gives_the_same_batches(small, spec):
    """With a mesh the Grain loader's batches are global arrays split over it, copied ahead
    by a prefetch thread: the same values, and an exact resume (the prefetched ones are
    dropped)."""
    mesh = sharding.make_mesh()
    host = _take(_loader(small, spec, min_size=(4, 4)), 10)
    loader = _loader(small, spec, min_size=(4, 4), mesh=mesh)
    got = _take(loader, 7)
    assert all(v.sharding == sharding.batch_sharded(mesh) for b in got for v in b.values())
    state = loader.get_state()
    resumed = _loader(small, spec, min_size=(4, 4), mesh=mesh)
    resumed.set_state(state)
    assert _same(host, jax.device_get(got + _take(resumed, 3)))


def test_loader_batches_are_exactly_masked(small):
    loader = _loader(small, "mixed_example:6-24", buckets="auto:3", min_size=(4, 4))
    shapes = set()
    for batch in _take(loader, 12):
        shapes.add(batch["image"].shape[1:3])
        for image, n, i in zip(batch["image"], batch["sizes"], batch["index"], strict=True):
            want = resize(small.train[int(i)]["image"], n)
            np.testing.assert_array_equal(image[: n[0], : n[1]], want)
            assert not image[n[0] :].any() and not image[:, n[1] :].any()
    assert shapes <= set(loader.plan.buckets) and len(loader.plan.buckets) <= 3
    assert len({tuple(n) for b in _take(loader, 4) for n in b["sizes"]}) > 8  # sizes vary


@settings(max_examples=2, deadline=None)
@given(step=st.integers(0, 10_000))
def test_padded_per_example_batch_equals_each_example_alone(small, step):
    """The model on a padded mixed_example batch gives each example's logits run alone."""
    loader = _loader(
        small, "mixed_example:8-20", buckets="auto:2", batch_size=3, seed=step, min_size=(4, 4)
    )
    batch = next(loader)
    model = fcn_jax.create_model("seed", num_classes=4, width=0.25, seed=1)
    padded = np.asarray(model(batch["image"], sizes=batch["sizes"]))
    for row, (image, n) in enumerate(zip(batch["image"], batch["sizes"], strict=True)):
        alone = np.asarray(model(image[None, : n[0], : n[1]]))[0]
        np.testing.assert_allclose(padded[row], alone, rtol=1e-5, atol=1e-5)
