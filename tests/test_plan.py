"""The batch plan (fcn_jax.data.plan): a pure function of (seed, step), its epochs, its errors,
and the position a loader keeps on it."""

import math

import numpy as np
import pytest
from loaders import make_loader
from loaders import take as _take

from fcn_jax.data import parse_size_policy, resolve_buckets
from fcn_jax.data.arrays import ArraySource
from fcn_jax.data.plan import BatchPlan, PlannedLoader


def _loader(ds, spec, aug=None, **kw):
    return make_loader(ds, spec, min_size=(4, 4), augmentation=aug, **kw)


def varied(n=30, low=3, high=14, seed=0) -> ArraySource:
    """``n`` 2-D examples of random sizes ``low..high`` per axis (only their sizes matter)."""
    rng = np.random.default_rng(seed)
    shapes = rng.integers(low, high + 1, (n, 2))
    return ArraySource([np.zeros((*s, 1), np.uint8) for s in shapes], np.arange(n) % 3, 2)


def plan_of(source, spec, batch_size=4, seed=0, buckets=None, **kw) -> BatchPlan:
    policy = parse_size_policy(spec, 2)
    min_size = kw.get("min_size")
    return BatchPlan(
        source, policy, resolve_buckets(buckets, policy, source.sizes(), min_size=min_size),
        batch_size, seed, **kw,
    )  # fmt: skip


@pytest.mark.parametrize("spec", ["fixed:8", "mixed:8-16:4", "native", "mixed_example:4-12"])
def test_a_plan_is_a_pure_function_of_seed_and_step(spec):
    """Two plans of the same arguments agree step by step (also read out of order, as a
    resumed loader or another process reads them); another seed plans other batches."""
    buckets = "auto:2" if spec in ("native", "mixed_example:4-12") else None
    a, b = (plan_of(varied(), spec, buckets=buckets, min_size=(4, 4)) for _ in range(2))
    steps = list(range(3 * a.batches_per_epoch))
    first = [a.planned(i) for i in steps]
    for i in reversed(steps):
        indices, shape, sizes = b.planned(i)
        np.testing.assert_array_equal(indices, first[i][0])
        assert shape == first[i][1]
        assert (sizes is None) == (first[i][2] is None)
        if sizes is not None:
            np.testing.assert_array_equal(sizes, first[i][2])
    other = plan_of(varied(), spec, buckets=buckets, seed=1, min_size=(4, 4))
    assert any(
        not np.array_equal(other.planned(i)[0], first[i][0]) for i in range(a.batches_per_epoch)
    )


def test_an_epoch_covers_each_example_at_most_once_in_full_batches():
    source = varied(n=30)
    plan = plan_of(source, "fixed:8", batch_size=4)
    assert plan.batches_per_epoch == 30 // 4
    for epoch in range(3):
        batches = plan.epoch(epoch)
        indices = np.concatenate([ix for ix, _, _ in batches])
        assert all(len(ix) == 4 for ix, _, _ in batches)
        assert len(set(indices.tolist())) == len(indices) == 28  # the remainder is dropped
        assert plan.locate(epoch * 7 + 3) == (epoch, 3)
    assert plan.epoch(0) is plan.epoch(0)
    orders = [np.concatenate([ix for ix, _, _ in plan.epoch(e)]) for e in range(2)]
    assert not np.array_equal(*orders)  # reshuffled each epoch


