"""Write an MNIST-scale version of a 2-D dataset: pooled, re-split by label, rescaled.

python -m experiments.rescale --source=npz:real_digits.npz --seed=0  # -> runs/rescaled/
python -m experiments.rescale --source=idx:~/data/mnist --out=runs/mnist_scale1.npz --seed=1
python -m experiments.rescale --source=procedural_digits/fixed28 --out=/tmp/pd_scale.npz \
    --train=10000 --val=2000 --test=12000

The protocol of Sosnovik et al. ("Scale-Equivariant Steerable Networks", ICLR 2020, after Ghosh
& Gupta 2019): the source's train and test splits are pooled and split again, stratified by
label, into --train / --val / --test examples (defaults 10 000 / 2 000 / 50 000, as for MNIST's
70 000); each image is scaled about its centre by a factor drawn uniformly from
[--min_scale, --max_scale] (default [0.3, 1]) on a zero canvas of its own size, as the published
generator does it (ISosnovik/sesn's ``prepare_datasets.py``: torchvision's ``RandomAffine`` on PIL
images, bicubic, not antialiased, so small digits come out thin and aliased); --antialias scales
with an antialiased bicubic instead (smoother, easier digits: not the published benchmark).
Everything random follows from --seed. The file (``fcn_jax/data/rescale.py``)
holds ``{train,val,test}_{images,labels,scales}``, ``num_classes`` and ``class_names`` when the
source names its classes; without --out it goes to ``runs/rescaled/NAME-seedS.npz`` (git ignores
runs/; ``NAME-seedS-antialias.npz`` with --antialias), NAME the source's. ``--dataset=npz:OUT``
trains on its train split and tests on its test split. Bad arguments or an unwritable --out:
one ``error:`` line, exit 1.
"""

from __future__ import annotations

import time

from absl import app, flags

from experiments.flags import run_cleanly

SOURCE = flags.DEFINE_string(
    "source", None, "Dataset spec of 2-D data of one size: npz:PATH, idx:DIR, a TFDS name..."
)
OUT = flags.DEFINE_string(
    "out", None, "The .npz file to write (atomically); default runs/rescaled/NAME-seedS.npz."
)
SEED = flags.DEFINE_integer("seed", 0, "Seed of the split and the scale factors.")
MIN_SCALE = flags.DEFINE_float("min_scale", 0.3, "Smallest scale factor (> 0).")
MAX_SCALE = flags.DEFINE_float("max_scale", 1.0, "Largest scale factor (>= --min_scale).")
TRAIN = flags.DEFINE_integer("train", 10000, "Examples in the train split.")
VAL = flags.DEFINE_integer("val", 2000, "Examples in the validation split.")
TEST = flags.DEFINE_integer("test", 50000, "Examples in the test split.")
ANTIALIAS = flags.DEFINE_boolean(
    "antialias",
    False,
    "antialiased bicubic scaling (smoother small digits) instead of the published generator's "
    "point-sampled PIL bicubic",
)
DATA_DIR = flags.DEFINE_string("data_dir", None, "TFDS data directory (TFDS sources).")
TRAIN_SPLIT = flags.DEFINE_string(
    "train_split", None, "The source's split pooled as its train part, e.g. train[:50000]."
)
TEST_SPLIT = flags.DEFINE_string(
    "test_split", None, "The source's split pooled as its test part, e.g. train[50000:]."
)
ALLOW_PICKLE = flags.DEFINE_boolean(
    "allow_pickle",
    False,
    "read object arrays of an npz source by unpickling them: only for files you trust "
    "(unpickling a crafted file runs its code)",
)


def check_flags() -> dict[str, int]:
    """The split counts, after checking every flag (ValueError naming the flag at fault)."""
    if not SOURCE.value:
        raise ValueError("--source is required: a 2-D dataset spec (npz:PATH, idx:DIR, ...)")
    if OUT.value is not None and not OUT.value.endswith(".npz"):
        raise ValueError(f"--out={OUT.value} must name a file ending in .npz")
    if not MIN_SCALE.value > 0:
        raise ValueError(f"--min_scale={MIN_SCALE.value:g} must be > 0")
    if not MIN_SCALE.value <= MAX_SCALE.value:
        raise ValueError(
            f"--min_scale={MIN_SCALE.value:g} must be <= --max_scale={MAX_SCALE.value:g}"
        )
    counts = {"train": TRAIN.value, "val": VAL.value, "test": TEST.value}
    for name, n in counts.items():
        if n <= 0:
            raise ValueError(f"--{name}={n} must be positive")
    return counts


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise ValueError(f"unexpected arguments: {' '.join(argv[1:])}")
    counts = check_flags()
    from fcn_jax.data.arrays import save_npz  # after the checks: slow imports
    from fcn_jax.data.rescale import SPLITS, default_output, rescale_dataset

    out = OUT.value or default_output(SOURCE.value, SEED.value, ANTIALIAS.value)
    start = time.perf_counter()
    arrays = rescale_dataset(
        SOURCE.value,
        counts,
        min_scale=MIN_SCALE.value,
        max_scale=MAX_SCALE.value,
        seed=SEED.value,
        data_dir=DATA_DIR.value,
        train_split=TRAIN_SPLIT.value,
        test_split=TEST_SPLIT.value,
        allow_pickle=ALLOW_PICKLE.value,
        antialias=ANTIALIAS.value,
    )
    save_npz(out, arrays)
    images = arrays["train_images"]
    drawn = [arrays[f"{s}_scales"] for s in SPLITS]
    print(out)
    print(
        ", ".join(f"{s} {len(arrays[f'{s}_labels'])}" for s in SPLITS)
        + f" examples of {'x'.join(map(str, images.shape[1:]))} {images.dtype} "
        f"({int(arrays['num_classes'])} classes) from {SOURCE.value}; scales uniform in "
        f"[{MIN_SCALE.value:g}, {MAX_SCALE.value:g}] (drawn {min(d.min() for d in drawn):.3f}"
        f"-{max(d.max() for d in drawn):.3f}), "
        f"{'antialiased' if ANTIALIAS.value else 'published (PIL bicubic, no antialiasing)'}, "
        f"seed {SEED.value}; "
        f"{time.perf_counter() - start:.1f} s"
    )


if __name__ == "__main__":
    app.run(run_cleanly(main, (ValueError, OSError)))
