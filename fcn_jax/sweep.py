"""Sweeps: a grid over training flags × seeds, run locally or as a Slurm array, aggregated.

A grid maps ``TrainConfig`` field names to lists of values, from a JSON file, a Python file
defining ``GRID = {...}`` (:func:`load_grid_file`) or ``key=v1,v2`` strings
(:func:`parse_set`). :func:`plan_runs` expands it (× seeds) into :class:`Run` s, each an
``experiments.train`` command line with its own workdir ``DIR/runs/<name>/``.

* :func:`run_local`: up to ``max_parallel`` runs at once as subprocesses (one accelerator
  each when a host has several), skipping finished runs (``summary.json`` present); a failed
  run leaves ``error.txt`` (its stderr tail) and does not stop the others.
* :func:`write_slurm`: ``DIR/sweep.sbatch``, an array job with one task per run.
* :func:`aggregate`: every run's summary into ``DIR/results.csv`` and ``DIR/results.png``.
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import hashlib
import io
import itertools
import json
import os
import re
import runpy
import shlex
import shutil
import subprocess
import sys
import time
import typing

import numpy as np

from fcn_jax.compare import fmt, sort_sizes, stats
from fcn_jax.config import TrainConfig
from fcn_jax.outputs import read_json, write_atomic, write_json

# Set by the sweep itself, not by the grid.
_RESERVED = {"seed": "give seeds with --seeds", "data_dir": "give it as a base flag"}
_ERROR_TAIL_LINES = 40
_MAX_NAME = 120
PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclasses.dataclass(frozen=True)
class Run:
    """One training run of a sweep.

    Attributes:
      name: its directory name under ``DIR/runs``, made from its grid values and seed.
      params: its grid values (field → value).
      seed: its seed.
      flags: the ``experiments.train`` flags (base flags, grid values, seed; no workdir).
    """

    name: str
    params: dict
    seed: int
    flags: tuple[str, ...]

    def to_dict(self) -> dict:
        return {"name": self.name, "params": self.params, "seed": self.seed, "flags": self.flags}

    @classmethod
    def from_dict(cls, d: dict) -> Run:
        return cls(d["name"], d["params"], int(d["seed"]), tuple(d["flags"]))


# --- grids -----------------------------------------------------------------------------------


def _field_types() -> dict[str, tuple[type, bool]]:
    """Field → (base type, whether None is allowed)."""
    hints = typing.get_type_hints(TrainConfig)
    out = {}
    for f in dataclasses.fields(TrainConfig):
        args = typing.get_args(hints[f.name])
        base = [t for t in args if t is not type(None)] or [hints[f.name]]
        out[f.name] = (base[0], type(None) in args)
    return out


def _coerce(key: str, value, from_text: bool):
    """A grid value as the field's type (text from ``--set`` is parsed; JSON is checked)."""
    kind, optional = _field_types()[key]
    if value is None or (from_text and value.lower() in ("none", "null")):
        if not (optional and TrainConfig.__dataclass_fields__[key].default is None):
            raise ValueError(f"{value!r} is not allowed (the flag cannot be unset)")
        return None
    if from_text:
        if kind is bool:
            if value.lower() not in ("true", "false", "1", "0"):
                raise ValueError(f"{value!r} is not a boolean")
            return value.lower() in ("true", "1")
        try:
            return kind(value)
        except ValueError:
            article = "an" if kind is int else "a"
            raise ValueError(f"{value!r} is not {article} {kind.__name__}") from None
    ok = {
        bool: isinstance(value, bool),
        int: isinstance(value, int) and not isinstance(value, bool),
        float: isinstance(value, int | float) and not isinstance(value, bool),
        str: isinstance(value, str),
    }[kind]
    if not ok:
        raise ValueError(f"{value!r} is not a{'n' if kind is int else ''} {kind.__name__}")
    return float(value) if kind is float else value


def check_grid(grid, source: str, from_text: bool = False) -> dict[str, list]:
    """Validate a grid (field → list of values), coercing values to the fields' types.

    Raises:
      ValueError: one line naming ``source`` (the file, or ``--set``) and the key at fault.
    """
    if not isinstance(grid, dict):
        raise ValueError(f"{source}: expected a mapping of flag names to lists of values")
    types, out = _field_types(), {}
    for key, values in grid.items():
        where = f"{source}: key {key!r}"
        if key in _RESERVED:
            raise ValueError(f"{where}: not a grid key ({_RESERVED[key]})")
        if key not in types:
            raise ValueError(
                f"{where}: not a training flag (see python -m experiments.train --help)"
            )
        values = values if isinstance(values, list) else [values]
        if not values:
            raise ValueError(f"{where}: empty list of values")
        try:
            out[key] = [_coerce(key, v, from_text) for v in values]
        except ValueError as e:
            raise ValueError(f"{where}: {e}") from None
        if len(set(map(repr, out[key]))) != len(out[key]):
            raise ValueError(f"{where}: repeated values {values}")
    return out


