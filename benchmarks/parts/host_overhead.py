"""Part 7 (and ``python -m benchmarks.host_overhead``): the host's time per training step.

A GPU runs a small model's compiled step in tens of microseconds, so what the host does
between steps (the loader, the plan's bookkeeping, dispatch, metrics, the log) is what a GPU
waits for. A CPU sees it with a tiny step (width 0.125, batch 8): the training loop, as part 6
times it, against the same compiled step alone on the same batches held on the device; per
step, the difference is the host's time that the step did not hide. The loader alone is timed
per batch (part 6's ``loader_alone``).
"""

from __future__ import annotations

import sys

from benchmarks.common import Row
from benchmarks.parts import Settings, end_to_end

PART = "7 host overhead"
TINY_STEP = dict(width=0.125, batch_size=8)
PIPELINES = ("device", "grain")


def run(policies, pipelines, **overrides) -> list[dict]:
    """Part 6's rows for a tiny step (``overrides``: TrainConfig fields, ``steps`` required;
    they may replace the tiny step's), with times per step in µs: ``loop_us``, ``step_us``,
    ``host_us`` (their difference) and ``loader_us`` (per batch)."""
    fields = {**TINY_STEP, **overrides}
    rows = end_to_end.run(policies, pipelines, **fields)
    for r in rows:
        per = 1e6 * fields["batch_size"]  # µs per step from examples/s
        r.update(
            batch_size=fields["batch_size"],
            loop_us=per / r["end_to_end"],
            step_us=per / r["step_alone"],
            loader_us=per / r["loader_alone"],
        )
        r["host_us"] = r["loop_us"] - r["step_us"]
        print(format_row(r), file=sys.stderr, flush=True)
    return rows


def format_row(r: dict) -> str:
    return (
        f"{r['train_size']:<24} {r['pipeline']:<7} loop {r['loop_us']:>8,.0f} µs/step   "
        f"step alone {r['step_us']:>8,.0f} µs/step   host {r['host_us']:>7,.0f} µs/step   "
        f"loader alone {r['loader_us']:>8,.0f} µs/batch"
    )


def rows(s: Settings) -> list[Row]:
    measured = []
    for policy, data in s.host_policies:  # each policy on its own data (a Settings field)
        fields = dict(dataset=getattr(s, data), data_dir=s.data_dir, steps=s.host_steps)
        measured += [
            {**r, "dataset": fields["dataset"]} for r in run([policy], PIPELINES, **fields)
        ]
    out = []
    for r in measured:
        what = f"{r['policy']}, {r['pipeline']} pipeline, tiny step"
        note = (
            f"loop {r['loop_us']:,.0f} µs/step, step alone {r['step_us']:,.0f}, loader alone "
            f"{r['loader_us']:,.0f} µs/batch; {r['train_size']} on {r['dataset']}, batch "
            f"{r['batch_size']}"
        )
        target = "<= 1.1" if r["pipeline"] == "device" and r["policy"] != "native" else None
        ratio = r["loop_us"] / r["step_us"]
        out.append(Row(PART, f"loop ÷ step alone, {what}", ratio, "×", target, note))
    by = {(r["policy"], r["pipeline"]): r for r in measured}
    for policy, _ in s.host_policies:
        device, grain = by[policy, "device"], by[policy, "grain"]
        name = f"device loader alone ÷ grain loader alone, {policy}"
        note = (
            f"{grain['loader_us']:,.0f} vs {device['loader_us']:,.0f} µs/batch, {device['dataset']}"
        )
        target = ">= 10" if policy == "native" else None
        out.append(Row(PART, name, grain["loader_us"] / device["loader_us"], "×", target, note))
    return out
