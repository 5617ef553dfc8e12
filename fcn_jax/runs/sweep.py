"""Sweeps: a grid over training flags × seeds (:mod:`fcn_jax.runs.grid`), its plan on disk,
and its runs launched (:mod:`fcn_jax.runs.launch`) after the reuse rule
(:meth:`RunDir.reusable <fcn_jax.runs.rundir.RunDir.reusable>`) has skipped the finished ones.

Files: ``DIR/sweep.json`` (the plan, read by ``--aggregate_only``), each run's
``DIR/runs/<name>/sweep_run.json`` (its entry of the plan) and, for Slurm, ``DIR/runs.txt``
and ``DIR/sweep.sbatch``; :mod:`fcn_jax.runs.sweep_results` aggregates them.
"""

from __future__ import annotations

import dataclasses
import os

from fcn_jax.outputs import read_json, write_json
from fcn_jax.runs import launch
from fcn_jax.runs.grid import Run
from fcn_jax.runs.rundir import RunDir


def prepare(workdir: str, runs: list[Run], grid: dict, seeds: list[int], base: dict, command):
    """Write ``DIR/sweep.json`` and each run's ``sweep_run.json``."""
    workdir = os.path.abspath(workdir)
    for run in runs:
        write_json(RunDir.of(workdir, run.name).file("sweep_run.json"), run.to_dict())
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


def reused(workdir: str, runs: list[Run], log=print) -> set[str]:
    """The names of the runs the reuse rule keeps as they are (logged as skipped)."""
    names = set()
    for run in runs:
        if RunDir.of(workdir, run.name).reusable(run.config):
            log(f"skip {run.name}: finished with the same results-relevant config")
            names.add(run.name)
    return names


def run_local(
    runs: list[Run],
    workdir: str,
    *,
    command: list[str],
    cwd: str,
    max_parallel: int = 2,
    log=print,
    cluster=None,
) -> dict[str, str]:
    """Run every run the reuse rule does not skip, locally; return name → ``finished``,
    ``skipped`` (reused), ``failed`` or ``busy`` (another live run holds its directory). A
    finished run with other results-relevant settings goes back to training (re-evaluated, or
    refused in its error.txt). ``cluster`` (:class:`fcn_jax.process.Cluster`): every host runs
    this sweep, and run ``k`` is one process on each, coordinated by process 0's host on port
    ``PORT + 1 + k``."""
    skip = reused(workdir, runs, log)
    todo = [r for r in runs if r.name not in skip]
    before = {r.name: RunDir.of(workdir, r.name).summary() for r in todo}
    process_id = cluster.process_id if cluster else 0
    if cluster:  # the port is the run's place in the whole plan: the same on every host
        k = {r.name: i for i, r in enumerate(runs)}
        todo = [
            dataclasses.replace(r, flags=r.flags + cluster.of_run(k[r.name]).flags()) for r in todo
        ]
    status = launch.run_local(
        todo, workdir, command=command, cwd=cwd, max_parallel=max_parallel, log=log,
        process_id=process_id,
    )  # fmt: skip
    for name, old in before.items():
        rundir = RunDir.of(workdir, name)
        if process_id == 0 and old is not None and status[name] == "finished":
            rundir.keep_training_measurements(old, rundir.summary())
    return {r.name: "skipped" if r.name in skip else status[r.name] for r in runs}


def write_slurm(runs: list[Run], workdir: str, *, command: list[str], cwd: str, **kw) -> str:
    """``launch.write_slurm`` (``kw``: its options) after the reuse rule: the array's tasks
    skip finished runs, so a finished run with other results-relevant settings is refused
    here."""
    for run in runs:
        rundir = RunDir.of(workdir, run.name)
        differences = rundir.differences(run.config) if rundir.is_finished() else {}
        if differences:
            field, (old, new) = next(iter(differences.items()))
            raise ValueError(
                f"{rundir.path} holds a finished run with --{field}={old!r}, this sweep's is "
                f"{new!r}: use a new --workdir (or --launcher=local, which re-evaluates or "
                "refuses it)"
            )
    return launch.write_slurm(runs, workdir, command=command, cwd=cwd, **kw)
