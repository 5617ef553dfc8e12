"""Launchers (fcn_jax.runs.launch, sweep.run_local): one accelerator per local run, the Slurm
array script (a finished task skipped, a failed one recorded) and its submission."""

import json
import os
import stat
import subprocess
import sys

from commands import REPO

from fcn_jax.runs import grid as grids
from fcn_jax.runs import launch, sweep

TRAIN = [sys.executable, "-m", "experiments.train"]
GRID = {"model": ["seed", "allcnn"], "train_size": ["fixed:24", "fixed:6"]}


def test_one_accelerator_per_run():
    assert launch.device_env("cpu", 1) == {}
    assert launch.device_env("gpu", 1, environ={}) == {"CUDA_VISIBLE_DEVICES": "1"}
    # Already restricted to devices 4,6: the second run gets physical device 6.
    assert launch.device_env("gpu", 1, environ={"CUDA_VISIBLE_DEVICES": "4,6"}) == {
        "CUDA_VISIBLE_DEVICES": "6"
    }
    assert launch.device_env("tpu", 2)["TPU_VISIBLE_CHIPS"] == "2"


def test_local_launcher_gives_each_run_one_accelerator(tmp_path, monkeypatch):
    """Two (pretend) GPUs, four runs, --max_parallel=4: two at a time, one device each."""
    fake = tmp_path / "fake_python"
    fake.write_text(
        "#!/bin/sh\n"
        'for a in "$@"; do case "$a" in --workdir=*) d="${a#--workdir=}";; esac; done\n'
        'echo "{\\"device\\": \\"$CUDA_VISIBLE_DEVICES\\"}" > "$d/summary.json"\n'
        "sleep 0.3\n"
    )
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setattr(launch, "probe_accelerators", lambda python: ("gpu", 2))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    runs = grids.plan_runs({"steps": [1, 2, 3, 4]}, [0], {})
    lines = []
    status = sweep.run_local(
        runs, str(tmp_path), command=[str(fake)], cwd=REPO, max_parallel=4, log=lines.append
    )
    assert set(status.values()) == {"finished"}
    assert "2 gpu device(s): at most 2 run(s) at once" in lines
    devices = [json.load(open(tmp_path / "runs" / r.name / "summary.json")) for r in runs]
    assert {d["device"] for d in devices} == {"0", "1"}


def test_slurm_array_script(tmp_path, monkeypatch):
    runs = grids.plan_runs(GRID, [0, 1], {"steps": 6, "eval_sizes": "24,28x16"})
    path = launch.write_slurm(
        runs, str(tmp_path), command=TRAIN, cwd=REPO, directives=["--gres=gpu:1"]
    )
    script = open(path).read()
    assert "#SBATCH --array=0-7" in script and "#SBATCH --gres=gpu:1" in script
    subprocess.run(["bash", "-n", path], check=True)
    assert len(open(tmp_path / "runs.txt").read().splitlines()) == 8

    # Task 0 is finished: skipped. Task 1 fails (PYTHON=false): error.txt, non-zero exit.
    (tmp_path / "runs" / runs[0].name).mkdir(parents=True)
    (tmp_path / "runs" / runs[0].name / "summary.json").write_text("{}")
    env = {**os.environ, "PYTHON": "false"}
    done = subprocess.run(
        ["bash", path], env={**env, "SLURM_ARRAY_TASK_ID": "0"}, capture_output=True, text=True
    )
    assert done.returncode == 0 and f"skip {runs[0].name}" in done.stdout
    failed = subprocess.run(
        ["bash", path], env={**env, "SLURM_ARRAY_TASK_ID": "1"}, capture_output=True, text=True
    )
    assert failed.returncode != 0
    assert "exit status 1" in (tmp_path / "runs" / runs[1].name / "error.txt").read_text()

    # Submitted when sbatch is on PATH.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "sbatch"
    fake.write_text(f'#!/bin/sh\necho "$@" > {tmp_path}/submitted\necho Submitted batch job 7\n')
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    assert launch.submit_slurm(path, log=lambda _: None)
    assert (tmp_path / "submitted").read_text().strip() == path
