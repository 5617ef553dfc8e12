"""Size policies and bucket specs parsed once, without the data's dimensionality where the text
does not fix it, bound to it later, and written in one canonical spelling."""

import pytest

from fcn_jax.data import BucketSpec, parse_buckets, parse_size_policy, resolve_buckets


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