def load_grid_file(path: str) -> dict[str, list]:
    """A grid from ``*.json`` (an object) or ``*.py`` (a module-level ``GRID`` dict)."""
    if not os.path.exists(path):
        raise ValueError(f"--grid={path}: no such file")
    if path.endswith(".py"):
        try:
            namespace = runpy.run_path(path)
        except Exception as e:
            raise ValueError(f"{path}: cannot run it: {type(e).__name__}: {e}") from None
        if "GRID" not in namespace:
            raise ValueError(f"{path}: defines no GRID = {{...}}")
        grid = namespace["GRID"]
    else:
        try:
            with open(path) as f:
                grid = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not valid JSON: {e}") from None
    return check_grid(grid, path)


def parse_set(items: list[str]) -> dict[str, list]:
    """``["model=seed,allcnn", "learning_rate=1e-3,3e-3"]`` → a grid. A value list may be
    JSON (``'eval_sizes=["24,28x16", "grid:16,28"]'``) when values contain commas."""
    grid = {}
    for item in items:
        key, eq, text = item.partition("=")
        key = key.strip()
        if not eq or not key or not text.strip():
            raise ValueError(f"--set={item}: expected KEY=V1,V2,...")
        if key in grid:
            raise ValueError(f"--set: key {key!r} given twice")
        if text.lstrip().startswith("["):
            try:
                values = [v if isinstance(v, str) else json.dumps(v) for v in json.loads(text)]
            except json.JSONDecodeError as e:
                raise ValueError(f"--set={item}: not a JSON list: {e}") from None
        else:
            values = [v.strip() for v in text.split(",")]
        grid[key] = values
    return check_grid(grid, "--set", from_text=True)


def merge_grids(*grids: dict[str, list]) -> dict[str, list]:
    out = {}
    for grid in grids:
        for key, values in grid.items():
            if key in out:
                raise ValueError(f"grid key {key!r} given both in --grid and --set")
            out[key] = values
    return out


# --- runs ------------------------------------------------------------------------------------


