"""Buckets (fcn_jax.data.buckets): per-example sizes drawn within k buckets, auto and explicit
buckets, padding efficiency, and training compiling at most once per bucket."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tiny import TINY_TRAIN

from fcn_jax.config import TrainConfig
from fcn_jax.data import auto_buckets, padding_efficiency, parse_size_policy, resolve_buckets
from fcn_jax.data.buckets import ExampleSizes, assign_buckets, fitting_buckets
from fcn_jax.run import train_and_evaluate


@pytest.mark.parametrize("k", [1, 3, 8])
def test_example_sizes_follow_the_policy_within_k_buckets(k):
    policy = parse_size_policy("mixed_example:14-64", 2)
    buckets = resolve_buckets(f"auto:{k}", policy, None)
    assert 1 <= len(buckets) <= k and (64, 64) in buckets
    sampler = ExampleSizes(policy, buckets)
    draws = [sampler.draw(3, step, 4) for step in range(3000)]
    sizes = np.concatenate([s for _, s in draws])
    for bucket, s in draws:  # every example fits its batch's bucket
        assert bucket in buckets and (s <= np.asarray(bucket)).all()
    # Each example's size is distributed as the policy says: uniform per axis over 14..64.
    for axis in range(2):
        counts = np.bincount(sizes[:, axis] - 14, minlength=51)
        assert counts.min() > 0 and abs(sizes[:, axis].mean() - 39) < 0.8  # ~3 std
    assert sampler.draw(3, 5, 4)[0] == draws[5][0]  # a pure function of (seed, step)
    assert np.array_equal(sampler.draw(3, 5, 4)[1], draws[5][1])


def test_example_sizes_draw_as_generator_choice():
    """The sampler inverts its cumulative distributions itself; the sizes are still the ones
    ``Generator.choice(p=...)`` draws (what earlier versions drew: runs reproduce)."""
    policy = parse_size_policy("mixed_example:16-56:log:aspect=2", 2)
    sizes, prob = policy.size_distribution()
    buckets = resolve_buckets("auto:5", policy, None)
    sampler = ExampleSizes(policy, buckets)
    assign = fitting_buckets(sizes, [tuple(b) for b in buckets], "sizes")
    mass = np.array([prob[assign == k].sum() for k in range(len(buckets))])
    for step in range(200):
        rng = np.random.default_rng([7, 3, step])
        k = int(rng.choice(len(buckets), p=mass / mass.sum()))
        pick = rng.choice((assign == k).sum(), size=6, p=prob[assign == k] / mass[k])
        bucket, drawn = sampler.draw(7, step, 6)
        assert bucket == buckets[k] and np.array_equal(drawn, sizes[assign == k][pick])


def test_train_compiles_at_most_k_on_14_to_64(tfds_dir, tmp_path):
    config = TrainConfig(
        **{**TINY_TRAIN, "steps": 8, "eval_sizes": "20"},
        data_dir=tfds_dir,
        train_size="mixed_example:14-64",
        buckets="auto:2",
    )
    summary = train_and_evaluate(config, str(tmp_path))
    assert 1 <= summary["train_compiles"] <= 2 and len(summary["buckets"]) <= 2
    shapes = {tuple(s[1:3]) for s in summary["train_compile_shapes"]}
    assert shapes <= {tuple(b) for b in summary["buckets"]}
    assert summary["train_examples"] == 8 * 16
    assert summary["train_pixels"] < summary["train_padded_pixels"]


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
