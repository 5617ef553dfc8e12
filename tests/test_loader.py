"""Size policies, buckets, resizing, and the train/eval loaders."""

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

from fcn_jax import sharding
from fcn_jax.data import (
    EvalLoader,
    SizePolicy,
    auto_buckets,
    load_dataset,
    padding_efficiency,
    parse_size_policy,
    place_on_canvas,
    resize,
    resolve_buckets,
)
from fcn_jax.data.arrays import save_npz
from fcn_jax.data.buckets import assign_buckets


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """procedural_digits/tiny_variable: same canvas-size distribution as `variable`."""
    return load_dataset("procedural_digits/tiny_variable", str(tmp_path_factory.mktemp("tfds")))


# --- policies ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "spec, dims, want",
    [
        ("fixed:28", 2, dict(kind="fixed", size=(28, 28))),
        ("fixed:20x36", 2, dict(kind="fixed", size=(20, 36))),
        ("fixed:40", 1, dict(kind="fixed", size=(40,))),
        ("mixed:16-64", 2, dict(kind="mixed_step", low=(16, 16), high=(64, 64), step=8)),
        ("mixed_step:16-64", 2, dict(kind="mixed_step", low=(16, 16), high=(64, 64), step=8)),
        (
            "mixed_example:14-64:log:aspect=2",
            2,
            dict(kind="mixed_example", low=(14, 14), log_scale=True, max_aspect=2.0),
        ),
        ("mixed_example:24-72", 1, dict(kind="mixed_example", low=(24,), high=(72,))),
        ("mixed:16x24-32x48:4:scale", 2, dict(low=(16, 24), high=(32, 48), scale_batch=True)),
        ("mixed:24-72:12", 1, dict(low=(24,), high=(72,), step=12, scale_batch=False)),
        ("native", 1, dict(kind="native")),
    ],
)
def test_parse_size_policy(spec, dims, want):
    policy = parse_size_policy(spec, dims)
    assert policy.spatial_dims == dims
    for key, value in want.items():
        assert getattr(policy, key) == value
    assert parse_size_policy(policy.spec(), dims) == policy  # spec() parses back to it


def test_spec_round_trips_random_policies():
    rng = np.random.default_rng(0)
    for _ in range(50):
        d = int(rng.integers(1, 3))
        low = tuple(int(v) for v in rng.integers(4, 30, d))
        step = int(rng.integers(1, 9))
        high = tuple(lo + step * int(rng.integers(0, 4)) for lo in low)
        aspect = round(float(rng.uniform(1, 3)), 3) if d == 2 else None
        for policy in (
            SizePolicy("fixed", d, size=high),
            SizePolicy("mixed_step", d, low=low, high=high, step=step, scale_batch=step > 4),
            SizePolicy("mixed_example", d, low=low, high=high, log_scale=step > 4),
        ):
            assert parse_size_policy(policy.spec(), d) == policy, policy.spec()
        if aspect and max(high) <= aspect * min(low):  # some size within the aspect bound
            bounded = SizePolicy("mixed_example", d, low=low, high=high, max_aspect=aspect)
            assert parse_size_policy(bounded.spec(), d) == bounded, bounded.spec()


@pytest.mark.parametrize(
    "spec, dims",
    [
        ("fixed", 2),
        ("fixed:", 2),
        ("fixed:3x4", 1),
        ("fixed:0", 2),
        ("fixed:a", 2),
        ("mixed:16-60:8", 2),
        ("mixed:64-16", 2),
        ("mixed:16-64:x", 2),
        ("mixed:16-64:8:shrink", 2),
        ("mixed_example:16-64:8", 2),
        ("mixed_example:64-16", 2),
        ("mixed_example:16-64:aspect=0.5", 2),
        ("mixed_example:16-64:aspect=2", 1),
        ("mixed_example:8x40-12x60:aspect=1.5", 2),
        ("native:3", 2),
        ("resize:28", 2),
        ("", 2),
    ],
)
def test_malformed_policy(spec, dims):
    with pytest.raises(ValueError, match="bad size policy") as err:
        parse_size_policy(spec, dims)
    assert repr(spec) in str(err.value) and "\n" not in str(err.value)


def test_mixed_sizes_in_grid_and_deterministic():
    policy = parse_size_policy("mixed:16x8-40x24:8", 2)
    grid = set(policy.grid())
    assert len(grid) == 4 * 3
    drawn = [policy.draw_size(7, s) for s in range(300)]
    assert set(drawn) == grid  # all reachable
    assert drawn == [policy.draw_size(7, s) for s in range(300)]
    assert drawn != [policy.draw_size(8, s) for s in range(300)]


@settings(max_examples=40, deadline=None)
@given(
    lo=st.integers(8, 32),
    n=st.integers(1, 8),
    base=st.integers(16, 256),
    mult=st.sampled_from([1, 2, 8]),
)
def test_scale_batch_keeps_pixels_per_step(lo, n, base, mult):
    policy = parse_size_policy(f"mixed:{lo}-{lo + 4 * n}:4:scale", 2)
    ref = math.prod(policy.reference_size())
    for size in policy.grid():
        b = policy.batch_size(base, size, mult)
        assert b % mult == 0 and b >= mult
        if b > mult:  # not clamped: within rounding of the reference pixel count
            assert abs(b * math.prod(size) - base * ref) <= (mult / 2 + 1e-9) * math.prod(size)


def test_scale_batch_in_loader(small):
    loader = _loader(small, "mixed:8-24:4:scale", batch_size=8)
    pixels = [len(b["label"]) * math.prod(b["image"].shape[1:3]) for b in _take(loader, 20)]
    ref = 8 * 16 * 16
    assert all(abs(p / ref - 1) < 0.5 for p in pixels), pixels
    assert abs(np.mean(pixels) / ref - 1) < 0.2