def flag(name: str, value) -> str | None:
    """``--name=value`` (``--name``/``--noname`` for booleans; None: leave the flag out)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return f"--{name}" if value else f"--no{name}"
    return f"--{name}={value}"


def _slug(value) -> str:
    return re.sub(r"[^A-Za-z0-9.=+-]+", "_", str(value)).strip("_") or "_"


def run_name(params: dict, seed: int) -> str:
    """``model=seed__train_size=fixed_28__seed0`` (a hash replaces the tail of long names)."""
    name = "__".join([*(f"{k}={_slug(v)}" for k, v in params.items()), f"seed{seed}"])
    if len(name) > _MAX_NAME:
        digest = hashlib.sha1(name.encode()).hexdigest()[:10]
        name = f"{name[: _MAX_NAME - 11]}-{digest}"
    return name


def with_shared_cache(base: dict, grid: dict, workdir: str) -> dict:
    """``base`` plus ``compilation_cache_dir=DIR/xla_cache`` unless set: runs of a sweep
    share most shapes (the eval sizes, often the train sizes), so each compiles them once."""
    if "compilation_cache_dir" in base or "compilation_cache_dir" in grid:
        return base
    return {**base, "compilation_cache_dir": os.path.join(os.path.abspath(workdir), "xla_cache")}


def plan_runs(grid: dict[str, list], seeds: list[int], base: dict) -> list[Run]:
    """Every grid point × seed as a :class:`Run`; each point's config is validated first.

    ``base``: the base training flags given explicitly (field → value); they go to every run.
    """
    clash = sorted(set(grid) & set(base))
    if clash:
        raise ValueError(f"--{clash[0]} given both as a base flag and in the grid")
    if not seeds:
        raise ValueError("--seeds: expected at least one seed")
    if "seed" in base:
        raise ValueError("--seed: a sweep sets each run's seed; give the seeds with --seeds")
    keys = list(grid)
    runs, names = [], {}
    for combo in itertools.product(*(grid[k] for k in keys)):
        params = dict(zip(keys, combo))
        where = "grid point " + ", ".join(f"{k}={v}" for k, v in params.items())
        config = TrainConfig(**{**base, **params})
        try:
            config.resolved()  # validates, the syntax of size specs included
        except ValueError as e:
            raise ValueError(f"{where}: {e}") from None
        for seed in seeds:
            name = run_name(params, seed)
            if name in names:
                raise ValueError(f"{where} and {names[name]} both map to run name {name!r}")
            names[name] = where
            values = {**base, **params, "seed": seed}
            flags = tuple(f for f in (flag(k, v) for k, v in values.items()) if f)
            runs.append(Run(name, params, seed, flags))
    return runs


def run_dir(workdir: str, run: Run) -> str:
    return os.path.join(workdir, "runs", run.name)


def status(workdir: str, run: Run) -> str:
    """``finished`` (summary.json), ``failed`` (error.txt) or ``pending``."""
    d = run_dir(workdir, run)
    if os.path.exists(os.path.join(d, "summary.json")):
        return "finished"
    if os.path.exists(os.path.join(d, "error.txt")):
        return "failed"
    return "pending"


def prepare(workdir: str, runs: list[Run], grid: dict, seeds: list[int], base: dict, command):
    """Write ``DIR/sweep.json`` (the plan, read by ``--aggregate_only``) and each run's
    ``sweep_run.json``; refuse a run directory that holds a run with other flags."""
    workdir = os.path.abspath(workdir)
    for run in runs:
        path = os.path.join(run_dir(workdir, run), "sweep_run.json")
        if os.path.exists(path):
            old = read_json(path)
            if tuple(old["flags"]) != run.flags:
                raise ValueError(
                    f"{path} holds a run with flags {' '.join(old['flags'])}; this sweep's "
                    f"are {' '.join(run.flags)}: use a new --workdir or the same base flags"
                )
        else:
            write_json(path, run.to_dict())
    write_json(
        os.path.join(workdir, "sweep.json"),
        {
            "grid": grid,
            "seeds": seeds,
            "base_flags": base,
            "command": list(command) if command else None,
            "runs": [r.to_dict() for r in runs],
        },
    )


def load_plan(workdir: str) -> tuple[dict, list[Run]]:
    path = os.path.join(workdir, "sweep.json")
    if not os.path.exists(path):
        raise ValueError(f"{path}: no sweep here (run the sweep first)")
    plan = read_json(path)
    return plan, [Run.from_dict(r) for r in plan["runs"]]


# --- local launcher --------------------------------------------------------------------------


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


def _tail(path: str, lines: int) -> str:
    if not os.path.exists(path):
        return ""
    with open(path, errors="replace") as f:
        return "".join(collections.deque(f, maxlen=lines))


def _last_error_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    return (errors or lines or ["(no output)"])[-1]


def run_local(
    runs: list[Run],
    workdir: str,
    *,
    max_parallel: int = 2,
    python: str = sys.executable,
    log=print,
) -> dict[str, str]:
    """Run every unfinished run, up to ``max_parallel`` at once; return name → status
    (``finished``, ``skipped`` (finished before), ``failed``)."""
    if max_parallel < 1:
        raise ValueError(f"--max_parallel={max_parallel}: expected a positive number")
    workdir = os.path.abspath(workdir)
    results, todo = {}, collections.deque()
    for run in runs:
        if status(workdir, run) == "finished":
            log(f"skip {run.name}: finished (summary.json present)")
            results[run.name] = "skipped"
        else:
            todo.append(run)
    platform, count = probe_accelerators(python) if todo else ("cpu", 1)
    # Accelerators: one per run (each process would claim most of a shared device's memory),
    # so at most `count` runs at once. CPU runs just share the cores.
    devices = list(range(count)) if platform != "cpu" else None
    slots = min(max_parallel, count) if devices else max_parallel
    if devices and slots < max_parallel:
        log(f"{count} {platform} device(s): at most {slots} run(s) at once")
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(p for p in (PROJECT_ROOT, os.environ.get("PYTHONPATH")) if p),
    }
    active: dict[str, tuple] = {}
    total, started = len(todo), 0
    try:
        while todo or active:
            while todo and len(active) < slots:
                run = todo.popleft()
                device = devices.pop(0) if devices is not None else None
                started += 1
                active[run.name] = (
                    run,
                    device,
                    *_start(run, workdir, python, env, platform, device),
                )
                where = f" on device {device}" if device is not None else ""
                log(f"[{started}/{total}] start {run.name}{where}")
            time.sleep(0.2)
            for name, (run, device, proc, began, files) in list(active.items()):
                if proc.poll() is None:
                    continue
                del active[name]
                for f in files:
                    f.close()
                if devices is not None:
                    devices.append(device)
                results[name] = _finish(run, workdir, proc.returncode, time.time() - began, log)
    except BaseException:
        for _, _, proc, _, files in active.values():
            proc.terminate()  # each run resumes from its last checkpoint next time
            proc.wait()
            for f in files:
                f.close()
        raise
    return results


def _start(run: Run, workdir: str, python: str, env: dict, platform: str, device):
    d = run_dir(workdir, run)
    os.makedirs(d, exist_ok=True)
    error = os.path.join(d, "error.txt")
    if os.path.exists(error):
        os.remove(error)  # a retry of a failed run
    if device is not None:
        env = {**env, **device_env(platform, device)}
    stdout = open(os.path.join(d, "stdout.log"), "w")
    stderr = open(os.path.join(d, "stderr.log"), "w")
    command = [python, "-m", "experiments.train", f"--workdir={d}", *run.flags]
    proc = subprocess.Popen(command, stdout=stdout, stderr=stderr, env=env, cwd=PROJECT_ROOT)
    return proc, time.time(), (stdout, stderr)


def _finish(run: Run, workdir: str, returncode: int, seconds: float, log) -> str:
    d = run_dir(workdir, run)
    if returncode == 0 and os.path.exists(os.path.join(d, "summary.json")):
        log(f"done {run.name} ({seconds:.0f} s)")
        return "finished"
    tail = _tail(os.path.join(d, "stderr.log"), _ERROR_TAIL_LINES)
    write_atomic(
        os.path.join(d, "error.txt"),
        f"exit status {returncode} after {seconds:.0f} s\n{tail}",
    )
    log(f"FAILED {run.name} (exit status {returncode}): {_last_error_line(tail)}")
    return "failed"


# --- Slurm -----------------------------------------------------------------------------------


def write_slurm(
    runs: list[Run],
    workdir: str,
    *,
    python: str = sys.executable,
    directives: list[str] = (),
    job_name: str = "fcn-sweep",
) -> str:
    """Write ``DIR/runs.txt`` (one run per line: name, then its flags) and ``DIR/sweep.sbatch``,
    an array job whose task ``i`` runs line ``i + 1``; return the script's path."""
    workdir = os.path.abspath(workdir)
    os.makedirs(os.path.join(workdir, "runs"), exist_ok=True)
    lines = [shlex.join([run.name, *run.flags]) for run in runs]
    write_atomic(os.path.join(workdir, "runs.txt"), "\n".join(lines) + "\n")
    extra = "".join(f"#SBATCH {d}\n" for d in directives)
    script = f"""#!/bin/bash
# Sweep of {len(runs)} runs, one array task each (generated by fcn_jax.sweep).
# Submit: sbatch {shlex.quote(os.path.join(workdir, "sweep.sbatch"))}
# Then:   python -m experiments.sweep --workdir={shlex.quote(workdir)} --aggregate_only
#SBATCH --job-name={job_name}
#SBATCH --array=0-{len(runs) - 1}
#SBATCH --output={workdir}/runs/slurm-%A_%a.out
{extra}set -euo pipefail
SWEEP_DIR={shlex.quote(workdir)}
PYTHON=${{PYTHON:-{shlex.quote(python)}}}
cd {shlex.quote(PROJECT_ROOT)}
export PYTHONPATH={shlex.quote(PROJECT_ROOT)}${{PYTHONPATH:+:$PYTHONPATH}}
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
"$PYTHON" -m experiments.train --workdir="$RUN_DIR" "$@" 2> "$RUN_DIR/stderr.log" || status=$?
if [ "$status" -ne 0 ]; then
  {{ echo "exit status $status"; tail -n {_ERROR_TAIL_LINES} "$RUN_DIR/stderr.log"; }} \\
    > "$RUN_DIR/error.txt"
  exit "$status"
fi
"""
    path = os.path.join(workdir, "sweep.sbatch")
    write_atomic(path, script)
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


