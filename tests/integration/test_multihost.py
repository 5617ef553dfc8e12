"""Two real processes of JAX's distributed runtime on 127.0.0.1 (CPU, one device each):
train and compare with one writer, one-line errors for the cluster flags, a held workdir
refused at once, the one-line error printed last, and a lost process survived: the other exits
with one line naming it, and rerunning resumes to the same result."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from commands import REPO, cpu_devices, free_port, run_pythons
from tiny import TINY_TRAIN

from fcn_jax.checkpoint import restore_model
from fcn_jax.data import load_dataset
from fcn_jax.process import Cluster
from fcn_jax.workdir_lock import WorkdirLock

TIMEOUT_S = 10  # --distributed_timeout_s of every run here
TINY = {**TINY_TRAIN, "buckets": "auto:2", "eval_examples": 16, "eval_batch_size": 16}


def on_two(module: str, flags: list[str]) -> list[tuple[str, ...]]:
    """The command of each of 2 processes: ``python -m MODULE FLAGS`` plus the cluster flags."""
    port = free_port()
    return [
        (
            "-m",
            module,
            *flags,
            "--distributed",
            f"--coordinator_address=127.0.0.1:{port}",
            "--num_processes=2",
            f"--process_id={i}",
            f"--distributed_timeout_s={TIMEOUT_S}",
        )
        for i in (0, 1)
    ]


def train_flags(tfds_dir, workdir, **kw) -> list[str]:
    """The flags of a tiny run (a value of None leaves its flag out)."""
    values = {**TINY, "data_dir": tfds_dir, "eval_sizes": "24", **kw}
    flags = (f"--{k}={v}" for k, v in values.items() if v is not None)
    return [f"--workdir={workdir}", *flags]


@pytest.fixture(scope="module")
def data_dir(tfds_dir):
    load_dataset(TINY["dataset"], tfds_dir)  # built once, before two processes read it
    return tfds_dir


def test_compare_on_two_processes_has_one_writer(data_dir, tmp_path):
    flags = train_flags(data_dir, tmp_path, model="seed", recalibrate_bn=False)
    flags += ["--policies=fixed", "--fixed_size=24"]
    first, second = run_pythons(*on_two("experiments.compare", flags), timeout=300)
    assert first.returncode == 0 and second.returncode == 0, second.stderr[-3000:]
    assert "report:" in first.stdout and "report:" not in second.stdout  # process 0 speaks
    assert "[process 1]" in second.stderr  # the other's logs say where they come from
    results = json.load(open(tmp_path / "compare.json"))
    assert len(results["machine"]["devices"]) == 2
    run = tmp_path / "runs" / "fixed-seed0"
    summary = json.load(open(run / "summary.json"))
    assert summary["devices"] == 2 and summary["steps"] == TINY["steps"]
    # One writer: every record once (two writers would append each twice).
    kinds = [json.loads(line)["kind"] for line in open(run / "metrics.jsonl")]
    assert kinds.count("test") == 1 and kinds.count("train") == 2
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".tmp-")]


def test_sweep_on_two_processes_runs_each_run_on_both(data_dir, tmp_path):
    # fixed:24: one small train step to compile (native's buckets here are 64x64 and 32x64).
    flags = train_flags(data_dir, tmp_path, model="seed", recalibrate_bn=False, buckets=None)
    flags += ["--train_size=fixed:24", "--set=learning_rate=0.001", "--max_parallel=1"]
    first, second = run_pythons(*on_two("experiments.sweep", flags), timeout=300)
    assert first.returncode == 0 and second.returncode == 0, second.stderr[-3000:]
    assert "results.csv" in first.stdout and "results.csv" not in second.stdout
    (run,) = (tmp_path / "runs").iterdir()
    summary = json.load(open(run / "summary.json"))
    assert summary["devices"] == 2 and summary["steps"] == TINY["steps"]
    kinds = [json.loads(line)["kind"] for line in open(run / "metrics.jsonl")]
    assert kinds.count("test") == 1  # one writer
    assert (run / "stderr.log").exists() and (run / "stderr.1.log").exists()  # a log each


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--coordinator_address=127.0.0.1:1234"], "--coordinator_address: only applies"),
        (
            ["--distributed", "--coordinator_address=127.0.0.1:1234", "--num_processes=2"],
            "--process_id: missing",
        ),
        (
            ["--distributed", "--coordinator_address=localhost", "--num_processes=2"]
            + ["--process_id=0"],
            "--coordinator_address='localhost': expected HOST:PORT",
        ),
    ],
)
def test_cluster_flags_are_one_line_errors(tmp_path, flags, message):
    args = [sys.executable, "-m", "experiments.train", f"--workdir={tmp_path}", *flags]
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    out = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 1, out.stderr[-2000:]
    assert out.stderr.strip().splitlines()[-1].startswith(f"error: {message}")
    assert "Traceback" not in out.stderr


def test_inconsistent_cluster_values_are_rejected():
    for cluster, message in [
        (Cluster("127.0.0.1:9", 2, 2), "--process_id=2: expected 0 <= id < --num_processes=2"),
        (Cluster("127.0.0.1:9", 0, 0), "--num_processes=0: expected a positive number"),
        (Cluster(distributed_timeout_s=0), "--distributed_timeout_s=0: expected a positive"),
    ]:
        with pytest.raises(ValueError, match=f"^{message}"):
            cluster.validate(distributed=True)
    assert Cluster().validate(distributed=False) == Cluster()


def test_a_held_workdir_stops_both_processes_at_once(data_dir, tmp_path):
    """Process 0 holds the lock: refused, it stops at once in one line (not at JAX's shutdown
    barrier, minutes later); process 1 then reports it lost."""
    with WorkdirLock(str(tmp_path)) as lock:
        lock.acquire()
        done = run_pythons(
            *on_two("experiments.train", train_flags(data_dir, tmp_path)), timeout=150
        )
    last = [p.stderr.strip().splitlines()[-1] for p in done]
    assert [p.returncode for p in done] == [1, 1], last
    assert last[0].startswith(f"error: [process 0] --workdir={tmp_path} is in use by the run of ")
    assert f"pid {os.getpid()}" in last[0]
    assert last[1].startswith("error: [process 1] lost process 0 of 2"), last[1]


LATE_LOG = """
import os, threading, time
from absl import app, flags
from experiments.flags import run_cleanly