# --- buckets -------------------------------------------------------------------------------


def test_padding_efficiency_definition():
    sizes = np.array([[2, 2], [4, 4], [3, 1]])
    # [2,2] and [3,1] -> (3, 2) bucket (area 6 < 16); [4,4] -> (4, 4).
    assert padding_efficiency(sizes, [(4, 4), (3, 2)]) == pytest.approx((4 + 16 + 3) / (6 + 16 + 6))
    with pytest.raises(ValueError, match="fit no bucket"):
        padding_efficiency(sizes, [(3, 3)])


@settings(max_examples=25, deadline=None)
@given(
    sizes=st.lists(st.tuples(st.integers(1, 50), st.integers(1, 50)), min_size=1, max_size=80),
    k=st.integers(1, 6),
)
def test_auto_buckets_cover_everything(sizes, k):
    sizes = np.array(sizes)
    buckets = auto_buckets(sizes, k)
    assert 1 <= len(buckets) <= k
    eff = padding_efficiency(sizes, buckets)  # raises if some example fits no bucket
    assert padding_efficiency(sizes, [tuple(sizes.max(0))]) <= eff + 1e-12 <= 1 + 1e-12


def test_auto_buckets_many_distinct_shapes():
    # More distinct shapes than candidates: shapes are coarsened to per-axis quantiles first.
    sizes = np.random.default_rng(0).integers(1, 1000, (6000, 2))
    buckets = auto_buckets(sizes, 8)
    assert len(buckets) <= 8
    assert padding_efficiency(sizes, buckets) > padding_efficiency(sizes, [(999, 999)]) + 0.2


def test_auto_buckets_padding_efficiency(digits):
    sizes = digits.train.sizes()  # tiny_variable: the sizes of `variable`, fewer examples
    eight = padding_efficiency(
        sizes, resolve_buckets("auto:8", parse_size_policy("native", 2), sizes)
    )
    assert eight >= 0.85
    # Sides uniform over [16, 64] (the `continuous` config) need many more buckets.
    uniform = np.random.default_rng(0).integers(16, 65, (4000, 2))
    assert padding_efficiency(uniform, auto_buckets(uniform, 8)) < 0.75
    assert padding_efficiency(uniform, auto_buckets(uniform, 40)) >= 0.85


def test_explicit_buckets():
    native = parse_size_policy("native", 2)
    sizes = np.array([[10, 10], [30, 20]])
    assert resolve_buckets("32x32,16", native, sizes) == [(16, 16), (32, 32)]
    with pytest.raises(ValueError, match=r"fit no bucket in '16x16'.*\(30, 20\)"):
        resolve_buckets("16x16", native, sizes)
    for bad in ("auto:0", "auto:x", "16x16x2", "a,b"):
        with pytest.raises(ValueError, match="bad bucket spec"):
            resolve_buckets(bad, native, sizes)
    mixed = parse_size_policy("mixed:8-16:4", 1)
    assert resolve_buckets(None, mixed, sizes[:, :1]) == [(8,), (12,), (16,)]


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


def test_auto_buckets_too_sparse_to_fill_a_batch_are_merged_upwards():
    # 50 lengths, 29-361, as PickupGestureWiimoteZ: auto:8 alone leaves buckets of a few
    # examples, which native batches (full batches of one bucket) would never train on.
    sizes = np.random.default_rng(0).integers(29, 362, (50, 1))
    native = parse_size_policy("native", 1)
    unmerged = resolve_buckets("auto:8", native, sizes)
    merged = resolve_buckets("auto:8", native, sizes, batch_size=16)
    assert len(unmerged) == 8 and 1 < len(merged) < 8 and set(merged) <= set(unmerged)
    counts = np.bincount(assign_buckets(sizes, merged), minlength=len(merged))
    assert (counts >= 16).all() and counts.sum() == 50
    assert merged[-1] == unmerged[-1]  # the largest still holds the longest
    assert resolve_buckets("auto:8", native, sizes, batch_size=64) == [unmerged[-1]]


def test_no_full_batch_names_the_bucket_limit_and_the_flags(small):
    """60 examples in 4 native buckets: a batch of 30 fits the split but no bucket."""
    from fcn_jax.data.plan import BatchPlan

    policy = parse_size_policy("native").bind(2)
    buckets = resolve_buckets("auto:4", policy, small.train.sizes())
    from fcn_jax.data.buckets import fitting_buckets

    counts = np.bincount(fitting_buckets(small.train.sizes(), buckets), minlength=len(buckets))
    fullest = int(counts.max())
    assert fullest < 30
    with pytest.raises(ValueError) as info:
        BatchPlan(small.train, policy, buckets, 30, 0)
    message = str(info.value)
    assert message.startswith("--batch_size=30 leaves no full batch: native training batches")
    assert "the fullest of the 4 buckets (" in message and f"holds {fullest} of the 60 " in message
    assert f"use --batch_size={fullest} or less, fewer buckets (--buckets=auto:1" in message
    assert "\n" not in message and message.endswith("(fixed:SIZE, mixed_example:LO-HI)")
    BatchPlan(small.train, policy, buckets, fullest, 0)  # the advice holds, exactly
    with pytest.raises(ValueError, match=f"holds {fullest} of the 60"):
        BatchPlan(small.train, policy, buckets, fullest + 1, 0)
    with pytest.raises(ValueError, match=r"^--batch_size=61 leaves no full batch in the 60 train"):
        BatchPlan(small.train, parse_size_policy("fixed:16").bind(2), [(16, 16)], 61, 0)
