"""Wall time of ``python -m experiments.compare`` (with no flags: the default comparison)
against the default's 5-minute budget.

    python -m benchmarks.compare_budget                      # in a temporary directory
    python -m benchmarks.compare_budget --workdir=/tmp/compare_default   # or --keep
    python -m benchmarks.compare_budget -- --seeds=2         # extra experiments.compare flags

Runs the comparison in a fresh workdir (every run trains) in its own process, as a user would,
and prints its wall time (``compare.json``) against the budget, naming the comparison by the
flags it was given ("default compare" only without any), the machine's load (the budget
assumes a 2-core CPU not shared with other jobs) and the accuracies the runs reached.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile

from absl import app, flags

from fcn_jax.runs.stats import load_average

BUDGET_S = 300.0

flags.DEFINE_string("workdir", None, "keep the comparison here (default: a temporary directory)")
flags.DEFINE_boolean("keep", False, "keep the temporary directory")


def run(workdir: str, extra_flags: list[str]) -> dict:
    """The comparison's ``compare.json``, run in ``workdir`` (which must hold no runs)."""
    if os.path.exists(os.path.join(workdir, "runs")):
        raise app.UsageError(f"{workdir} already holds runs (they would be reused)")
    command = [sys.executable, "-m", "experiments.compare", f"--workdir={workdir}", *extra_flags]
    proc = subprocess.run(command, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"experiments.compare failed:\n{proc.stderr[-3000:]}")
    with open(os.path.join(workdir, "compare.json")) as f:
        return json.load(f)


def headline(seconds: float, extra_flags: list[str]) -> str:
    """The verdict line, naming the comparison by its flags: the budget is the default's, so
    a run with flags added is not called "default"."""
    verdict = "met" if seconds <= BUDGET_S else "MISSED"
    if not extra_flags:
        return f"default compare: {seconds:.1f} s ({verdict} the {BUDGET_S:.0f} s budget)"
    return (
        f"compare {shlex.join(extra_flags)}: {seconds:.1f} s ({verdict} the default's "
        f"{BUDGET_S:.0f} s budget)"
    )


def main(argv) -> None:
    f, load = flags.FLAGS, load_average()
    workdir = f.workdir or tempfile.mkdtemp(prefix="compare_budget_")
    try:
        results = run(workdir, argv[1:])
    finally:
        if not (f.workdir or f.keep):
            shutil.rmtree(workdir, ignore_errors=True)
    print(headline(results["wall_time_s"], argv[1:]))
    print(
        f"{os.cpu_count()} CPUs, 1-min load average {load:.2f} before, {load_average():.2f} after"
    )
    if f.keep:
        print(f"outputs: {workdir}/report.md")
    for policy, r in results["policies"].items():
        acc = {k: v["mean"] for k, v in r["eval_accuracy"].items()}
        best = max(acc, key=acc.get)
        print(
            f"  {policy:13s} {r['train_size']:24s} own sizes {r['test_accuracy']['mean']:.3f}  "
            f"best {best} {acc[best]:.3f}  28x16 {acc.get('28x16', float('nan')):.3f}  "
            f"run {r['wall_time_s']['mean']:.0f} s"
        )


if __name__ == "__main__":
    app.run(main)