# --- aggregation -----------------------------------------------------------------------------

_COLUMNS = (
    "test_accuracy",
    "pointing_game",
    "train_compiles",
    "eval_compiles",
    "train_examples_per_sec",
    "wall_time_s",
    "final_loss",
)


def collect(workdir: str, runs: list[Run]) -> list[dict]:
    """One row per run: name, grid values, seed, status, the summary's numbers, each eval
    size's accuracy (``acc_HxW``) and, for a failed run, its error line."""
    rows = []
    for run in runs:
        d = run_dir(workdir, run)
        row = {"name": run.name, **run.params, "seed": run.seed, "status": status(workdir, run)}
        if row["status"] == "finished":
            s = read_json(os.path.join(d, "summary.json"))
            row.update({k: s.get(k) for k in _COLUMNS})
            row.update({f"acc_{k}": v for k, v in s.get("eval_accuracy", {}).items()})
        elif row["status"] == "failed":
            row["error"] = _last_error_line(_tail(os.path.join(d, "error.txt"), _ERROR_TAIL_LINES))
        rows.append(row)
    return rows


def write_csv(rows: list[dict], grid_keys: list[str], path: str) -> None:
    sizes = sort_sizes({k[4:] for r in rows for k in r if k.startswith("acc_")})
    columns = ["name", *grid_keys, "seed", "status", *_COLUMNS, *(f"acc_{k}" for k in sizes)]
    columns.append("error")
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({c: ("" if row.get(c) is None else row.get(c)) for c in columns})
    write_atomic(path, buffer.getvalue())


