"""The size settings of a training config (``--train_size``, ``--buckets``, ``--eval_sizes``,
``--tta_sizes``): parsed once from their text (:func:`parsed_sizes`), bound to the data's
dimensionality (:func:`bind_sizes`) and spelled canonically (:func:`spelled`,
:func:`canonical_sizes`: what config.json, the resume check and the reuse check compare)."""

from __future__ import annotations

import functools

from fcn_jax.sizes import SizeList

# The settings given as size text.
SIZE_FIELDS = ("train_size", "buckets", "eval_sizes", "tta_sizes")
# Test sizes per dimensionality; 2-D's include the 28×16 'production' image of the original
# discussion.
DEFAULT_EVAL_SIZES = {2: "grid:16,28,40,56", 1: "24,32,40,56,72"}


def parsed_sizes(values: dict) -> dict:
    """``values`` with each size setting given as text parsed (one-line ValueError naming its
    flag); parsed and None values pass through."""
    from fcn_jax.data import parse_buckets, parse_size_policy

    parsers = {
        "train_size": parse_size_policy,
        "buckets": parse_buckets,
        "eval_sizes": functools.partial(SizeList.parse, flag="eval_sizes"),
        "tta_sizes": functools.partial(SizeList.parse, flag="tta_sizes", grid=False),
    }
    out = dict(values)
    for name, parse in parsers.items():
        if isinstance(values.get(name), str):
            try:
                out[name] = parse(values[name])
            except ValueError as e:
                raise ValueError(_naming(name, e)) from None
    return out


def bind_sizes(name: str, value, spatial_dims: int):
    """Size setting ``name`` (parsed, or None) bound to ``spatial_dims``; unset test sizes
    are the default ones."""
    if value is None:
        default = DEFAULT_EVAL_SIZES[spatial_dims]
        return SizeList.parse(default, flag=name) if name == "eval_sizes" else None
    try:
        if isinstance(value, SizeList):
            return value.bind(spatial_dims, flag=name)
        return value.bind(spatial_dims)
    except ValueError as e:
        raise ValueError(_naming(name, e, value.spec())) from None


def canonical_sizes(values: dict, spatial_dims: int) -> dict:
    """Recorded config values with their size settings spelled canonically for
    ``spatial_dims``-D data, so that equivalent spellings (``fixed:28`` and ``fixed:28x28``,
    ``mixed:`` and ``mixed_step:``, an unset and the default test sizes) compare equal; a value
    that does not parse is kept as written."""
    out = dict(values)
    for name in SIZE_FIELDS:
        if name in values:
            try:
                value = parsed_sizes({name: values[name]})[name]
                out[name] = spelled(bind_sizes(name, value, spatial_dims))
            except ValueError:
                pass
    return out


def spelled(value):
    """A parsed setting's canonical text (other values as they are)."""
    return value.spec() if hasattr(value, "spec") else value  # SizePolicy, BucketSpec, SizeList


def _naming(name: str, error: ValueError, spec: str | None = None) -> str:
    """``error``'s message naming flag ``name`` (unless it does already)."""
    message = str(error)
    if message.startswith("--"):
        return message
    return f"--{name}={spec!r}: {message}" if spec else f"--{name}: {message}"