def test_native_batches_hold_examples_of_their_bucket():
    """native: every example of a batch fits the batch's bucket after being raised to the
    model's minimum; example_sizes are those raised sizes and counts() adds them up."""
    source = varied(n=40, low=2, high=14)
    plan = plan_of(source, "native", batch_size=3, buckets="auto:3", min_size=(4, 5))
    sizes = np.maximum(np.asarray(source.sizes()), [4, 5])
    assert len(plan.buckets) <= 3
    for batch in plan.epoch(0):
        indices, bucket, _ = batch
        assert bucket in plan.buckets
        got = plan.example_sizes(batch)
        np.testing.assert_array_equal(got, sizes[indices])
        assert (got <= np.asarray(bucket)).all() and (got >= [4, 5]).all()
        counts = plan.counts(batch)
        assert counts == {
            "examples": 3,
            "pixels": int(np.prod(sizes[indices], 1).sum()),
            "padded_pixels": 3 * bucket[0] * bucket[1],
        }
    assert 0 < plan.padding_efficiency < 1
    assert plan_of(source, "fixed:8").padding_efficiency == 1.0


@pytest.mark.parametrize(
    "spec, kw, message",
    [
        ("fixed:8", dict(batch_size=31), "leaves no full batch in the 30 training examples"),
        ("fixed:8", dict(batch_size=5, process_count=2), "not divisible by 2 hosts"),
        ("fixed:8", dict(process_count=2, batch_multiple=3), "batch_multiple 3 is not a multiple"),
        ("fixed:3", dict(min_size=(4, 4)), "minimum"),
    ],
)
def test_a_plan_that_cannot_work_is_refused(spec, kw, message):
    with pytest.raises(ValueError, match=message):
        plan_of(varied(), spec, **kw)


def test_a_policy_the_plan_cannot_follow_is_refused():
    with pytest.raises(ValueError, match="policy is 1-D but the data is 2-D"):
        BatchPlan(varied(), parse_size_policy("fixed:8", 1), [(8,)], 4, 0)
    mixed = parse_size_policy("mixed:8-16:4", 2)
    with pytest.raises(ValueError, match=r"sizes \[.*\(12, 12\).*\] of the policy are not in"):
        BatchPlan(varied(), mixed, [(8, 8), (16, 16)], 4, 0)


def test_a_loader_position_resumes_only_on_its_own_plan():
    """PlannedLoader's position: the next global step and what it is valid for; it tallies
    what it hands out, and refuses a state of another seed, batch size or dataset."""
    plan = plan_of(varied(), "mixed:8-16:4", batch_size=4, seed=3)
    loader = PlannedLoader(plan)
    steps = [loader._take() for _ in range(5)]
    assert steps == [0, 1, 2, 3, 4]
    state = loader.get_state()
    assert state == {"step": 5, "seed": 3, "num_examples": 30, "batch_size": 4}
    assert loader.tally["examples"] == 20
    pixels = sum(math.prod(plan.planned(i)[1]) * 4 for i in steps)
    assert loader.tally["pixels"] == loader.tally["padded_pixels"] == pixels
    resumed = PlannedLoader(plan)
    resumed.set_state(state)
    assert resumed._take() == 5
    for key, value in (("seed", 4), ("batch_size", 8), ("num_examples", 31)):
        with pytest.raises(ValueError, match=f"different {key}"):
            PlannedLoader(plan).set_state({**state, key: value})


def test_a_pickled_plan_plans_the_same_batches():
    """Loader worker processes get the plan pickled: without its lock and cache, the same."""
    import pickle

    plan = plan_of(varied(), "mixed_example:4-12", buckets="auto:2", min_size=(4, 4))
    copy = pickle.loads(pickle.dumps(plan))
    for i in (0, 9, 3):
        a, b = plan.planned(i), copy.planned(i)
        np.testing.assert_array_equal(a[0], b[0])
        assert a[1] == b[1] and np.array_equal(a[2], b[2])


def test_epochs_of_varying_length_count_their_own_steps(small):
    loader = _loader(small, "mixed_step:8-24:4:scale")
    n = loader.steps_for(1)
    first = np.concatenate([b["index"] for b in _take(loader, n)])
    assert len(set(first.tolist())) == len(first) > len(small.train) // 2  # one epoch, no repeat
    assert loader.steps_for(2) > n and loader.steps_for(0.5) == math.ceil(n / 2)


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
