"""Training examples/s end to end against the train step alone, per size policy and pipeline.

    python -m benchmarks.end_to_end [--dataset=procedural_digits/fixed28] [--batch_size=64]
        [--steps=300] [--policies=fixed,mixed_step,mixed_example] [--pipelines=device,grain]
        [--precision=float32] [--conv_grad=auto] [--worker_count=0] [--out=FILE.json]

End to end is ``train_and_evaluate`` for ``--steps`` steps: examples over the training loop's
wall time with loading and logging (compiles and the one synchronous checkpoint save excluded;
``with_checkpoint`` and ``checkpoint_seconds`` report them), and the accuracy on 1000 test
examples at 28x28. Step alone is the same config's compiled step (``fcn_jax.train.build``)
cycling through 16 batches made beforehand and held on the device, for as many steps, with one
sync at the end.
Policies (on 28x28 data; the comparison's test grid is 16..56): ``fixed:28``,
``mixed_step:16-52:12`` (16 sizes) and ``mixed_example:16-56:log`` (``auto:8`` buckets).
"""

from __future__ import annotations

import dataclasses
import sys
import tempfile
import time

import jax
from absl import app, flags

from fcn_jax import sharding
from fcn_jax.config import TrainConfig
from fcn_jax.outputs import write_json
from fcn_jax.train import build, train_and_evaluate

POLICIES = {
    "fixed": "fixed:28",
    "mixed_step": "mixed_step:16-52:12",
    "mixed_example": "mixed_example:16-56:log",
}
HELD_BATCHES = 16

flags.DEFINE_string("dataset", "procedural_digits/fixed28", "a dataset of 28x28 images")
flags.DEFINE_string("data_dir", None, "TFDS data directory")
flags.DEFINE_integer("batch_size", 64, "global batch size")
flags.DEFINE_integer("steps", 300, "steps per measurement")
flags.DEFINE_list("policies", list(POLICIES), f"some of {list(POLICIES)}")
flags.DEFINE_list("pipelines", ["device", "grain"], "input pipelines: device, grain")
flags.DEFINE_string("precision", "float32", "float32 or bfloat16")
flags.DEFINE_string("matmul_precision", "auto", "auto, default, high or highest")
flags.DEFINE_string("conv_grad", "auto", "auto, custom or autodiff")
flags.DEFINE_integer("worker_count", 0, "grain pipeline: worker processes (0: threads)")
flags.DEFINE_string("out", None, "also write the rows to this JSON file")


def config_for(spec: str, pipeline: str, **overrides) -> TrainConfig:
    """A short training run of ``spec``: one checkpoint and one log line at the end, an
    evaluation on 1000 test examples at 28x28."""
    base = dict(
        train_size=spec,
        input_pipeline=pipeline,
        eval_sizes="28",
        eval_examples=1000,
        eval_batch_size=250,
    )
    steps = overrides["steps"]
    return TrainConfig(**{**base, **overrides, "checkpoint_every": steps, "log_every": steps})


def step_alone(config: TrainConfig) -> float:
    """Examples/s of ``config``'s compiled train step on batches already on the device."""
    setup = build(dataclasses.replace(config, input_pipeline="device"))
    batches = [next(setup.loader) for _ in range(HELD_BATCHES)]
    state = jax.tree.leaves(jax.device_put(setup.state, sharding.replicated(setup.mesh)))
    for batch in batches:  # compile every shape and warm up
        state, _ = setup.train_step(state, batch)
    jax.block_until_ready(state)
    steps, examples = setup.total_steps, 0
    start = time.perf_counter()
    for i in range(steps):
        batch = batches[i % HELD_BATCHES]
        state, _ = setup.train_step(state, batch)
        examples += batch["label"].shape[0]
    jax.block_until_ready(state)
    return examples / (time.perf_counter() - start)


def end_to_end(label: str, pipeline: str, **overrides) -> dict:
    """The training run of policy ``label`` on ``pipeline``: its summary."""
    config = config_for(POLICIES[label], pipeline, **overrides)
    with tempfile.TemporaryDirectory() as workdir:
        return train_and_evaluate(config, workdir)


def run(policies, pipelines, **overrides) -> list[dict]:
    """One row per policy and pipeline; the step alone is measured once per policy."""
    rows = []
    for label in policies:
        alone = step_alone(config_for(POLICIES[label], "device", **overrides))
        for pipeline in pipelines:
            summary = end_to_end(label, pipeline, **overrides)
            # The loop without its checkpoint saves (synchronous; reported apart).
            seconds = summary["train_examples"] / summary["train_examples_per_sec"]
            rate = summary["train_examples"] / (seconds - summary["checkpoint_seconds"])
            rows.append(
                {
                    "policy": label,
                    "train_size": POLICIES[label],
                    "pipeline": summary["input_pipeline"],
                    "end_to_end": rate,
                    "step_alone": alone,
                    "ratio": rate / alone,
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
        f"test accuracy {r['test_accuracy_28']:.3f}"
    )


def main(argv) -> None:
    del argv
    f = flags.FLAGS
    unknown = set(f.policies) - set(POLICIES)
    if unknown:
        raise app.UsageError(f"--policies: unknown {sorted(unknown)}; expected {list(POLICIES)}")
    overrides = dict(
        dataset=f.dataset,
        data_dir=f.data_dir,
        batch_size=f.batch_size,
        steps=f.steps,
        precision=f.precision,
        matmul_precision=f.matmul_precision,
        conv_grad=f.conv_grad,
        worker_count=f.worker_count,
    )
    rows = run(f.policies, f.pipelines, **overrides)
    print(f"{jax.devices()[0].device_kind}, batch {f.batch_size}, {f.steps} steps, {f.precision}")
    for r in rows:
        print(format_row(r))
    if f.out:
        write_json(f.out, {"settings": overrides, "rows": rows})


if __name__ == "__main__":
    app.run(main)
