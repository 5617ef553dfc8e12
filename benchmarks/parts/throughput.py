"""Part 3: train-step examples/s and valid pixels/s per size policy, and their ratios to fixed."""

from __future__ import annotations

import math

import numpy as np

from benchmarks.common import Row, StepRunner, seed_config, time_interleaved
from benchmarks.parts import Settings
from fcn_jax.data import assign_buckets
from fcn_jax.setup import build
from fcn_jax.sizes import format_size

PART = "3 throughput"


def policy_run(s: Settings, spec: str, bucket_spec: str | None) -> dict:
    """The policy's runner holding one real batch per batch shape, each shape weighted by how
    often steps have it (fixed: 1; mixed: uniform over the grid; native: full batches per
    bucket per epoch), with its examples and valid pixels per batch."""
    fields = dict(dataset=s.variable, data_dir=s.data_dir, batch_size=s.batch_size, steps=1)
    setup = build(seed_config(**fields, train_size=spec, buckets=bucket_spec))
    sizes = np.maximum(setup.dataset.train.sizes(), setup.model.min_size)
    if setup.policy.kind == "native":
        assign, area, b = assign_buckets(sizes, setup.buckets), np.prod(sizes, -1), s.batch_size
        members = {tuple(bk): assign == k for k, bk in enumerate(setup.buckets)}
        weights = {bk: m.sum() // b for bk, m in members.items() if m.sum() >= b}
        mean_area = {bk: area[members[bk]].mean() for bk in weights}
    else:
        weights = {tuple(bk): 1 for bk in setup.buckets}
        mean_area = {bk: math.prod(bk) for bk in weights}
    found: dict[tuple, dict] = {}
    for _ in range(100 * len(weights)):
        batch = next(setup.loader)
        found.setdefault(tuple(batch["image"].shape[1:-1]), batch)
        if len(found) == len(weights):
            break
    shapes = list(weights)
    examples = np.array([len(found[k]["label"]) for k in shapes], float)  # :scale varies them
    return {
        "runner": StepRunner(setup, [found[k] for k in shapes]),  # compiles every shape
        "shapes": shapes,
        "weight": np.array([weights[k] for k in shapes], float),
        "examples": examples,
        "valid": examples * np.array([mean_area[k] for k in shapes]),
        "padded": examples * np.array([math.prod(k) for k in shapes]),
        "padding": setup.loader.padding_efficiency,
    }


def measure(s: Settings) -> dict[str, dict]:
    """Steady-state step throughput of every policy over its mix of shapes: examples/s and
    valid and padded pixels/s. Timed interleaved: per round, every policy, every shape,
    ``reps`` steps (compiles done beforehand)."""
    policies = {label: policy_run(s, spec, buckets) for label, spec, buckets in s.policies}
    runs = {
        (label, i): lambda r=p["runner"], b=p["runner"].batches[i]: r.run(s.reps, [b])
        for label, p in policies.items()
        for i in range(len(p["shapes"]))
    }
    rates = time_interleaved(runs, s.rounds)
    for label, p in policies.items():
        medians = [np.median(rates[label, i]) for i in range(len(p["shapes"]))]
        t = p["examples"] / np.array(medians)  # seconds per step, per shape
        seconds = (p["weight"] * t).sum()
        for key in ("examples", "valid", "padded"):
            p[f"{key}_per_s"] = (p["weight"] * p[key]).sum() / seconds
        p["per_shape_px"] = dict(zip(p["shapes"], p["padded"] / t))
    return policies


def rows(s: Settings) -> list[Row]:
    results, data = measure(s), s.variable.removeprefix("procedural_digits/")
    out = []
    for label, spec, bucket_spec in s.policies:
        scaled = " scaled to constant px/step" if spec.endswith(":scale") else ""
        name = f"train step examples/s, {label} ({' '.join(filter(None, (spec, bucket_spec)))})"
        note = f"batch {s.batch_size}{scaled}, {data}"
        out.append(Row(PART, name, results[label]["examples_per_s"], "ex/s", note=note))
    for label, r in results.items():
        note = f"padded px/s {r['padded_per_s']:,.0f}"
        name = f"train step valid px/s, {label}"
        out.append(Row(PART, name, r["valid_per_s"], "px/s", note=note))
    fixed = results.pop("fixed")
    for label, r in results.items():
        ratio = r["valid_per_s"] / fixed["valid_per_s"]
        target = None if label == "pad-to-max" else ">= 0.9"
        name = f"{label} ÷ fixed, valid px/s"
        out.append(Row(PART, name, ratio, "×", target, ratio_note(r, fixed["padded_per_s"])))
    return out


def ratio_note(r: dict, fixed_px: float) -> str:
    """What limits a ratio: padding, and the padded px/s at its shapes relative to fixed (for
    a grid of sizes, the square ones; else the smallest and largest shape)."""
    per = r["per_shape_px"]
    text = f"padding eff. {r['padding']:.2f}; padded px/s {r['padded_per_s'] / fixed_px:.2f}× fixed"
    squares = [size for size in per if len(set(size)) == 1]
    shown = (
        squares if len(squares) > 2 else sorted({min(per, key=math.prod), max(per, key=math.prod)})
    )
    per_shape = ", ".join(f"{format_size(k)} {per[k] / fixed_px:.2f}×" for k in shown)
    return text + (f"; per shape {per_shape}" if len(per) > 1 else "")
