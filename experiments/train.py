"""Train one FCN and evaluate it over a grid of test sizes.

    python -m experiments.train --workdir=runs/seed
    python -m experiments.train --workdir=runs/mixed --train_size=mixed_example:16-64:log
    python -m experiments.train --workdir=runs/1d --dataset=mnist1d/variable --eval_sizes=32,64
    python -m experiments.train --workdir=runs/signals --dataset=mnist1d --recipe=signals

Running again with the same --workdir resumes from the last checkpoint.
"""

from __future__ import annotations

import json

import jax
from absl import app, flags

from experiments.flags import (
    config_from_flags,
    define_cluster_flags,
    define_flags,
    run_cleanly,
    setup_process_from_flags,
)
from fcn_jax.checkpoint import CheckpointError
from fcn_jax.config import TrainConfig, field_help
from fcn_jax.run import train_and_evaluate
from fcn_jax.train import NonFiniteLossError

define_flags(TrainConfig, field_help())
define_cluster_flags()
flags.DEFINE_string("workdir", None, "run directory: checkpoints, metrics and results go here")
flags.mark_flag_as_required("workdir")

ERRORS = (ValueError, CheckpointError, NonFiniteLossError, FileNotFoundError)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    config = config_from_flags(TrainConfig).resolved()
    setup_process_from_flags(config)
    summary = train_and_evaluate(config, flags.FLAGS.workdir)
    keys = ("test_accuracy", "train_compiles", "eval_compiles", "wall_time_s", "final_loss")
    if jax.process_index() == 0:  # one process speaks for a multi-host run
        print(json.dumps({k: summary[k] for k in keys}, indent=1))


if __name__ == "__main__":
    app.run(run_cleanly(main, ERRORS, supervised=True))