flags.DEFINE_boolean("distributed", False, "run as the child of a supervisor")


def late_log():  # a runtime thread (JAX's C++ client) that logs after the error
    time.sleep(0.5)
    os.write(2, b"a late log line\\n")


def main(argv):
    threading.Thread(target=late_log).start()  # not a daemon: the exit waits for it
    raise ValueError("boom")


app.run(run_cleanly(main, (ValueError,), supervised=True))
"""


def test_the_supervisor_prints_the_error_last(tmp_path):
    """A thread logging after the one-line error follows it in a lone process; with
    --distributed the supervisor prints the child's line once the child is gone."""
    script = tmp_path / "late.py"
    script.write_text(LATE_LOG)
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": REPO}
    for flag, last in (("--nodistributed", "a late log line"), ("--distributed", "error: boom")):
        out = subprocess.run(
            [sys.executable, str(script), flag],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        lines = out.stderr.strip().splitlines()
        assert out.returncode == 1 and lines[-1] == last, out.stderr[-2000:]
        assert lines.count("error: boom") == 1 and "a late log line" in lines


def saved_steps(workdir) -> list[int]:
    directory = workdir / "checkpoints"
    return [int(d) for d in os.listdir(directory) if d.isdigit()] if directory.exists() else []


def test_a_lost_process_is_survived_and_a_rerun_resumes(data_dir, tmp_path):
    steps = 100  # far more than the few after the first checkpoint: the kill lands mid-run
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    one = tmp_path / "one"  # 1 process with 2 devices: the same losses, parameters, evaluation
    # The references save only their last step: uninterrupted runs, not runs that checkpoint.
    uninterrupted = dict(steps=steps, checkpoint_every=steps)
    done = run_pythons(
        *on_two("experiments.train", train_flags(data_dir, reference, **uninterrupted)),
        ("-m", "experiments.train", *train_flags(data_dir, one, **uninterrupted)),
        env=cpu_devices(2),
    )
    assert [p.returncode for p in done] == [0, 0, 0], done[1].stderr[-3000:]
    assert train_losses(one) == pytest.approx(train_losses(reference), rel=1e-5)
    for a, b in zip(params_of(one), params_of(reference), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    evals = [json.load(open(d / "summary.json"))["eval_accuracy"] for d in (one, reference)]
    assert evals[0] == evals[1]
    commands = on_two("experiments.train", train_flags(data_dir, killed, steps=steps))
    status, last, waited = kill_mid_run(commands, killed, victim=1)
    assert max(saved_steps(killed)) < steps  # it really was interrupted
    assert status == 1 and last.startswith("error: [process 0] lost process 1 of 2")
    assert waited < TIMEOUT_S + 20
    rerun = run_pythons(*commands)
    assert [p.returncode for p in rerun] == [0, 0], rerun[0].stderr[-3000:]
    summary = json.load(open(killed / "summary.json"))
    assert 0 < summary["resumed_from_step"] < steps
    for a, b in zip(params_of(killed), params_of(reference), strict=True):
        np.testing.assert_array_equal(a, b)
    assert summary["eval_accuracy"] == json.load(open(reference / "summary.json"))["eval_accuracy"]


def test_a_lost_coordinator_is_reported_in_one_line(data_dir, tmp_path):
    # Process 0 runs the coordination service: JAX aborts the others from a C++ thread when it
    # is gone; their supervisor (fcn_jax.process.supervise) says so in one line.
    commands = on_two("experiments.train", train_flags(data_dir, tmp_path, steps=100))
    status, last, waited = kill_mid_run(commands, tmp_path, victim=0)
    assert status == 1 and last.startswith("error: [process 1] lost process 0 of 2"), last
    assert waited < TIMEOUT_S + 20


def kill_mid_run(commands, workdir, victim: int) -> tuple[int, str, float]:
    """Start the 2 processes of ``commands``, SIGKILL process ``victim`` once a checkpoint
    past step 0 is saved; the survivor's exit status, last stderr line and seconds to exit
    after the kill. Every process is ended before this returns."""
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    procs = [
        subprocess.Popen(
            [sys.executable, *c], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )  # fmt: skip
        for c in commands
    ]
    try:
        deadline = time.monotonic() + 240
        while max(saved_steps(workdir), default=0) < 6 and time.monotonic() < deadline:
            time.sleep(0.05)
        procs[victim].send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        _, err = procs[1 - victim].communicate(timeout=TIMEOUT_S + 30)
        waited = time.monotonic() - killed_at
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            proc.communicate()
    return procs[1 - victim].returncode, err.decode().strip().splitlines()[-1], waited


def train_losses(workdir) -> list[float]:
    records = [json.loads(line) for line in open(workdir / "metrics.jsonl")]
    return [r["loss"] for r in records if r["kind"] == "train"]


def params_of(workdir) -> list[np.ndarray]:
    import jax
    from flax import nnx

    return [
        np.asarray(p) for p in jax.tree.leaves(nnx.state(restore_model(str(workdir)), nnx.Param))
    ]
