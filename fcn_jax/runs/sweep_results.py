"""A sweep's results: every run's summary into ``DIR/results.csv``, ``DIR/results.png`` (test
accuracy per grid point) and a printed markdown table (mean ± std over seeds)."""

from __future__ import annotations

import collections
import csv
import io
import os

import numpy as np

from fcn_jax.caveats import throughput_meaningful
from fcn_jax.outputs import write_atomic
from fcn_jax.runs.grid import Run
from fcn_jax.runs.rundir import RunDir
from fcn_jax.runs.stats import fmt, sort_sizes, stats
from fcn_jax.runs.sweep import load_plan

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
        rundir = RunDir.of(workdir, run.name)
        row = {"name": run.name, **run.params, "seed": run.seed, "status": rundir.status()}
        if row["status"] == "finished":
            s = rundir.summary()
            row.update({k: s.get(k) for k in _COLUMNS})
            row.update(steps=s.get("steps"), warning=s.get("warning"))  # not csv columns
            row.update({f"acc_{k}": v for k, v in s.get("eval_accuracy", {}).items()})
        elif row["status"] == "failed":
            row["error"] = rundir.error_line()
        rows.append(row)
    return rows


def _sizes(rows: list[dict]) -> list[str]:
    """The eval sizes of the rows' ``acc_HxW`` columns, sorted by area."""
    return sort_sizes({k[4:] for r in rows for k in r if k.startswith("acc_")})


def write_csv(rows: list[dict], grid_keys: list[str], path: str) -> None:
    columns = ["name", *grid_keys, "seed", "status", *_COLUMNS]
    columns += [*(f"acc_{k}" for k in _sizes(rows)), "error"]
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
    sizes = _sizes(rows)
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
        timed = [r for r in done if throughput_meaningful(r.get("steps"))]  # not smoke tests
        cells += [col("train_examples_per_sec", 0, timed), col("wall_time_s", 1)]
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
            failed = any(r["status"] == "failed" for r in group)
            text = "failed" if failed else "pending"
            ax.text(i, 0.02, text, ha="center", color="red", rotation=90, va="bottom")
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
    warned = [r for r in rows if r.get("warning")]
    if warned:  # one line, however many runs: each run's own log has its line
        first = warned[0]
        log(
            f"warning: {len(warned)} of {counts['finished']} finished runs mean little, e.g. "
            f"{first['name']}: {first['warning']}"
        )
    for row in rows:
        if row["status"] == "failed":
            error_file = RunDir.of(workdir, row["name"]).error_path
            log(f"failed: {row['name']}: {row['error']} (see {error_file})")
    return rows
