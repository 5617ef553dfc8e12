"""Training images/s of the ``seed`` FCN in JAX and in PyTorch eager, on the same batches from
the same initial weights (what is measured: ``benchmarks/parts/vs_torch.py``).

    python -m benchmarks.torch_compare [--sizes=28,64] [--batch_sizes=128,32] [--steps=10]
        [--repeats=5] [--quick] [--device=cpu|cuda] [--conv_grad=auto|custom|autodiff]

Prints the rows of the benchmark table's part 4. Needs the ``bench`` extra (``torch``).
"""

from __future__ import annotations

from absl import app, flags

from benchmarks.common import to_markdown
from benchmarks.parts.vs_torch import run, torch_rows

flags.DEFINE_list("sizes", ["28", "64"], "image sides")
flags.DEFINE_list("batch_sizes", ["128"], "batch sizes")
flags.DEFINE_integer("steps", 10, "steps per timed window")
flags.DEFINE_integer("repeats", 5, "timed windows per side (medians)")
flags.DEFINE_boolean("quick", False, "fewer and shorter windows")
flags.DEFINE_string("device", "cpu", "PyTorch device: cpu or cuda")
flags.DEFINE_string("conv_grad", "auto", "JAX: auto, custom or autodiff")
flags.DEFINE_string("dataset", "procedural_digits/fixed28", "where the batches come from")
flags.DEFINE_string("data_dir", None, "TFDS data directory")


def main(argv) -> None:
    del argv
    f = flags.FLAGS
    sizes, batch_sizes = [int(s) for s in f.sizes], [int(b) for b in f.batch_sizes]
    config = dict(conv_grad=f.conv_grad, dataset=f.dataset, data_dir=f.data_dir)
    results = run(sizes, batch_sizes, f.steps, f.repeats, f.quick, device=f.device, **config)
    print(to_markdown([row.to_dict() for r in results for row in torch_rows(r)]))
    differ = [r["size"] for r in results if not r.get("same_math", True)]
    if differ:
        raise SystemExit(f"first-step losses differ between JAX and PyTorch at sizes {differ}")


if __name__ == "__main__":
    app.run(main)
