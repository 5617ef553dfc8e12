"""Size policies and bucket specs parsed once, without the data's dimensionality where the text
does not fix it, bound to it later, and written in one canonical spelling."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fcn_jax.data import (
    BucketSpec,
    SizePolicy,
    parse_buckets,
    parse_size_policy,
    resolve_buckets,
)


@pytest.mark.parametrize(
    "spec, dims",
    [
        ("fixed:28", None),
        ("fixed:28x16", 2),
        ("mixed:16-64", None),
        ("mixed_step:16-28x40:4", 2),
        ("mixed_example:16-64:log", None),
        ("mixed_example:16-64:aspect=2", 2),  # a bound on H / W: 2-D
        ("native", None),
    ],
)
def test_a_policy_parses_without_the_data_and_knows_what_it_fixes(spec, dims):
    policy = parse_size_policy(spec)
    assert policy.spatial_dims == dims
    for d in (1, 2) if dims is None else (dims,):
        assert policy.bind(d) == parse_size_policy(spec, d)


@pytest.mark.parametrize(
    "spellings, dims, canonical",
    [
        (["fixed:28", "fixed:28x28", " fixed:28 "], 2, "fixed:28x28"),
        (["fixed:40"], 1, "fixed:40"),
        (
            ["mixed:16-64", "mixed_step:16-64", "mixed_step:16x16-64:8"],
            2,
            "mixed_step:16x16-64x64:8",
        ),
        (["mixed:24-72:12:scale", "mixed_step:24-72:12:scale"], 1, "mixed_step:24-72:12:scale"),
        (["mixed_example:16-64:log", "mixed_example:16x16-64x64:log"], 2, None),
    ],
)
def test_equivalent_spellings_are_one_policy_with_one_canonical_spelling(
    spellings, dims, canonical
):
    policies = [parse_size_policy(s).bind(dims) for s in spellings]
    assert all(p == policies[0] for p in policies)
    assert {p.spec() for p in policies} == {canonical or policies[0].spec()}
    assert parse_size_policy(policies[0].spec(), dims) == policies[0]  # it parses back


@pytest.mark.parametrize(
    "spec, dims, message",
    [
        ("fixed:28x16", 1, "a 2-D policy, the data is 1-D"),
        ("mixed_example:16-64:aspect=2", 1, "a 2-D policy, the data is 1-D"),
        ("fixed:4x5x6", None, "expected 1-D or 2-D sizes"),
        ("mixed:16x16-28x28x28", None, "sizes of different dimensionality"),
    ],
)
def test_the_dimensionality_a_policy_needs_is_named(spec, dims, message):
    with pytest.raises(ValueError, match=rf"^bad size policy {spec!r}: .*{message}") as e:
        parse_size_policy(spec, dims)
    assert "\n" not in str(e.value)


def test_an_unbound_policy_refuses_what_needs_the_data():
    with pytest.raises(ValueError, match="dimensionality"):
        parse_size_policy("fixed:28").grid()


def test_bucket_specs_parse_bind_and_spell_canonically():
    assert (
        parse_buckets("auto:8") == BucketSpec(auto=8) and parse_buckets("auto:8").spec() == "auto:8"
    )
    listed = parse_buckets("48x64, 32,32x32")
    assert listed.spatial_dims == 2 and listed.spec() == "32x32,48x64"
    assert parse_buckets("32,16").bind(2).spec() == "16x16,32x32"
    assert parse_buckets("32,16").bind(1).spec() == "16,32"
    with pytest.raises(ValueError, match="2-D shapes, the data is 1-D"):
        parse_buckets("32x32").bind(1)
    for bad in ("auto:0", "auto:x", "16x16x2", "a,b", ""):
        with pytest.raises(ValueError, match="^bad bucket spec"):
            parse_buckets(bad)


def test_resolve_buckets_takes_parsed_specs():
    native = parse_size_policy("native", 2)
    sizes = [[10, 10], [30, 20]]
    assert resolve_buckets(parse_buckets("32x32,16"), native, sizes) == [(16, 16), (32, 32)]
    with pytest.raises(ValueError, match="only applies to the native and mixed_example"):
        resolve_buckets(parse_buckets("auto:2"), parse_size_policy("fixed:28", 2), sizes)
    with pytest.raises(ValueError, match="^bad bucket spec '32x32': 2-D shapes"):
        resolve_buckets("32x32", parse_size_policy("native", 1), [[10], [30]])


@pytest.mark.parametrize("spec", ["mixed_example:14-64", "mixed_example:14-64:log:aspect=2"])
def test_size_distribution(spec):
    policy = parse_size_policy(spec, 2)
    sizes, prob = policy.size_distribution()
    assert sizes.min() == 14 and sizes.max() == 64 and prob.sum() == pytest.approx(1)
    if policy.max_aspect:
        assert (sizes.max(1) <= 2 * sizes.min(1)).all() and (sizes == [14, 28]).all(1).any()
        # log-uniform: each axis' marginal falls like 1/n (before the aspect cut, at the middle)
        ratio = prob[(sizes == [30, 30]).all(1)] / prob[(sizes == [40, 40]).all(1)]
        assert ratio == pytest.approx((40 * 40) / (30 * 30))
    else:
        assert len(sizes) == 51 * 51 and np.allclose(prob, 1 / 51**2)


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
