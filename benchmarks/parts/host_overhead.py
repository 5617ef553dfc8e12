"""Part 7 (and ``python -m benchmarks.host_overhead``): the host's time per training step.

A GPU runs a small model's compiled step in tens of microseconds, so what the host does
between steps (the loader, the plan's bookkeeping, dispatch, metrics, the log) is what a GPU
waits for. A CPU sees it with a tiny step (width 0.125, batch 8): the training loop, as part 6
times it, against the same compiled step alone on the same batches held on the device; per
step, the difference is the host's time that the step did not hide. On the device pipeline the
loop's step assembles its batch (gather, resize, mask: device work), so its step alone is that
step on each step's rows put on the device beforehand (``plain_us``: the step on batches made
beforehand, part 6's step alone). The loop and the steps alone alternate over rounds and each
is the median of its rounds: on a shared machine one measurement varies by ±30%. The loader
alone is timed per batch (part 6's ``loader_alone``).
"""

from __future__ import annotations

import statistics
import sys
import time

import jax

from benchmarks.common import Row, StepRunner, time_interleaved
from benchmarks.parts import Settings, end_to_end
from fcn_jax.data.assemble import batch_key
from fcn_jax.setup import build, open_dataset

PART = "7 host overhead"
TINY_STEP = dict(width=0.125, batch_size=8)
PIPELINES = ("device", "grain")


def run(policies, pipelines, rounds: int = 1, **overrides) -> list[dict]:
    """One row per policy and pipeline for a tiny step (``overrides``: TrainConfig fields,
    ``steps`` required; they may replace the tiny step's): the loop, the step alone (on the
    device pipeline the step that assembles its batch; ``plain_us``: the step on batches made
    beforehand, measured once per policy) and the loader alone, in µs a step, medians of
    ``rounds`` interleaved rounds (one machine's noise hits them alike); ``host_us`` is the
    loop's less the step's."""
    fields = {**TINY_STEP, **overrides}
    dataset = open_dataset(end_to_end.config_for(policies[0], "device", **fields))
    per = 1e6 * fields["batch_size"]  # µs per step from examples/s
    rows = []
    for label in policies:
        configs = {p: end_to_end.config_for(label, p, **fields) for p in pipelines}
        plain = end_to_end.config_for(label, "device", **fields)  # the same step on both
        runs = {
            ("loop", p): lambda c=c: end_to_end.loop_rate(c, dataset)[0] for p, c in configs.items()
        }
        runs["plain"] = lambda c=plain: end_to_end.step_alone(c, dataset)
        if "device" in configs:
            runs["step"] = lambda c=configs["device"]: assembling_step_alone(c, dataset)
        us = {k: per / statistics.median(v) for k, v in time_interleaved(runs, rounds).items()}
        for pipeline, config in configs.items():
            step_us = us["step"] if pipeline == "device" else us["plain"]
            loop_us = us["loop", pipeline]
            r = {
                "policy": label,
                "train_size": end_to_end.POLICIES[label],
                "pipeline": pipeline,
                "batch_size": fields["batch_size"],
                "rounds": rounds,
                "loop_us": loop_us,
                "step_us": step_us,
                "plain_us": us["plain"],
                "host_us": loop_us - step_us,
                "loader_us": per / end_to_end.loader_alone(config, dataset),
            }
            rows.append(r)
            print(format_row(r), file=sys.stderr, flush=True)
    return rows


def assembling_step_alone(config, dataset) -> float:
    """Examples/s of the step the device pipeline's loop runs, which assembles its batch from
    the data held on the device, alone: the run's step inputs made beforehand (each step's rows
    on the device), every shape compiled and run once before the clock starts."""
    setup = build(config, dataset)
    inputs = [setup.loader.held_input(step) for step in range(setup.total_steps)]
    runner = StepRunner(setup)
    for batch in {batch_key(b): b for b in inputs}.values():
        runner.step(batch)
    jax.block_until_ready(runner.state)
    start = time.perf_counter()
    for batch in inputs:
        runner.step(batch)
    jax.block_until_ready(runner.state)
    examples = sum(b.held.rows.shape[0] for b in inputs)
    return examples / (time.perf_counter() - start)


def format_row(r: dict) -> str:
    return (
        f"{r['train_size']:<24} {r['pipeline']:<7} loop {r['loop_us']:>8,.0f} µs/step   "
        f"step alone {r['step_us']:>8,.0f} µs/step (plain {r['plain_us']:,.0f})   "
        f"host {r['host_us']:>7,.0f} µs/step   "
        f"loader alone {r['loader_us']:>8,.0f} µs/batch"
    )


def rows(s: Settings) -> list[Row]:
    measured = []
    for policy, data in s.host_policies:  # each policy on its own data (a Settings field)
        fields = dict(dataset=getattr(s, data), data_dir=s.data_dir, steps=s.host_steps)
        rows = run([policy], PIPELINES, rounds=s.rounds, **fields)
        measured += [{**r, "dataset": fields["dataset"]} for r in rows]
    out = []
    for r in measured:
        what = f"{r['policy']}, {r['pipeline']} pipeline, tiny step"
        note = (
            f"loop {r['loop_us']:,.0f} µs/step, step alone {r['step_us']:,.0f} (plain step "
            f"{r['plain_us']:,.0f}), loader alone "
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
