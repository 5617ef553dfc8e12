"""Part 2: padding efficiency of ``auto:K`` and pad-to-max buckets on real datasets' sizes."""

from __future__ import annotations

import numpy as np

from benchmarks.common import Row
from benchmarks.parts import Settings
from fcn_jax import create_model
from fcn_jax.data import load_dataset, padding_efficiency, parse_size_policy, resolve_buckets
from fcn_jax.sizes import format_size

PART, GOAL = "2 padding", 0.9


def buckets_needed(sizes: np.ndarray, goal: float, max_k: int, known: dict[int, float]):
    """Smallest K whose ``auto:K`` buckets reach padding efficiency ``goal`` (None if even
    ``max_k`` does not), assuming efficiency grows with K. ``known``: K → efficiency already
    measured (narrows the search, which is costly for large K)."""
    policy, known = parse_size_policy("native", sizes.shape[1]), dict(known)

    def reaches(k: int) -> bool:
        if k not in known:
            known[k] = padding_efficiency(sizes, resolve_buckets(f"auto:{k}", policy, sizes))
        return known[k] >= goal

    lo = max([0] + [k for k, e in known.items() if e < goal])  # below the goal
    hi = min([k for k, e in known.items() if e >= goal], default=None)
    while hi is None:  # double until the goal is reached
        k = min(2 * max(lo, 1), max_k)
        if reaches(k):
            hi = k
        elif k == max_k:
            return None
        else:
            lo = k
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if reaches(mid) else (mid, hi)
    return hi


def dataset_rows(dataset: str, sizes: np.ndarray, s: Settings) -> list[Row]:
    """Padding efficiency of each bucket spec on one dataset's training sizes (already raised
    to the model's minimum size)."""
    policy = parse_size_policy("native", sizes.shape[1])
    short, shapes = dataset.removeprefix("procedural_digits/"), len(np.unique(sizes, axis=0))
    rows, known = [], {}
    for spec in s.padding_specs:
        buckets = resolve_buckets(spec, policy, sizes)
        efficiency = padding_efficiency(sizes, buckets)
        known[int(spec.removeprefix("auto:"))] = efficiency
        note = f"{len(buckets)} buckets for {shapes} distinct shapes"
        name = f"padding efficiency {spec}, {short}"
        rows.append(Row(PART, name, efficiency, "valid/padded", f">= {GOAL}", note))
    top = tuple(int(v) for v in sizes.max(0))
    name = f"padding efficiency, one {format_size(top)} bucket, {short}"
    note = "pad every example to the largest size"
    rows.append(Row(PART, name, padding_efficiency(sizes, [top]), "valid/padded", note=note))
    k = buckets_needed(sizes, GOAL, s.padding_max_k, known)
    note = f"none up to auto:{s.padding_max_k}" if k is None else ""
    rows.append(Row(PART, f"auto:K buckets needed for {GOAL}, {short}", k, "buckets", note=note))
    return rows


def rows(s: Settings) -> list[Row]:
    min_size = create_model("seed", num_classes=10).min_size
    out = []
    for name in s.padding_datasets:
        sizes = load_dataset(name, s.data_dir).train.sizes()
        out += dataset_rows(name, np.maximum(sizes, min_size), s)
    return out
