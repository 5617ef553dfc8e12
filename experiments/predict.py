"""Classify image files of any size with an exported model (or a run directory), optionally
writing class activation map overlays.

    python -m experiments.predict --model=model.fcnx a.png b.jpg [--top_k=3] [--cam=DIR]

Each image is read as grayscale or RGB to match the model, scaled to [0, 1], and run alone at
its own size; its top classes are printed by name (the export's or the run's class names, else
indices). Bad arguments: one ``error:`` line, exit 1; exits 1 too if any file failed.
"""

from __future__ import annotations

import sys

from absl import app, flags

from experiments.flags import run_cleanly

MODEL = flags.DEFINE_string("model", None, "An exported model file or a training run directory.")
TOP_K = flags.DEFINE_integer("top_k", 3, "How many classes to print per image.", lower_bound=1)
CAM = flags.DEFINE_string("cam", None, "Directory for <image stem>.cam.png CAM overlays.")


def main(argv: list[str]) -> None:
    paths = argv[1:]
    if not MODEL.value:
        raise app.UsageError("--model is required")
    if not paths:
        raise app.UsageError("give one or more image files")
    from fcn_jax.predict import load_predictor, predict_files

    predictor = load_predictor(MODEL.value)
    if predictor.spatial_dims != 2:
        raise ValueError(
            f"image files need a 2-D model; {MODEL.value} is {predictor.spatial_dims}-D"
        )
    failed = 0
    for pred in predict_files(predictor, paths, TOP_K.value, CAM.value):
        print(pred.format(), file=sys.stderr if pred.error else sys.stdout, flush=True)
        failed += pred.error is not None
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    app.run(run_cleanly(main, (ValueError,)))
