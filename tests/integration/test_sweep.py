"""A local sweep end to end (experiments.sweep): a 2x2 grid with one failing run, recorded
while the others finish; a rerun skips the finished runs. (The grids, launchers, reuse rule
and aggregation alone: test_grid.py, test_launch.py, test_rundir.py, test_sweep_results.py.)"""

import csv
import json
import os
import subprocess
import sys

import pytest
from commands import REPO
from tiny import TINY_TRAIN

from fcn_jax.data import load_dataset

TINY = TINY_TRAIN
# The seed model's minimum input is 8x8: only model=seed with fixed:6 fails.
GRID = {"model": ["seed", "allcnn"], "train_size": ["fixed:24", "fixed:6"]}
FAILING = "model=seed__train_size=fixed_6__seed0"


def run_sweep(workdir, tfds_dir, *extra):
    flags = [f"--{k}={v}" for k, v in {**TINY, "data_dir": tfds_dir}.items()]
    return subprocess.run(
        [sys.executable, "-m", "experiments.sweep", f"--workdir={workdir}", *flags, *extra],
        cwd=REPO,
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.fixture(scope="module")
def local_sweep(tfds_dir, tmp_path_factory):
    """A 2x2 grid, one seed, two runs at a time; model=seed with fixed:6 fails."""
    load_dataset(TINY["dataset"], tfds_dir)  # build once, before parallel runs read it
    workdir = tmp_path_factory.mktemp("sweep")
    (workdir / "grid.json").write_text(json.dumps(GRID))
    grid_flag = f"--grid={workdir / 'grid.json'}"
    first = run_sweep(workdir, tfds_dir, grid_flag, "--seeds=0", "--max_parallel=2")
    return workdir, first, grid_flag


def test_failed_run_is_recorded_and_others_finish(local_sweep):
    workdir, out, _ = local_sweep
    assert out.returncode == 1, out.stderr[-3000:]
    with open(workdir / "results.csv") as f:
        rows = {r["name"]: r for r in csv.DictReader(f)}
    assert len(rows) == 4
    assert rows[FAILING]["status"] == "failed"
    assert "minimum size" in rows[FAILING]["error"]
    assert "minimum size" in (workdir / "runs" / FAILING / "error.txt").read_text()
    finished = [n for n, r in rows.items() if r["status"] == "finished"]
    assert len(finished) == 3
    for name in finished:
        summary = json.load(open(workdir / "runs" / name / "summary.json"))
        assert float(rows[name]["test_accuracy"]) == summary["test_accuracy"]
        assert float(rows[name]["acc_28x16"]) == summary["eval_accuracy"]["28x16"]
        assert rows[name]["model"] == summary["model"]
        assert rows[name]["seed"] == "0"
    assert f"FAILED {FAILING}" in out.stdout
    assert "| seed | fixed:6 | 0/1 |" in out.stdout  # the summary table
    assert os.path.getsize(workdir / "results.png") > 0


def test_rerun_skips_finished_runs(local_sweep, tfds_dir):
    workdir, _, grid_flag = local_sweep
    summaries = sorted((workdir / "runs").glob("*/summary.json"))
    mtimes = [os.path.getmtime(p) for p in summaries]
    again = run_sweep(workdir, tfds_dir, grid_flag, "--seeds=0")
    assert again.returncode == 1  # the failing run is retried and fails again
    assert again.stdout.count("skip ") == 3
    assert "[1/1] start " + FAILING in again.stdout
    assert [os.path.getmtime(p) for p in summaries] == mtimes
    only = run_sweep(workdir, tfds_dir, "--aggregate_only")
    assert only.returncode == 1 and "1 failed, 3 finished" in only.stdout
