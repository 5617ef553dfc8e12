"""The time-series suite: ``--recipe=series`` (and the published FCN's architecture, and for
variable-length data both again on series resampled to the longest) on UCR/UEA datasets ×
seeds, beside the published results.

    python -m experiments.series --workdir=runs/series --seeds=5
    python -m experiments.series --workdir=runs/series_cv --cv --seeds=4   # tuning
    python -m experiments.series --workdir=runs/gp --datasets=GunPoint --seeds=1 --steps=300

The datasets are read with ``--dataset=ucr:NAME`` (an installed aeon's data files: ``pip install
--no-deps aeon==1.6.0``). Every other experiments.train flag is a base flag given to all runs.
Runs go in parallel (``--max_parallel``), a finished run is reused and an interrupted one
resumes, so rerunning the command finishes an interrupted suite. Writes WORKDIR/report.md,
series.json and series.png. Tuning never touches the archive's test split: ``--validation``
trains on three quarters of each train split and tests on the rest (stratified, fixed seed);
``--cv`` is 4-fold cross-validation over it (seed k tests on fold k % 4, so ``--seeds=4`` tests
every training series once, and fold 0 is ``--validation``'s split).
"""

from __future__ import annotations

import os
import sys

from absl import app, flags

from experiments.flags import PROJECT_ROOT, base_flags, define_flags, run_cleanly
from fcn_jax.config import TrainConfig, field_help
from fcn_jax.data import DataError
from fcn_jax.runs import series as suite
from fcn_jax.runs.rundir import with_shared_cache
from fcn_jax.runs.sweep import run_local

define_flags(TrainConfig, field_help())
flags.DEFINE_string("workdir", "runs/series", "suite directory: runs, report.md, series.json")
flags.DEFINE_list("datasets", list(suite.DATASETS), "UCR/UEA dataset names")
flags.DEFINE_integer("seeds", 5, "seeds per dataset and variant (0 .. N-1)")
flags.DEFINE_list("variants", list(suite.VARIANTS), f"of {list(suite.VARIANTS)}")
flags.DEFINE_boolean("validation", False, "tune: test on a quarter of each train split")
flags.DEFINE_boolean(
    "cv",
    False,
    f"tune by {suite.FOLDS}-fold cross-validation over each train split: seed k tests on fold "
    f"k % {suite.FOLDS}",
)
flags.DEFINE_integer("max_parallel", 2, "runs at once")
flags.DEFINE_boolean("report_only", False, "only write the report of the runs already done")
flags.DEFINE_string("python", sys.executable, "Python interpreter of the runs")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    f = flags.FLAGS
    if unknown := sorted(set(f.variants) - set(suite.VARIANTS)):
        raise ValueError(f"--variants: unknown {unknown}; expected some of {list(suite.VARIANTS)}")
    if f.seeds < 1:
        raise ValueError(f"--seeds={f.seeds}: expected a positive number of seeds")
    if f.validation and f.cv:
        raise ValueError("--validation and --cv: expected one of them (--cv covers fold 0 too)")
    split = "cv" if f.cv else "validation" if f.validation else "test"
    base = base_flags(TrainConfig)
    for key in ("dataset", "seed", "train_size"):
        if key in base:
            raise ValueError(f"--{key}: the suite sets it per run (--datasets, --seeds, variants)")
    entries = suite.describe(f.datasets, split=split, data_dir=base.get("data_dir"))
    runs = suite.plan(entries, f.variants, f.seeds, with_shared_cache(base, f.workdir))
    if not f.report_only:
        print(f"{len(runs)} runs in {f.workdir}/runs")
        command = [f.python, "-m", "experiments.train"]
        status = run_local(
            runs, f.workdir, command=command, cwd=PROJECT_ROOT, max_parallel=f.max_parallel
        )
    results = suite.collect(os.path.abspath(f.workdir), entries, runs)
    command = ["-m", "experiments.series", *sys.argv[1:]]
    print(suite.write_outputs(f.workdir, results, split, command))
    return 1 if not f.report_only and "failed" in status.values() else 0


if __name__ == "__main__":
    app.run(run_cleanly(main, (ValueError, DataError, FileNotFoundError)))
