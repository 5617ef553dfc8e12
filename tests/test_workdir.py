"""A run's workdir: one run at a time (an OS lock that dies with its holder), a full disk that
loses nothing (a real small tmpfs where it can be mounted, and ENOSPC simulated everywhere),
and a read-only one: each a one-line error."""

import contextlib
import errno
import json
import os
import signal
import socket
import stat
import subprocess
import sys

import pytest
from commands import REPO
from tiny import TINY_TRAIN

from fcn_jax.checkpoint import Checkpointer
from fcn_jax.config import TrainConfig
from fcn_jax.outputs import WriteError
from fcn_jax.run import train_and_evaluate
from fcn_jax.runs import grid as grids
from fcn_jax.runs import launch, sweep
from fcn_jax.runs.compare import CompareConfig, run_comparison
from fcn_jax.workdir_lock import WorkdirBusy, WorkdirLock, read_holder

HOST = socket.gethostname()


def tiny(data_dir, **kw) -> TrainConfig:
    base = {**TINY_TRAIN, "data_dir": data_dir, "buckets": "auto:2", "eval_sizes": "24"}
    return TrainConfig(**{**base, "eval_examples": 16, "eval_batch_size": 16, **kw})


# --- one run per workdir ---------------------------------------------------------------------


def test_the_lock_names_its_holder_and_dies_with_it(tmp_path):
    assert not WorkdirLock(str(tmp_path / "none")).acquire()  # no directory: nothing to hold
    with WorkdirLock(str(tmp_path)) as first:
        assert first.acquire() and first.acquire()  # held; taking it again is a no-op
        assert WorkdirLock(str(tmp_path), holder=False).acquire() is False  # processes > 0
        with pytest.raises(WorkdirBusy) as busy:
            WorkdirLock(str(tmp_path)).acquire()  # another open file: refused, even here
    assert str(busy.value).startswith(
        f"--workdir={tmp_path} is in use by the run of pid {os.getpid()} on {HOST} (started "
    )
    assert "\n" not in str(busy.value)
    assert (tmp_path / ".lock").read_text() == ""  # released: it names nobody
    with WorkdirLock(str(tmp_path)) as again:
        assert again.acquire()

    # A killed holder leaves no stale lock: the kernel drops it with the process.
    code = (
        "import sys, time\nfrom fcn_jax.workdir_lock import WorkdirLock\n"
        "WorkdirLock(sys.argv[1]).acquire()\nprint('held', flush=True)\ntime.sleep(120)\n"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", code, str(tmp_path)], cwd=REPO, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline() == "held\n"
        assert read_holder(str(tmp_path / ".lock"))["pid"] == holder.pid
        with pytest.raises(WorkdirBusy, match=f"pid {holder.pid} on {HOST}"):
            WorkdirLock(str(tmp_path)).acquire()
    finally:
        holder.kill()
        holder.communicate()
    with WorkdirLock(str(tmp_path)) as after:
        assert after.acquire()


def test_a_second_run_into_a_running_runs_workdir_exits_at_once(tfds_dir, tmp_path):
    """The first run is paused (SIGSTOP) once it holds the lock, so the second meets it
    running however slow the machine; the second exits 1 with one line, and the first then
    finishes with each step in metrics.jsonl once."""
    small_eval = {"eval_examples": 16, "eval_batch_size": 16, "eval_sizes": "24"}
    values = {**TINY_TRAIN, **small_eval, "buckets": "auto:2", "log_every": 1}
    flags = [f"--workdir={tmp_path}", f"--data_dir={tfds_dir}"]
    flags += [f"--{k}={v}" for k, v in values.items()]
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    train = [sys.executable, "-m", "experiments.train", *flags]
    pipes = dict(stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = subprocess.Popen(train, cwd=REPO, env=env, **pipes)
    try:
        holder = None
        while holder is None and first.poll() is None:
            holder = read_holder(str(tmp_path / ".lock"), wait_s=0.1)
        assert holder and (holder["pid"], holder["host"]) == (first.pid, HOST), first.communicate()
        first.send_signal(signal.SIGSTOP)
        second = subprocess.run(train, cwd=REPO, env=env, timeout=300, **pipes)
        first.send_signal(signal.SIGCONT)
        _, err = first.communicate(timeout=300)
    finally:
        if first.poll() is None:
            first.kill()
            first.communicate()
    assert second.returncode == 1 and "Traceback" not in second.stderr
    assert (
        second.stderr.strip()
        .splitlines()[-1]
        .startswith(
            f"error: --workdir={tmp_path} is in use by the run of pid {first.pid} on {HOST}"
        )
    )
    assert first.returncode == 0, err[-2000:]
    records = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    steps = [r["step"] for r in records if r["kind"] == "train"]
    assert steps == list(range(1, TINY_TRAIN["steps"] + 1))


def test_sweeps_and_comparisons_leave_a_held_workdir_alone(tmp_path, monkeypatch):
    """A sweep does not start (nor touch the logs of) a run whose directory a live run
    holds; a comparison into a held workdir stops before opening its dataset."""
    runs = grids.plan_runs({"steps": [1, 2]}, [0], {})
    held = tmp_path / "runs" / runs[0].name
    held.mkdir(parents=True)
    fake = tmp_path / "fake_python"
    fake.write_text(
        "#!/bin/sh\n"
        'for a in "$@"; do case "$a" in --workdir=*) d="${a#--workdir=}";; esac; done\n'
        """echo '{"steps": 2}' > "$d/summary.json"\n"""
    )
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setattr(launch, "probe_accelerators", lambda python: ("cpu", 1))
    lines = []
    with WorkdirLock(str(held)) as lock:
        lock.acquire()
        status = sweep.run_local(
            runs, str(tmp_path), command=[str(fake)], cwd=REPO, log=lines.append
        )
        with pytest.raises(WorkdirBusy, match=f"pid {os.getpid()}"):
            run_comparison(CompareConfig(train=TrainConfig(dataset="npz:/no/such.npz")), str(held))
    assert status == {runs[0].name: "busy", runs[1].name: "finished"}
    assert sorted(os.listdir(held)) == [".lock"]  # no stdout.log, stderr.log or error.txt
    assert any(f"not started {runs[0].name}: --workdir={held} is in use" in x for x in lines)


# --- a full disk -----------------------------------------------------------------------------


@contextlib.contextmanager
def tmpfs(path, options: str):
    """A tmpfs mounted at ``path`` for the block (skipped, with the reason, where this
    machine cannot mount one); unmounted after it, lazily: an open file cannot keep it."""
    path.mkdir()
    try:
        out = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except OSError as e:
        pytest.skip(f"cannot mount a tmpfs here: {e}")
    if out.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {out.stderr.strip() or out.returncode}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=30)


def fill(directory) -> None:
    """Write a ballast file until the filesystem has no byte left."""
    fd = os.open(os.path.join(directory, "ballast"), os.O_WRONLY | os.O_CREAT)
    try:
        for chunk in (1 << 16, 1 << 12, 1):
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, b"\0" * chunk)
    finally:
        os.close(fd)


