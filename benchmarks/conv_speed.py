"""Train-step speed with the adopted input gradient of the stride-2 convolutions against XLA's.

    python -m benchmarks.conv_speed [--sizes=28,64] [--batch_size=128] [--steps=10]
        [--repeats=5] [--quick] [--dataset=procedural_digits/fixed28]

The training loop's compiled step with ``--conv_grad=custom``
(``fcn_jax/models/strided_conv.py``, what ``auto`` picks on CPUs and GPUs) and ``autodiff``, from
the same weights on the same batches: images/s (median of interleaved windows), compile seconds and
how far the first losses differ. The variants measured once and not adopted: README, Performance.
"""

from __future__ import annotations

from absl import app, flags

from benchmarks.common import StepRunner, median_rates, seed_config
from fcn_jax.train import build

HELD_BATCHES = 4

flags.DEFINE_list("sizes", ["28", "64"], "image sides")
flags.DEFINE_integer("batch_size", 128, "batch size")
flags.DEFINE_integer("steps", 10, "steps per timed window")
flags.DEFINE_integer("repeats", 5, "timed windows per variant")
flags.DEFINE_boolean("quick", False, "fewer and shorter windows")
flags.DEFINE_enum("groups", "conv", ["conv"], "what to time (conv: the only group left)")
flags.DEFINE_string("dataset", "procedural_digits/fixed28", "where the batches come from")
flags.DEFINE_string("data_dir", None, "TFDS data directory")


def measure(size: int, batch_size: int, steps: int, repeats: int, **config) -> list[dict]:
    """One row per input gradient at image side ``size``."""
    runners = {}
    for grad in ("custom", "autodiff"):  # each compiles right after its build sets conv_grad
        fields = dict(train_size=f"fixed:{size}", batch_size=batch_size, conv_grad=grad)
        setup = build(seed_config(**fields, **config))
        runners[grad] = StepRunner(setup, [next(setup.loader) for _ in range(HELD_BATCHES)])
    rates = median_rates(runners, steps, repeats)
    ref = runners["autodiff"].losses
    return [
        {
            "conv_grad": grad,
            "size": size,
            "batch_size": batch_size,
            "images_per_s": rates[grad],
            "compile_s": r.compile_seconds,
            "losses_max_rel": max(abs(a - b) / abs(b) for a, b in zip(r.losses, ref)),
        }
        for grad, r in runners.items()
    ]


def main(argv) -> None:
    del argv
    f = flags.FLAGS
    steps, repeats = (max(2, f.steps // 3), 3) if f.quick else (f.steps, f.repeats)
    print(f"{'conv_grad':10s} {'size':>5s} {'batch':>5s} {'img/s':>8s} {'compile':>8s} loss rel")
    data = dict(dataset=f.dataset, data_dir=f.data_dir)
    for size in f.sizes:
        for r in measure(int(size), f.batch_size, steps, repeats, **data):
            print(
                f"{r['conv_grad']:10s} {r['size']:5d} {r['batch_size']:5d} "
                f"{r['images_per_s']:8.0f} {r['compile_s']:7.2f}s {r['losses_max_rel']:.1e}"
            )


if __name__ == "__main__":
    app.run(main)
