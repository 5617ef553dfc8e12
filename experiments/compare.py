"""Compare the fixed, mixed and native training-size policies on one shared grid of test sizes.

    python -m experiments.compare --workdir=runs/compare
    python -m experiments.compare --workdir=runs/compare3 --seeds=3 --steps=1500
    python -m experiments.compare --workdir=runs/mnist --dataset=mnist --policies=fixed,mixed

Every flag of experiments.train passes through (except --train_size, which each policy sets);
the defaults differ where a comparison must stay short (about 5 minutes on a 2-core CPU).
Writes WORKDIR/report.md, compare.json, accuracy_vs_size.png and heatmaps.png; each run is an
ordinary training workdir WORKDIR/runs/<policy>-seed<k>/, reused when already finished.
"""

from __future__ import annotations

import sys

from absl import app, flags

from experiments.flags import config_from_flags, define_flags, run_cleanly
from fcn_jax.checkpoint import CheckpointError
from fcn_jax.compare import POLICIES, TRAIN_DEFAULTS, CompareConfig, run_comparison
from fcn_jax.config import TrainConfig, field_help
from fcn_jax.train import NonFiniteLossError

define_flags(TrainConfig, field_help(), overrides=TRAIN_DEFAULTS)
flags.DEFINE_string("workdir", "runs/compare", "comparison directory: runs, report and plots")
flags.DEFINE_integer("seeds", 1, "runs per policy, with seeds --seed, --seed+1, ...")
flags.DEFINE_list("policies", list(POLICIES), "policies to compare, among fixed,mixed,native")
flags.DEFINE_string("fixed_size", "28", "size of the fixed policy: fixed:<fixed_size>")
flags.DEFINE_string("mixed_size", "16-56:20", "range of the mixed policy: mixed:<mixed_size>")

ERRORS = (ValueError, CheckpointError, NonFiniteLossError, FileNotFoundError)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    f = flags.FLAGS
    config = CompareConfig(
        train=config_from_flags(TrainConfig),
        seeds=f.seeds,
        policies=tuple(f.policies),
        fixed_size=f.fixed_size,
        mixed_size=f.mixed_size,
    )
    command = ["python", "-m", "experiments.compare", *sys.argv[1:]]
    results = run_comparison(config, f.workdir, command=command)
    print("\n".join(f"- {line}" for line in results["findings"]))
    print(f"report: {f.workdir}/report.md")


if __name__ == "__main__":
    app.run(run_cleanly(main, ERRORS))
