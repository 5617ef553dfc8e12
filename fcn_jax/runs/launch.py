"""Launchers: start a command once per run, as local processes or as a Slurm array.

A launcher is handed the command (e.g. ``[python, "-m", "<package>.train"]``) and
the directory to start it in (also put on ``PYTHONPATH``, so ``-m`` modules resolve there);
each run (anything with ``name`` and ``flags``) is started as ``command
--workdir=WORKDIR/runs/<name> *flags``. Which runs to start is the caller's decision (see the
reuse rule in :mod:`fcn_jax.runs.rundir`).
"""

from __future__ import annotations

import collections
import os
import shlex
import shutil
import subprocess
import sys
import time

from fcn_jax import workdir_lock
from fcn_jax.outputs import write_atomic
from fcn_jax.runs.rundir import ERROR_TAIL_LINES, RunDir


def probe_accelerators(python: str = sys.executable) -> tuple[str, int]:
    """(platform, local device count) from a throwaway process, so that this one never
    grabs accelerator memory the runs need."""
    if os.environ.get("JAX_PLATFORMS", "").strip().lower() == "cpu":
        return "cpu", 1
    code = "import jax; print(jax.default_backend(), jax.local_device_count())"
    try:
        out = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=300)
        platform, count = out.stdout.split()[-2:]
        return platform, int(count)
    except (subprocess.SubprocessError, ValueError, IndexError):
        return "cpu", 1


def device_env(platform: str, index: int, environ=None) -> dict[str, str]:
    """Environment that shows a run only accelerator ``index`` of this host."""
    environ = os.environ if environ is None else environ
    if platform in ("gpu", "cuda", "rocm"):
        var = "HIP_VISIBLE_DEVICES" if platform == "rocm" else "CUDA_VISIBLE_DEVICES"
        visible = [v for v in environ.get(var, "").split(",") if v.strip()]
        device = visible[index] if index < len(visible) else str(index)
        return {var: device}
    if platform == "tpu":
        port = 8476 + index
        return {
            "TPU_VISIBLE_CHIPS": str(index),
            "TPU_CHIPS_PER_PROCESS_BOUNDS": "1,1,1",
            "TPU_PROCESS_BOUNDS": "1,1,1",
            "TPU_PROCESS_PORT": str(port),
            "TPU_PROCESS_ADDRESSES": f"localhost:{port}",
            "CLOUD_TPU_TASK_ID": "0",
        }
    return {}


def run_local(
    runs: list,
    workdir: str,
    *,
    command: list[str],
    cwd: str,
    max_parallel: int = 2,
    log=print,
    process_id: int = 0,
) -> dict[str, str]:
    """Run every one of ``runs``, up to ``max_parallel`` at once (one accelerator each when the
    host has accelerators); return name → ``finished``, ``failed`` (error.txt written; the
    other runs go on) or ``busy`` (a live run holds its directory: not started, its files
    untouched). An interrupt stops every started run, which resumes next time.
    ``process_id``: this host's index when every host runs the same sweep, each run a process
    on every host: the others' logs are ``stdout.I.log``/``stderr.I.log``, and process 0 alone
    writes error.txt."""
    if max_parallel < 1:
        raise ValueError(f"--max_parallel={max_parallel}: expected a positive number")
    workdir, todo, results = os.path.abspath(workdir), collections.deque(runs), {}
    platform, count = probe_accelerators(command[0]) if todo else ("cpu", 1)
    # Accelerators: one per run (each process would claim most of a shared device's memory),
    # so at most `count` runs at once. CPU runs just share the cores.
    devices = list(range(count)) if platform != "cpu" else None
    slots = min(max_parallel, count) if devices else max_parallel
    if devices and slots < max_parallel:
        log(f"{count} {platform} device(s): at most {slots} run(s) at once")
    env = {**os.environ, "PYTHONPATH": _python_path(cwd, os.environ.get("PYTHONPATH"))}
    active: dict[str, tuple] = {}
    total = len(todo)
    try:
        while todo or active:
            while todo and len(active) < slots:
                run = todo.popleft()
                rundir = RunDir.of(workdir, run.name)
                # A live run holds it (another sweep's, or a lone one): leave its files alone.
                if process_id == 0 and (reason := workdir_lock.busy(rundir.path)):
                    log(f"[{total - len(todo)}/{total}] not started {run.name}: {reason}")
                    results[run.name] = "busy"
                    continue
                device = devices.pop(0) if devices is not None else None
                run_env = {**env, **device_env(platform, device)}  # CPU: nothing to add
                started = _start(rundir, run, command, cwd, run_env, process_id)
                active[run.name] = (rundir, device, *started)
                where = f" on device {device}" if device is not None else ""
                log(f"[{total - len(todo)}/{total}] start {run.name}{where}")
            time.sleep(0.2)
            for name, (rundir, device, proc, began, files) in list(active.items()):
                if proc.poll() is None:
                    continue
                del active[name]
                _close(files)
                if devices is not None:
                    devices.append(device)
                seconds = time.time() - began
                results[name] = _finish(rundir, proc.returncode, seconds, log, process_id)
    except BaseException:
        for _, _, proc, _, files in active.values():
            proc.terminate()  # each run resumes from its last checkpoint next time
            proc.wait()
            _close(files)
        raise
    return results


