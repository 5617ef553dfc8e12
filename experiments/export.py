"""Export a trained run to one file that classifies inputs of any size (needs only jax to run).

python -m experiments.export --workdir=RUN [--class_names=a,b,...]   # RUN/model.fcnx
python -m experiments.export --workdir=RUN --with_sizes               # RUN/model-padded.fcnx
python -m experiments.export --workdir=RUN --out=PATH.fcnx

The default file is called as ``f(x)``; ``--with_sizes`` writes ``f(x, sizes)`` for batches of
examples of different sizes zero-padded to one array (see ``fcn_jax/export.py``). Without --out
the file goes into the run directory.
"""

from __future__ import annotations

import os

from absl import app, flags

from experiments.flags import run_cleanly

WORKDIR = flags.DEFINE_string(
    "workdir", None, "Training run directory (config.json + checkpoints)."
)
OUT = flags.DEFINE_string(
    "out",
    None,
    "Path of the exported file to write (default: WORKDIR/model.fcnx, with --with_sizes "
    "WORKDIR/model-padded.fcnx).",
)
CLASS_NAMES = flags.DEFINE_list(
    "class_names", None, "Comma-separated class names to store (default: the run's, if any)."
)
PLATFORMS = flags.DEFINE_list(
    "platforms", ["cpu", "cuda", "tpu"], "Platforms the artifact is lowered for."
)
WITH_SIZES = flags.DEFINE_boolean(
    "with_sizes",
    False,
    "Export f(x, sizes) for zero-padded batches (sizes: (B, D) int32 true extents) instead of "
    "f(x); each row then gets the result of its example run alone.",
)


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    if not WORKDIR.value:
        raise app.UsageError("--workdir is required: the training run to export")
    from fcn_jax import export
    from fcn_jax.checkpoint import restore_run, run_class_names
    from fcn_jax.sizes import format_size

    model = restore_run(WORKDIR.value)
    names = CLASS_NAMES.value or run_class_names(WORKDIR.value)
    out = OUT.value or export.default_path(WORKDIR.value, WITH_SIZES.value)
    path = export.export_model(
        model, out, class_names=names, platforms=PLATFORMS.value, with_sizes=WITH_SIZES.value
    )
    size = os.path.getsize(path)
    print(
        f"exported {model.spec.name} ({model.spec.num_classes} classes, min size "
        f"{format_size(model.min_size)}) to {path} ({size / 1024:.1f} KiB), called as "
        + export.call_signature(export.read_artifact(path)[0])
    )


if __name__ == "__main__":
    app.run(run_cleanly(main, (ValueError,)))
