"""Examples/second of the training loader alone under fixed, mixed and native sizes.

    python -m benchmarks.loader_throughput [--dataset=procedural_digits] [--data_dir=DIR]
        [--policies=fixed:32,mixed:16-64:8,mixed:16-64:8:scale,native] [--batch_size=128]
        [--input_pipeline=grain|device]

Each loader is the training loop's (``fcn_jax.train.build``): the host (Grain) one, or the
device one (batches built in jit; timed until the last batch is on the device).
"""

from __future__ import annotations

import time

import jax
from absl import app, flags

from fcn_jax.config import TrainConfig
from fcn_jax.train import build

flags.DEFINE_string("dataset", "procedural_digits", "dataset")
flags.DEFINE_string("data_dir", None, "TFDS data directory")
flags.DEFINE_list("policies", "fixed:32,mixed:16-64:8,mixed:16-64:8:scale,native", "policies")
flags.DEFINE_integer("batch_size", 128, "batch size")
flags.DEFINE_integer("steps", 50, "batches timed (after 5 untimed)")
flags.DEFINE_integer("worker_count", 0, "worker processes (0: two threads)")
flags.DEFINE_enum("input_pipeline", "grain", ["grain", "device"], "which loader")


def main(argv) -> None:
    del argv
    f = flags.FLAGS
    print(f"{'policy':<22} {'examples/s':>11} {'batches/s':>10} {'buckets':>8} {'pad eff':>8}")
    for policy in f.policies:
        fields = dict(dataset=f.dataset, data_dir=f.data_dir, worker_count=f.worker_count)
        setup = build(
            TrainConfig(
                **fields,
                train_size=policy,
                batch_size=f.batch_size,
                input_pipeline=f.input_pipeline,
            )
        )
        jax.block_until_ready([next(setup.loader) for _ in range(5)])  # warm-up
        examples, compiling = 0, setup.loader.compile_seconds
        start = time.perf_counter()
        for _ in range(f.steps):
            batch = next(setup.loader)
            examples += len(batch["label"])
        jax.block_until_ready(batch)
        # Without the device loader's compiles of shapes first met here (one per bucket).
        seconds = time.perf_counter() - start - (setup.loader.compile_seconds - compiling)
        print(
            f"{policy:<22} {examples / seconds:>11.0f} {f.steps / seconds:>10.1f} "
            f"{len(setup.buckets):>8d} {setup.loader.padding_efficiency:>8.3f}"
        )


if __name__ == "__main__":
    app.run(main)
