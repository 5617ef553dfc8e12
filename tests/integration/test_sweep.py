"""Sweeps: grid parsing and errors, run planning, a local 2x2 sweep with one failing run
(recorded, others finish, rerun skips them), the Slurm array script, aggregation."""

import csv
import json
import os
import stat
import subprocess
import sys

import pytest
from commands import REPO
from tiny import TINY_TRAIN

from fcn_jax.data import load_dataset, parse_size_policy
from fcn_jax.outputs import write_json
from fcn_jax.runs import grid as grids
from fcn_jax.runs import launch, sweep, sweep_results
from fcn_jax.runs.rundir import RunDir, run_name

TRAIN = [sys.executable, "-m", "experiments.train"]
TINY = TINY_TRAIN
# The seed model's minimum input is 8x8: only model=seed with fixed:6 fails.
GRID = {"model": ["seed", "allcnn"], "train_size": ["fixed:24", "fixed:6"]}
FAILING = "model=seed__train_size=fixed_6__seed0"


# --- grids and plans (no training) -----------------------------------------------------------


def test_set_and_grid_files(tmp_path):
    grid = grids.parse_set(
        ["model=seed,allcnn", "learning_rate=1e-3,3e-3", 'eval_sizes=["24,28x16", "grid:16,28"]']
    )
    assert grid == {
        "model": ["seed", "allcnn"],
        "learning_rate": [1e-3, 3e-3],
        "eval_sizes": ["24,28x16", "grid:16,28"],
    }
    assert grids.parse_set(["precompile=true,false", "norm=none,batch"]) == {
        "precompile": [True, False],
        "norm": [None, "batch"],
    }
    (tmp_path / "g.json").write_text(json.dumps({"steps": [5, 10], "width": 0.5}))
    assert grids.load_grid_file(str(tmp_path / "g.json")) == {"steps": [5, 10], "width": [0.5]}
    (tmp_path / "g.py").write_text("GRID = {'model': ['seed', 'nin']}\n")
    assert grids.load_grid_file(str(tmp_path / "g.py")) == {"model": ["seed", "nin"]}


@pytest.mark.parametrize(
    "content, match",
    [
        ('{"lr": [1]}', r"g.json: key 'lr': not a training flag"),
        ('{"steps": ["ten"]}', r"g.json: key 'steps': 'ten' is not an int"),
        ('{"steps": []}', r"g.json: key 'steps': empty list"),
        ('{"seed": [0, 1]}', r"g.json: key 'seed': .*--seeds"),
        ('{"eval_mode": [null]}', r"g.json: key 'eval_mode': None is not allowed"),
        ('["steps"]', r"g.json: expected a mapping"),
        ('{"steps": [1,', r"g.json: not valid JSON"),
    ],
)
def test_bad_grid_files_name_file_and_key(tmp_path, content, match):
    (tmp_path / "g.json").write_text(content)
    with pytest.raises(ValueError, match=match):
        grids.load_grid_file(str(tmp_path / "g.json"))


def test_bad_values_are_caught_before_running():
    with pytest.raises(ValueError, match=r"--set: key 'learning_rate': 'fast' is not a float"):
        grids.parse_set(["learning_rate=1e-3,fast"])
    with pytest.raises(ValueError, match=r"grid point model=bogus: --model='bogus'"):
        grids.plan_runs({"model": ["seed", "bogus"]}, [0], {})
    with pytest.raises(ValueError, match=r"grid point train_size=fixd:28: .*bad size policy"):
        grids.plan_runs({"train_size": ["fixd:28"]}, [0], {})
    with pytest.raises(ValueError, match="--steps given both"):
        grids.plan_runs({"steps": [1]}, [0], {"steps": 2})
    with pytest.raises(ValueError, match="--seeds"):
        grids.plan_runs({"steps": [1]}, [0], {"seed": 3})


def test_plan_names_and_flags():
    runs = grids.plan_runs(GRID, [0, 1], {"width": 0.25, "precompile": True})
    assert len(runs) == 8 and len({r.name for r in runs}) == 8
    first = runs[0]
    assert first.name == "model=seed__train_size=fixed_24__seed0"
    assert first.params == {"model": "seed", "train_size": "fixed:24"}
    assert first.flags == (
        "--width=0.25",
        "--precompile",
        "--model=seed",
        "--train_size=fixed:24",
        "--seed=0",
    )
    long = run_name(grids.point_label({"eval_sizes": ",".join(map(str, range(100)))}), 0, "__")
    assert len(long) <= 120


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


