"""A real Slurm: a single-node cluster on 127.0.0.1 (``scripts/slurm_localhost.sh``) runs a
sweep's array (``experiments.sweep --launcher=slurm --distributed``, then ``--aggregate_only``)
whose every run is a 2-task ``srun`` training: its processes find each other through JAX's
own Slurm detection.

CI installs Slurm (``scripts/slurm_localhost.sh install``) and sets ``FCN_SLURM=required``:
there a cluster that cannot start fails this test with the reason. Elsewhere, without Slurm
installed, it is skipped with the reason."""

import csv
import json
import os
import shutil
import subprocess
import sys
import time

import pytest
from commands import REPO, free_port
from tiny import TINY_TRAIN

from fcn_jax.data import load_dataset

SCRIPT = os.path.join(REPO, "scripts", "slurm_localhost.sh")
TINY = {**TINY_TRAIN, "buckets": "auto:2", "eval_sizes": "24", "recalibrate_bn": False}


@pytest.fixture
def cluster(tmp_path):
    """The environment of a started single-node cluster (SLURM_CONF), stopped afterwards."""
    if shutil.which("slurmctld") is None:
        reason = "slurmctld not found (bash scripts/slurm_localhost.sh install)"
        if os.environ.get("FCN_SLURM") == "required":
            pytest.fail(reason)
        pytest.skip(reason)
    directory = tmp_path / "slurm"
    ports = {"SLURMCTLD_PORT": str(free_port()), "SLURMD_PORT": str(free_port())}
    env = {**os.environ, **ports, "JAX_PLATFORMS": "cpu"}
    try:
        start = subprocess.run(
            ["bash", SCRIPT, "start", str(directory)], env=env, capture_output=True, text=True,
            timeout=60,
        )  # fmt: skip
        assert start.returncode == 0, f"Slurm did not start: {start.stderr.strip()}"
        yield {**env, "SLURM_CONF": start.stdout.strip()}
    finally:
        subprocess.run(["bash", SCRIPT, "stop", str(directory)], env=env, timeout=60)


def flags(data_dir, **kw) -> list[str]:
    return [f"--{k}={v}" for k, v in {**TINY, "data_dir": data_dir, **kw}.items()]


def test_sweep_array_of_srun_trainings(cluster, tfds_dir, tmp_path):
    load_dataset(TINY["dataset"], tfds_dir)  # built once, before the jobs read it
    sweep_dir = tmp_path / "sweep"
    python = [sys.executable, "-m"]
    run = dict(cwd=REPO, env=cluster, capture_output=True, text=True)
    sweep = [*python, "experiments.sweep", f"--workdir={sweep_dir}", *flags(tfds_dir)]
    # Each run of the array is a 2-task step, `srun python -m experiments.train --distributed`
    # over the job's 2 tasks: JAX's distributed runtime finds its peer from Slurm's variables.
    multi = ["--distributed", "--sbatch=--ntasks=2", "--sbatch=--overcommit"]
    submitted = subprocess.run(
        [*sweep, "--launcher=slurm", "--set=learning_rate=0.001,0.003", *multi], timeout=120, **run
    )
    assert submitted.returncode == 0, submitted.stderr[-2000:]
    assert "Submitted batch job" in submitted.stdout
    job = submitted.stdout.split("Submitted batch job")[1].split()[0]

    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        queue = subprocess.run(["squeue", "-h", "-j", job], timeout=30, **run)
        if not queue.stdout.strip():
            break
        time.sleep(1)
    else:
        pytest.fail(f"job {job} still queued or running after 300 s")
    aggregated = subprocess.run([*sweep, "--aggregate_only"], timeout=120, **run)
    assert aggregated.returncode == 0, aggregated.stderr[-2000:]
    rows = list(csv.DictReader(open(sweep_dir / "results.csv")))
    assert sorted(float(r["learning_rate"]) for r in rows) == [0.001, 0.003]
    assert all(r["status"] == "finished" for r in rows), rows
    for run_dir in (sweep_dir / "runs").iterdir():
        if run_dir.is_dir():
            summary = json.load(open(run_dir / "summary.json"))
            assert summary["devices"] == 2 and summary["steps"] == TINY["steps"]
            kinds = [json.loads(line)["kind"] for line in open(run_dir / "metrics.jsonl")]
            assert kinds.count("test") == 1  # one writer
    assert "srun " in (sweep_dir / "sweep.sbatch").read_text()