def group_points(rows: list[dict], grid_keys: list[str]) -> dict[tuple, list[dict]]:
    """Rows by grid point (in plan order)."""
    points: dict[tuple, list[dict]] = {}
    for row in rows:
        points.setdefault(tuple(row.get(k) for k in grid_keys), []).append(row)
    return points


def summary_table(rows: list[dict], grid_keys: list[str]) -> str:
    """A markdown table: per grid point, finished runs and mean ± std over seeds."""
    sizes = sort_sizes({k[4:] for r in rows for k in r if k.startswith("acc_")})
    show = [s for s in ("28x16",) if s in sizes]
    head = [*(grid_keys or ["run"]), "finished", "test accuracy", "grid mean", *show]
    head += ["examples/s", "wall time (s)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for point, group in group_points(rows, grid_keys).items():
        done = [r for r in group if r["status"] == "finished"]

        def col(key, digits=3, done=done):
            return fmt(stats(r.get(key) for r in done), digits)

        grid_means = [np.mean([r[f"acc_{s}"] for s in sizes if f"acc_{s}" in r]) for r in done]
        cells = [*(str(v) for v in point)] if grid_keys else [group[0]["name"]]
        cells += [f"{len(done)}/{len(group)}", col("test_accuracy")]
        cells += [fmt(stats(grid_means)) if done else "–"]
        cells += [col(f"acc_{s}") for s in show]
        cells += [col("train_examples_per_sec", 0), col("wall_time_s", 1)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_results(rows: list[dict], grid_keys: list[str], path: str) -> None:
    """Test accuracy per grid point: mean ± std over seeds (bars), each seed a dot."""
    from fcn_jax.plots import plt, save_figure

    points = group_points(rows, grid_keys)
    labels = ["\n".join(f"{k}={v}" for k, v in zip(grid_keys, point)) or "run" for point in points]
    fig, ax = plt.subplots(figsize=(max(5, 1.1 * len(points)), 4.5))
    for i, group in enumerate(points.values()):
        values = [r["test_accuracy"] for r in group if r["status"] == "finished"]
        if not values:
            ax.text(
                i,
                0.02,
                "failed" if any(r["status"] == "failed" for r in group) else "pending",
                ha="center",
                color="red",
                rotation=90,
                va="bottom",
            )
            continue
        s = stats(values)
        ax.errorbar(i, s["mean"], yerr=s["std"] or 0, fmt="o", color="C0", capsize=5, ms=8)
        ax.scatter([i] * len(values), values, color="k", s=12, zorder=3)
    ax.set_xticks(range(len(points)), labels, fontsize=8, rotation=30, ha="right")
    ax.set_xlim(-0.6, len(points) - 0.4)
    ax.set_ylim(0, 1.02)
    ax.set_ylabel("test accuracy (own sizes)")
    ax.set_title("sweep: mean ± std over seeds (dots: seeds)")
    ax.grid(axis="y", alpha=0.3)
    save_figure(fig, path)


def aggregate(workdir: str, log=print) -> list[dict]:
    """Aggregate the sweep planned in ``workdir``: results.csv, results.png, printed table."""
    plan, runs = load_plan(workdir)
    keys = list(plan["grid"])
    rows = collect(workdir, runs)
    write_csv(rows, keys, os.path.join(workdir, "results.csv"))
    plot_results(rows, keys, os.path.join(workdir, "results.png"))
    counts = collections.Counter(r["status"] for r in rows)
    log(summary_table(rows, keys))
    log(", ".join(f"{n} {s}" for s, n in sorted(counts.items())) + f"; {workdir}/results.csv")
    for row in rows:
        if row["status"] == "failed":
            error_file = os.path.join(workdir, "runs", row["name"], "error.txt")
            log(f"failed: {row['name']}: {row['error']} (see {error_file})")
    return rows
