"""Part 6 (and ``python -m benchmarks.end_to_end``): training examples/s end to end against the
train step alone and the loader alone, per size policy and input pipeline.

End to end is ``train_and_evaluate`` for ``steps`` steps: examples over the loop's wall time
with loading and logging (compiles, each executable's first run and the synchronous checkpoint
save excluded; the save is reported as ``with_checkpoint`` and ``checkpoint_seconds``), and the
test accuracy at 28x28. Step alone is the same config's compiled step on the same batches, all
held on the device beforehand. Loader alone is its loader's batches, as many, timed until the
last is ready (the device loader's assembly compiles excluded): whichever of the two is slower
sets the pace end to end.
"""

from __future__ import annotations

import sys
import tempfile
import time

import jax

from benchmarks.common import Row, StepRunner
from benchmarks.parts import Settings
from fcn_jax.config import TrainConfig
from fcn_jax.run import train_and_evaluate
from fcn_jax.setup import build, open_dataset

POLICIES = {
    "fixed": "fixed:28",
    "mixed_step": "mixed_step:16-52:12",
    "mixed_example": "mixed_example:16-56:log",
    "native": "native",  # data of varying sizes (e.g. procedural_digits)
}
PART = "6 end to end"


def config_for(label: str, pipeline: str, **overrides) -> TrainConfig:
    """A short training run of policy ``label``: one checkpoint and one log line at the end, an
    evaluation on 1000 test examples at 28x28."""
    steps, spec = overrides["steps"], POLICIES[label]
    fields = dict(eval_sizes="28", eval_examples=1000, eval_batch_size=250, **overrides)
    return TrainConfig(
        **fields, train_size=spec, input_pipeline=pipeline, checkpoint_every=steps, log_every=steps
    )


def step_alone(config: TrainConfig, dataset) -> float:
    """Examples/s of ``config``'s compiled train step on the run's own batches, all on the
    device beforehand (each shape compiled and run once before the clock starts)."""
    setup = build(config, dataset)
    batches = [next(setup.loader) for _ in range(setup.total_steps)]
    runner = StepRunner(setup, list({b["image"].shape: b for b in batches}.values()))
    return runner.run(len(batches), [runner.placed(b) for b in batches])


def loader_alone(config: TrainConfig, dataset) -> float:
    """Examples/s of ``config``'s training loader alone, after 5 untimed batches."""
    loader = build(config, dataset).loader
    jax.block_until_ready([next(loader) for _ in range(5)])
    examples, compiling, start = 0, loader.compile_seconds, time.perf_counter()
    for _ in range(config.steps):
        batch = next(loader)
        examples += len(batch["label"])
    jax.block_until_ready(batch)
    return examples / (time.perf_counter() - start - (loader.compile_seconds - compiling))


def loop_rate(config: TrainConfig, dataset) -> tuple[float, dict]:
    """Examples/s of a whole run's training loop without its checkpoint saves (synchronous;
    reported apart), and the run's summary."""
    with tempfile.TemporaryDirectory() as workdir:
        summary = train_and_evaluate(config, workdir, dataset)
    seconds = summary["train_examples"] / summary["train_examples_per_sec"]
    return summary["train_examples"] / (seconds - summary["checkpoint_seconds"]), summary


def run(policies, pipelines, **overrides) -> list[dict]:
    """One row per policy and pipeline; the step alone is measured once per policy, the
    dataset opened once. ``overrides``: TrainConfig fields (``steps`` required)."""
    rows, dataset = [], open_dataset(config_for(policies[0], "device", **overrides))
    for label in policies:
        alone = step_alone(config_for(label, "device", **overrides), dataset)
        for pipeline in pipelines:
            config = config_for(label, pipeline, **overrides)
            rate, summary = loop_rate(config, dataset)
            loader = loader_alone(config, dataset)
            rows.append(
                {
                    "policy": label,
                    "train_size": POLICIES[label],
                    "pipeline": summary["input_pipeline"],
                    "end_to_end": rate,
                    "step_alone": alone,
                    "ratio": rate / alone,
                    "loader_alone": loader,
                    "with_checkpoint": summary["train_examples_per_sec"],
                    "checkpoint_seconds": summary["checkpoint_seconds"],
                    "test_accuracy_28": summary["test_accuracy"],
                    "train_compiles": summary["train_compiles"],
                    "device": summary["device_kind"],
                }
            )
            print(format_row(rows[-1]), file=sys.stderr, flush=True)
    return rows


def format_row(r: dict) -> str:
    return (
        f"{r['policy']:<14} {r['pipeline']:<7} end to end {r['end_to_end']:>10,.0f} ex/s   "
        f"step alone {r['step_alone']:>10,.0f} ex/s   ratio {r['ratio']:.2f}   "
        f"loader alone {r['loader_alone']:>10,.0f} ex/s   "
        f"test accuracy {r['test_accuracy_28']:.3f}"
    )


def rows(s: Settings) -> list[Row]:
    fields = dict(dataset=s.fixed28, data_dir=s.data_dir, batch_size=s.batch_size)
    out = []
    for r in run(s.e2e_policies, ("device", "grain"), **fields, steps=s.e2e_steps):
        name = f"end to end ÷ step alone, {r['policy']}, {r['pipeline']} pipeline"
        note = (
            f"{r['end_to_end']:,.0f} vs {r['step_alone']:,.0f} ex/s (loader alone "
            f"{r['loader_alone']:,.0f}), batch {s.batch_size}, "
        )
        out.append(Row(PART, name, r["ratio"], "×", ">= 0.9", note + r["train_size"]))
    return out
