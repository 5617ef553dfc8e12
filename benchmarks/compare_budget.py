"""Wall time of the default ``python -m experiments.compare`` against its 5-minute budget.

    python -m benchmarks.compare_budget                      # in a temporary directory
    python -m benchmarks.compare_budget --workdir=/tmp/compare_default --keep

Runs the comparison with its default flags (fresh workdir: every run trains) in a separate
process, as a user would, and prints its wall time, whether it met the budget, the load of
the machine (the budget assumes a 2-core CPU not shared with other jobs) and the accuracies
the default run reached.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

BUDGET_S = 300.0


def measure(workdir: str, extra_flags: list[str] = ()) -> dict:
    """Run the comparison in ``workdir`` (which must not hold finished runs) and time it."""
    if os.path.exists(os.path.join(workdir, "runs")):
        raise SystemExit(f"{workdir} already holds runs (they would be reused): pick a new one")
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "experiments.compare", f"--workdir={workdir}", *extra_flags],
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - start
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode:
        raise SystemExit(f"experiments.compare failed:\n{proc.stderr[-3000:]}")
    with open(os.path.join(workdir, "compare.json")) as f:
        results = json.load(f)
    return {
        "wall_time_s": seconds,
        "met_budget": seconds <= BUDGET_S,
        "load_before": load_before,
        "load_after": os.getloadavg()[0],
        "cpu_count": os.cpu_count(),
        "cpu_seconds": usage.ru_utime + usage.ru_stime,
        "results": results,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", help="keep the comparison here (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument("flags", nargs="*", help="extra experiments.compare flags (after --)")
    args = parser.parse_args()
    workdir = args.workdir or tempfile.mkdtemp(prefix="compare_budget_")
    try:
        m = measure(workdir, args.flags)
    finally:
        if not (args.workdir or args.keep):
            shutil.rmtree(workdir, ignore_errors=True)
    verdict = "met" if m["met_budget"] else "MISSED"
    print(f"default compare: {m['wall_time_s']:.1f} s ({verdict} the {BUDGET_S:.0f} s budget)")
    print(
        f"machine: {m['cpu_count']} CPUs, 1-min load average {m['load_before']:.2f} before, "
        f"{m['load_after']:.2f} after (other jobs inflate the time); the comparison used "
        f"{m['cpu_seconds']:.0f} CPU seconds"
    )
    for policy, r in m["results"]["policies"].items():
        acc = {k: v["mean"] for k, v in r["eval_accuracy"].items()}
        trained = r["train_size"].partition(":")[2]
        at_trained = acc.get(f"{trained}x{trained}", acc.get(trained))
        best = max(acc, key=acc.get)
        print(
            f"  {policy:7s} {r['train_size']:16s} own sizes {r['test_accuracy']['mean']:.3f}  "
            f"best {best} {acc[best]:.3f}  28x16 {acc.get('28x16', float('nan')):.3f}  "
            + (f"at trained size {at_trained:.3f}  " if at_trained is not None else "")
            + f"run {r['wall_time_s']['mean']:.0f} s"
        )
    if args.workdir or args.keep:
        print(f"outputs: {workdir}/report.md")


if __name__ == "__main__":
    main()
