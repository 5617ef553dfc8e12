"""The host's time per training step: the training loop with a tiny step (width 0.125, batch
8) against the same compiled step alone, and the loader alone, per size policy and input
pipeline (what is measured: ``benchmarks/parts/host_overhead.py``).

    python -m benchmarks.host_overhead [--dataset=procedural_digits] [--steps=2500]
        [--policies=fixed,mixed_example,native] [--pipelines=device,grain] [--rounds=3]
        [--out=FILE.json]
"""

from __future__ import annotations

import jax
from absl import app, flags

from benchmarks.parts.end_to_end import POLICIES
from benchmarks.parts.host_overhead import TINY_STEP, format_row, run
from fcn_jax.outputs import write_json

flags.DEFINE_string("dataset", "procedural_digits", "training data (sizes may vary)")
flags.DEFINE_string("data_dir", None, "TFDS data directory")
flags.DEFINE_integer("steps", 2500, "steps per measurement (2500: an epoch at batch 8)")
flags.DEFINE_integer("batch_size", TINY_STEP["batch_size"], "global batch size")
flags.DEFINE_float("width", TINY_STEP["width"], "model width")
flags.DEFINE_list("policies", ["fixed", "mixed_example", "native"], f"some of {list(POLICIES)}")
flags.DEFINE_list("pipelines", ["device", "grain"], "input pipelines: device, grain")
flags.DEFINE_integer("rounds", 3, "interleaved rounds of the loop and the steps alone (medians)")
flags.DEFINE_string("out", None, "also write the rows to this JSON file")


def main(argv) -> None:
    del argv
    f = flags.FLAGS
    if unknown := set(f.policies) - set(POLICIES):
        raise app.UsageError(f"--policies: unknown {sorted(unknown)}; expected {list(POLICIES)}")
    fields = {k: f[k].value for k in ("dataset", "data_dir", "steps", "batch_size", "width")}
    rows = run(f.policies, f.pipelines, rounds=f.rounds, **fields)
    print(
        f"{jax.devices()[0].device_kind}, {f.dataset}, batch {f.batch_size}, {f.steps} steps, "
        f"medians of {f.rounds} rounds"
    )
    for r in rows:
        print(format_row(r))
    if f.out:
        write_json(f.out, {"settings": fields, "rows": rows})


if __name__ == "__main__":
    app.run(main)
