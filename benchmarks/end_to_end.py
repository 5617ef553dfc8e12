"""Training examples/s end to end against the train step alone and the loader alone, per size
policy and pipeline (what is measured: ``benchmarks/parts/end_to_end.py``).

    python -m benchmarks.end_to_end [--dataset=procedural_digits/fixed28] [--batch_size=64]
        [--steps=300] [--policies=fixed,mixed_step,mixed_example] [--pipelines=device,grain]
        [--precision=float32] [--conv_grad=auto] [--worker_count=0] [--out=FILE.json]

Variable-size data, each example at its own size: ``--dataset=procedural_digits
--policies=native``.
"""

from __future__ import annotations

import jax
from absl import app, flags

from benchmarks.parts.end_to_end import POLICIES, format_row, run
from fcn_jax.outputs import write_json

flags.DEFINE_string(
    "dataset", "procedural_digits/fixed28", "training data (native: of varying sizes)"
)
flags.DEFINE_string("data_dir", None, "TFDS data directory")
flags.DEFINE_integer("batch_size", 64, "global batch size")
flags.DEFINE_integer("steps", 300, "steps per measurement")
flags.DEFINE_list("policies", ["fixed", "mixed_step", "mixed_example"], f"of {list(POLICIES)}")
flags.DEFINE_list("pipelines", ["device", "grain"], "input pipelines: device, grain")
flags.DEFINE_string("precision", "float32", "float32 or bfloat16")
flags.DEFINE_string("matmul_precision", "auto", "auto, default, high or highest")
flags.DEFINE_string("conv_grad", "auto", "auto, custom or autodiff")
flags.DEFINE_integer("worker_count", 0, "grain pipeline: worker processes (0: threads)")
flags.DEFINE_string("out", None, "also write the rows to this JSON file")
TRAIN_FIELDS = "dataset data_dir batch_size steps precision matmul_precision conv_grad worker_count"


def main(argv) -> None:
    del argv
    f = flags.FLAGS
    unknown = set(f.policies) - set(POLICIES)
    if unknown:
        raise app.UsageError(f"--policies: unknown {sorted(unknown)}; expected {list(POLICIES)}")
    overrides = {name: f[name].value for name in TRAIN_FIELDS.split()}
    rows = run(f.policies, f.pipelines, **overrides)
    print(f"{jax.devices()[0].device_kind}, batch {f.batch_size}, {f.steps} steps, {f.precision}")
    for r in rows:
        print(format_row(r))
    if f.out:
        write_json(f.out, {"settings": overrides, "rows": rows})


if __name__ == "__main__":
    app.run(main)
