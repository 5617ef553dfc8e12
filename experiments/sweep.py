"""Sweep training flags × seeds, run locally or as a Slurm array, and aggregate the results.

    python -m experiments.sweep --workdir=runs/sweep --grid=grid.json --seeds=0,1
    python -m experiments.sweep --workdir=runs/lr --set=model=seed,allcnn \
        --set=learning_rate=1e-3,3e-3 --steps=500
    python -m experiments.sweep --workdir=runs/sweep --grid=grid.py --launcher=slurm \
        --sbatch=--gres=gpu:1 --sbatch=--time=02:00:00
    python -m experiments.sweep --workdir=runs/sweep --aggregate_only
    python -m experiments.sweep --workdir=runs/lr2 --set=learning_rate=1e-3,3e-3 --distributed \
        --launcher=slurm --sbatch=--ntasks=2      # every run: srun of 2 processes

A grid file is JSON ({"model": ["seed", "allcnn"], "train_size": ["fixed:28",
"mixed_step:16-56:20"]}) or Python defining GRID = {...}. Every other experiments.train flag is
a base flag given to all runs. Runs live in WORKDIR/runs/<name>/; a finished one is reused when
it was run with the same results-relevant flags (bookkeeping such as --log_every may differ),
else re-evaluated or refused by training (by this command, for Slurm); a failed one leaves
error.txt and makes the exit status 1. Results: WORKDIR/results.csv and results.png. With
--distributed every run is several processes: srun over each array task's job
(--launcher=slurm), or, locally, the same sweep command on every host with the explicit cluster
flags (run K coordinates on PORT + 1 + K; process 0 writes the sweep's files).
"""

from __future__ import annotations

import os
import shlex
import sys

from absl import app, flags

from experiments.flags import (
    PROJECT_ROOT,
    base_flags,
    config_from_flags,
    define_cluster_flags,
    define_flags,
    run_cleanly,
)
from fcn_jax.config import TrainConfig, field_help
from fcn_jax.process import Cluster
from fcn_jax.runs import grid as grids
from fcn_jax.runs import launch, sweep, sweep_results
from fcn_jax.runs.rundir import with_shared_cache
from fcn_jax.workdir_lock import WorkdirLock

define_flags(TrainConfig, field_help())
define_cluster_flags()
flags.DEFINE_string("workdir", "runs/sweep", "sweep directory: runs, results.csv, results.png")
flags.DEFINE_string("grid", None, "grid file: JSON object or Python file defining GRID")
flags.DEFINE_multi_string("set", [], "a grid axis KEY=V1,V2 (repeatable; JSON list if commas)")
flags.DEFINE_list("seeds", ["0"], "seeds of every grid point")
flags.DEFINE_enum("launcher", "local", ["local", "slurm"], "run locally or write a Slurm array")
flags.DEFINE_integer("max_parallel", 2, "local: runs at once (at most one per accelerator)")
flags.DEFINE_boolean("aggregate_only", False, "only aggregate the runs already in --workdir")
flags.DEFINE_multi_string("sbatch", [], "slurm: an extra #SBATCH directive, e.g. --gres=gpu:1")
flags.DEFINE_string("python", sys.executable, "Python interpreter of the runs")

ERRORS = (ValueError, FileNotFoundError)


def sweep_cluster() -> Cluster | None:
    """The cluster every host runs a local ``--distributed`` sweep on (None: one host)."""
    f = flags.FLAGS
    cluster = config_from_flags(Cluster).validate(f.distributed)
    if not f.distributed or f.launcher == "slurm":
        return None
    if not cluster.explicit:
        raise ValueError(
            "--distributed with --launcher=local: give --coordinator_address, --num_processes "
            "and --process_id (every host runs this sweep; run K coordinates on PORT + 1 + K), "
            "or use --launcher=slurm with --sbatch=--ntasks=N"
        )
    return cluster


def submit(runs, launch_kw: dict) -> int:
    """Write the Slurm array script and submit it where sbatch is found; with --distributed
    each run is ``srun`` of the job's tasks."""
    f = flags.FLAGS
    workdir = shlex.quote(os.path.abspath(f.workdir))
    then = f"python -m experiments.sweep --workdir={workdir} --aggregate_only"
    kw = dict(directives=f.sbatch, then=then, srun=f.distributed, **launch_kw)
    path = sweep.write_slurm(runs, f.workdir, **kw)
    print(f"wrote {path} (one array task per run)")
    if launch.submit_slurm(path):
        print(
            f"aggregate later: python -m experiments.sweep --workdir={f.workdir} "
            + "--aggregate_only"
        )
    return 0


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    f = flags.FLAGS
    cluster = sweep_cluster()
    writer = cluster is None or cluster.process_id == 0  # the sweep's files: process 0's
    # One sweep per workdir, held by process 0 (--aggregate_only may run beside it).
    with WorkdirLock(f.workdir, holder=writer and not f.aggregate_only) as lock:
        lock.acquire()
        return sweep_and_aggregate(cluster, writer, lock)


def sweep_and_aggregate(cluster, writer: bool, lock: WorkdirLock) -> int:
    """Plan, launch (or submit) and aggregate the sweep; the exit status."""
    f, busy = flags.FLAGS, False
    if not f.aggregate_only:
        files = [grids.load_grid_file(f.grid)] if f.grid else []
        grid = grids.merge_grids(*files, grids.parse_set(f.set))
        try:
            seeds = [int(s) for s in f.seeds]
        except ValueError:
            raise ValueError(f"--seeds={','.join(f.seeds)}: expected integers") from None
        base = base_flags(TrainConfig)
        if "compilation_cache_dir" not in grid:  # a grid of caches: each run its own
            base = with_shared_cache(base, f.workdir)
        runs = grids.plan_runs(grid, seeds, base)
        command = ["python", "-m", "experiments.sweep", *sys.argv[1:]]
        if writer:
            sweep.prepare(f.workdir, runs, grid, seeds, base, command)
            lock.acquire()  # a workdir made just now
            print(f"{len(runs)} runs in {f.workdir}/runs")
        launch_kw = dict(command=[f.python, "-m", "experiments.train"], cwd=PROJECT_ROOT)
        if f.launcher == "slurm":
            return submit(runs, launch_kw)
        status = sweep.run_local(
            runs, f.workdir, max_parallel=f.max_parallel, cluster=cluster, **launch_kw
        )
        if not writer:
            return 1 if "failed" in status.values() else 0
        busy = "busy" in status.values()  # a run another live one holds: not done
    rows = sweep_results.aggregate(f.workdir)
    return 1 if busy or any(r["status"] == "failed" for r in rows) else 0


if __name__ == "__main__":
    app.run(run_cleanly(main, ERRORS))  # not supervised: its runs are (they start JAX's runtime)