def second_checkpoint_fails(monkeypatch, tfds_dir, workdir, make_it_fail) -> str:
    """Train 6 steps, checkpoints at 3 and 6, ``make_it_fail()`` called just before the
    second; the one-line error."""
    save, calls = Checkpointer.save, []

    def failing_second(self, step, state, meta):
        calls.append(step)
        if len(calls) == 2:
            make_it_fail()
        return save(self, step, state, meta)

    with monkeypatch.context() as m:
        m.setattr(Checkpointer, "save", failing_second)
        with pytest.raises(WriteError) as e:
            train_and_evaluate(tiny(tfds_dir, checkpoint_every=3), str(workdir))
    return str(e.value)


def check_nothing_lost(message, capfd, caplog, tfds_dir, workdir, make_room) -> None:
    """One line, no traceback, checkpoint 3 whole and alone; with room, a rerun resumes from
    it and ends with each train record once."""
    checkpoints = workdir / "checkpoints"
    assert message.startswith(f"cannot save checkpoint 6 in {checkpoints}: No space left on ")
    assert "B free); checkpoint 3 is kept: rerun the same command" in message
    assert "\n" not in message
    assert "Traceback" not in capfd.readouterr().err + caplog.text
    assert sorted(os.listdir(checkpoints)) == ["3"]  # no partial directory left
    assert Checkpointer(str(workdir)).restore()[1]["step"] == 3  # usable
    make_room()
    summary = train_and_evaluate(tiny(tfds_dir, checkpoint_every=3), str(workdir))
    assert summary["resumed_from_step"] == 3 and summary["steps"] == 6
    records = [json.loads(line) for line in open(workdir / "metrics.jsonl")]
    assert [r["step"] for r in records if r["kind"] == "train"] == [3, 6]


def test_a_full_disk_loses_nothing(tfds_dir, tmp_path, monkeypatch, capfd, caplog):
    """A real 2 MB filesystem, filled up just before the second checkpoint."""
    with tmpfs(tmp_path / "small", "size=2m") as small:
        workdir = small / "run"
        message = second_checkpoint_fails(monkeypatch, tfds_dir, workdir, lambda: fill(small))
        check_nothing_lost(
            message, capfd, caplog, tfds_dir, workdir, lambda: os.remove(small / "ballast")
        )


def test_a_simulated_full_disk_loses_nothing(tfds_dir, tmp_path, monkeypatch, capfd, caplog):
    """ENOSPC raised inside orbax's save (its metadata writes, in its own threads), wherever
    a tmpfs cannot be mounted too."""
    from etils.epath import abstract_path

    write_text = abstract_path.Path.write_text

    def no_space(self, *args, **kw):
        if "checkpoints" in str(self):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self))
        return write_text(self, *args, **kw)

    workdir = tmp_path / "run"
    message = second_checkpoint_fails(
        monkeypatch,
        tfds_dir,
        workdir,
        lambda: monkeypatch.setattr(abstract_path.Path, "write_text", no_space),
    )
    check_nothing_lost(message, capfd, caplog, tfds_dir, workdir, monkeypatch.undo)


# --- a read-only workdir ---------------------------------------------------------------------


def test_a_read_only_workdir_is_one_line(tfds_dir, tmp_path):
    with tmpfs(tmp_path / "ro", "ro,size=1m") as ro:
        for workdir in (ro, ro / "run"):  # an existing workdir, and one to make
            with pytest.raises(ValueError) as e:
                train_and_evaluate(tiny(tfds_dir), str(workdir))
            assert str(e.value) == f"--workdir={workdir}: Read-only file system"
