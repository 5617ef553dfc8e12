"""Compare training-size policies (fixed, mixed_step, mixed_example, native) on one shared grid
of test sizes, with the same number of training examples per policy.

    python -m experiments.compare --workdir=runs/compare
    python -m experiments.compare --workdir=runs/compare3 --seeds=3 --steps=3000
    python -m experiments.compare --workdir=runs/1d --dataset=mnist1d --seeds=3
    python -m experiments.compare --workdir=runs/mnist --dataset=mnist --policies=fixed,mixed_step

Every flag of experiments.train passes through (except --train_size, which each policy sets);
the defaults differ where a comparison must stay short (about 5 minutes on a 2-core CPU).
Writes WORKDIR/report.md, compare.json, accuracy_vs_size.png and heatmaps.png; each run is an
ordinary training workdir WORKDIR/runs/<policy>-seed<k>/, reused when already finished with
the same results-relevant flags. The dataset is opened once, for every run.
"""

from __future__ import annotations

import sys

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
from fcn_jax.config import TrainConfig, field_help, flag_defaults
from fcn_jax.runs.compare import POLICIES, CompareConfig, comparison_defaults, run_comparison
from fcn_jax.runs.rundir import with_shared_cache
from fcn_jax.train import NonFiniteLossError

DEFAULTS = comparison_defaults()
define_flags(TrainConfig, field_help(DEFAULTS), flag_defaults(DEFAULTS))
define_cluster_flags()
flags.DEFINE_string("workdir", "runs/compare", "comparison directory: runs, report and plots")
flags.DEFINE_integer("seeds", 1, "runs per policy, with seeds --seed, --seed+1, ...")
flags.DEFINE_list(
    "policies",
    list(POLICIES),
    f"policies to compare, among {','.join(POLICIES)} (native is dropped for data of one size)",
)
flags.DEFINE_string(
    "fixed_size", None, "fixed:<fixed_size> (default: the data's own size, else 28 or 40)"
)
flags.DEFINE_string(
    "mixed_size",
    None,
    "mixed_step:<mixed_size> (default: a grid of at most 4 values per axis (9 in 1-D) through "
    "the fixed size, covering every test size)",
)
flags.DEFINE_string(
    "example_size",
    None,
    "mixed_example:<example_size> (default: LO-HI:log, log-uniform from the smallest to the "
    "largest test size, the fixed size included)",
)

ERRORS = (ValueError, CheckpointError, NonFiniteLossError, FileNotFoundError)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    f = flags.FLAGS
    train = config_from_flags(TrainConfig)
    setup_process_from_flags(with_shared_cache(train, f.workdir))  # before any JAX call
    config = CompareConfig(
        train=train,
        seeds=f.seeds,
        policies=tuple(f.policies),
        fixed_size=f.fixed_size,
        mixed_size=f.mixed_size,
        example_size=f.example_size,
    )
    command = ["python", "-m", "experiments.compare", *sys.argv[1:]]
    results = run_comparison(config, f.workdir, command=command)
    if jax.process_index() == 0:  # one process speaks for a multi-host run
        print("\n".join(f"- {line}" for line in results["findings"]))
        print(f"report: {f.workdir}/report.md")


if __name__ == "__main__":
    app.run(run_cleanly(main, ERRORS, supervised=True))