# --- the reuse rule --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "recorded, wanted",
    [
        ("fixed:28", "fixed:28x28"),
        ("fixed:28x28", "fixed:28"),
        ("mixed:16-24:8", "mixed_step:16-24"),
        ("mixed_step:16x16-24x24:8", "mixed:16-24"),
    ],
)
def test_an_equivalent_spelling_is_reused(tmp_path, recorded, wanted):
    """A finished run recorded with one spelling of its size policy (and of its test sizes) is
    reused by a sweep that spells them another way; other sizes are a difference."""
    (run,) = grids.plan_runs({"train_size": [wanted]}, [0], {"eval_sizes": "28,24x24"})
    rundir = RunDir.of(str(tmp_path), run.name)
    config = {**run.config.resolved().to_dict(), "train_size": recorded, "eval_sizes": "28x28,24"}
    facts = {"spatial_dims": 2, "train_examples": 100}
    write_json(rundir.config_path, {"config": config, "dataset": facts})
    write_json(rundir.summary_path, {"steps": 6})
    assert rundir.reusable(run.config)
    write_json(
        rundir.config_path, {"config": {**config, "train_size": "fixed:24"}, "dataset": facts}
    )
    assert rundir.differences(run.config) == {
        "train_size": ("fixed:24x24", parse_size_policy(wanted, 2).spec())
    }


def test_one_reuse_rule(tmp_path, monkeypatch):
    """A finished run is reused when its recorded config equals the wanted one on every field
    that affects results; else it goes back to training (here: a fake re-evaluation, which
    keeps the training measurements), or is refused up front for Slurm."""
    runs = grids.plan_runs({"eval_sizes": ["24", "28"]}, [0], {"steps": 6})
    same, other = (RunDir.of(str(tmp_path), r.name) for r in runs)
    for run, rundir in zip(runs, (same, other)):
        wanted = run.config.resolved().to_dict()
        assert not rundir.reusable(run.config)  # nothing there
        write_json(rundir.config_path, {"config": {**wanted, "log_every": 1, "data_dir": "/x"}})
        assert not rundir.reusable(run.config)  # started, not finished
        write_json(rundir.summary_path, {"steps": 6, "train_compiles": 3})
        assert rundir.reusable(run.config)  # only bookkeeping fields differ
    recorded = {**runs[1].config.resolved().to_dict(), "eval_sizes": "24,28"}
    write_json(other.config_path, {"config": recorded})
    assert other.differences(runs[1].config) == {"eval_sizes": ("24,28", "28")}
    with pytest.raises(ValueError, match=r"--eval_sizes='24,28', this sweep's is '28'"):
        sweep.write_slurm(runs, str(tmp_path), command=TRAIN, cwd=REPO)

    fake = tmp_path / "fake_python"
    fake.write_text(
        "#!/bin/sh\n"
        'for a in "$@"; do case "$a" in --workdir=*) d="${a#--workdir=}";; esac; done\n'
        """echo '{"steps": 6, "resumed_from_step": 6, "train_compiles": 0, "test_accuracy": 0.5}'"""
        ' > "$d/summary.json"\n'
    )
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setattr(launch, "probe_accelerators", lambda python: ("cpu", 1))
    lines = []
    status = sweep.run_local(runs, str(tmp_path), command=[str(fake)], cwd=REPO, log=lines.append)
    assert status == {runs[0].name: "skipped", runs[1].name: "finished"}
    assert same.summary() == {"steps": 6, "train_compiles": 3}
    assert other.summary()["test_accuracy"] == 0.5 and other.summary()["train_compiles"] == 3


# --- a local sweep ---------------------------------------------------------------------------


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


# --- Slurm -----------------------------------------------------------------------------------


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


# --- aggregation -----------------------------------------------------------------------------


def test_aggregate_mean_std_over_seeds(tmp_path):
    runs = grids.plan_runs({"learning_rate": [1e-3, 3e-3]}, [0, 1], {})
    sweep.prepare(str(tmp_path), runs, {"learning_rate": [1e-3, 3e-3]}, [0, 1], {}, None)
    accs = [0.4, 0.6, 0.9, None]  # the last run never finished
    for run, acc in zip(runs, accs):
        if acc is not None:
            summary = {"test_accuracy": acc, "eval_accuracy": {"28x16": acc / 2}, "steps": 6}
            write_json(str(tmp_path / "runs" / run.name / "summary.json"), summary)
    lines = []
    rows = sweep_results.aggregate(str(tmp_path), log=lines.append)
    assert [r["status"] for r in rows] == ["finished", "finished", "finished", "pending"]
    table = lines[0]
    assert "| 0.001 | 2/2 | 0.500 ± 0.141 | 0.250 ± 0.071 | 0.250 ± 0.071 |" in table
    assert "| 0.003 | 1/2 | 0.900 |" in table
    with open(tmp_path / "results.csv") as f:
        assert [r["status"] for r in csv.DictReader(f)][-1] == "pending"
