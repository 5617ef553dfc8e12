"""Export a trained run to one file that classifies inputs of any size (needs only jax to run).

python -m experiments.export --workdir=RUN --out=model.fcnx [--class_names=a,b,...]
"""

from __future__ import annotations

import os
import sys

from absl import app, flags

WORKDIR = flags.DEFINE_string(
    "workdir", None, "Training run directory (config.json + checkpoints)."
)
OUT = flags.DEFINE_string("out", None, "Path of the exported file to write.")
CLASS_NAMES = flags.DEFINE_list(
    "class_names", None, "Comma-separated class names to store (default: the run's, if any)."
)
PLATFORMS = flags.DEFINE_list(
    "platforms", ["cpu", "cuda", "tpu"], "Platforms the artifact is lowered for."
)


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    if not WORKDIR.value or not OUT.value:
        raise app.UsageError("--workdir and --out are required")
    from fcn_jax.export import export_model, restore_run, run_class_names

    try:
        model = restore_run(WORKDIR.value)
        names = CLASS_NAMES.value or run_class_names(WORKDIR.value)
        path = export_model(model, OUT.value, class_names=names, platforms=PLATFORMS.value)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    size = os.path.getsize(path)
    print(
        f"exported {model.spec.name} ({model.spec.num_classes} classes, min size "
        f"{'x'.join(map(str, model.min_size))}) to {path} ({size / 1024:.1f} KiB)"
    )


if __name__ == "__main__":
    app.run(main)