def _python_path(cwd: str, current: str | None) -> str:
    return os.pathsep.join(p for p in (os.path.abspath(cwd), current) if p)


def _log_names(process_id: int) -> tuple[str, str]:
    suffix = f".{process_id}" if process_id else ""
    return f"stdout{suffix}.log", f"stderr{suffix}.log"


def _start(rundir: RunDir, run, command: list[str], cwd: str, env: dict, process_id: int):
    os.makedirs(rundir.path, exist_ok=True)
    if process_id == 0 and os.path.exists(rundir.error_path):
        os.remove(rundir.error_path)  # a retry of a failed run
    stdout, stderr = (open(rundir.file(name), "w") for name in _log_names(process_id))
    argv = [*command, f"--workdir={rundir.path}", *run.flags]
    proc = subprocess.Popen(argv, stdout=stdout, stderr=stderr, env=env, cwd=cwd)
    return proc, time.time(), (stdout, stderr)


def _close(files) -> None:
    for f in files:
        f.close()


def _finish(rundir: RunDir, returncode: int, seconds: float, log, process_id: int) -> str:
    name = os.path.basename(rundir.path)
    if returncode == 0 and rundir.is_finished():
        log(f"done {name} ({seconds:.0f} s)")
        return "finished"
    if process_id:  # process 0 writes error.txt
        log(f"FAILED {name} (exit status {returncode}): see {_log_names(process_id)[1]}")
        return "failed"
    error = rundir.write_error(returncode, seconds)
    log(f"FAILED {name} (exit status {returncode}): {error}")
    return "failed"


# The body of every array task: run line SLURM_ARRAY_TASK_ID + 1 of runs.txt.
_TASK_SCRIPT = """set -euo pipefail
SWEEP_DIR={workdir}
PYTHON=${{PYTHON:-{program}}}
cd {cwd}
export PYTHONPATH={cwd}${{PYTHONPATH:+:$PYTHONPATH}}
LINE=$(sed -n "$((SLURM_ARRAY_TASK_ID + 1))p" "$SWEEP_DIR/runs.txt")
eval "set -- $LINE"
NAME=$1
shift
RUN_DIR="$SWEEP_DIR/runs/$NAME"
mkdir -p "$RUN_DIR"
if [ -f "$RUN_DIR/summary.json" ]; then
  echo "skip $NAME: finished (summary.json present)"
  exit 0
fi
rm -f "$RUN_DIR/error.txt"
status=0
{srun}"$PYTHON" {args} --workdir="$RUN_DIR" "$@" 2> "$RUN_DIR/stderr.log" || status=$?
if [ "$status" -ne 0 ]; then
  {{ echo "exit status $status"; tail -n {tail} "$RUN_DIR/stderr.log"; }} \\
    > "$RUN_DIR/error.txt"
  exit "$status"
fi
"""


def write_slurm(
    runs: list,
    workdir: str,
    *,
    command: list[str],
    cwd: str,
    directives: list[str] = (),
    job_name: str = "fcn-sweep",
    then: str | None = None,
    srun: bool = False,
) -> str:
    """Write ``DIR/runs.txt`` (one run per line: name, then its flags) and ``DIR/sweep.sbatch``,
    an array job whose task ``i`` runs line ``i + 1`` (skipping a run finished since, by an
    earlier task of this script); return the script's path. ``$PYTHON`` replaces
    ``command[0]`` at submission; ``then``: what the script's header says to run afterwards;
    ``srun``: start each run with ``srun``, one process per task of the job (``--ntasks``), for
    runs that are several processes (``--distributed``)."""
    workdir = os.path.abspath(workdir)
    os.makedirs(os.path.join(workdir, "runs"), exist_ok=True)
    lines = [shlex.join([run.name, *run.flags]) for run in runs]
    write_atomic(os.path.join(workdir, "runs.txt"), "\n".join(lines) + "\n")
    path = os.path.join(workdir, "sweep.sbatch")
    header = [
        "#!/bin/bash",
        f"# Sweep of {len(runs)} runs, one array task each (generated by fcn_jax.runs.launch).",
        f"# Submit: sbatch {shlex.quote(path)}",
        *([f"# Then:   {then}"] if then else []),
        f"#SBATCH --job-name={job_name}",
        f"#SBATCH --array=0-{len(runs) - 1}",
        f"#SBATCH --output={workdir}/runs/slurm-%A_%a.out",
        *(f"#SBATCH {d}" for d in directives),
    ]
    task = _TASK_SCRIPT.format(
        workdir=shlex.quote(workdir),
        program=shlex.quote(command[0]),
        cwd=shlex.quote(os.path.abspath(cwd)),
        args=shlex.join(command[1:]),
        tail=ERROR_TAIL_LINES,
        srun="srun " if srun else "",
    )
    write_atomic(path, "\n".join(header) + "\n" + task)
    os.chmod(path, 0o755)
    return path


def submit_slurm(path: str, log=print) -> bool:
    """``sbatch path`` when sbatch is on PATH (True); else print how to submit (False)."""
    if shutil.which("sbatch") is None:
        log(f"sbatch not found: submit on the cluster with `sbatch {path}`")
        return False
    out = subprocess.run(["sbatch", path], capture_output=True, text=True)
    if out.returncode:
        raise ValueError(f"sbatch {path} failed: {out.stderr.strip()}")
    log(out.stdout.strip())
    return True
