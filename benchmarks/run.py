"""All benchmarks in one table: compile budget, padding, train-step throughput, PyTorch eager,
time to accuracy, training end to end against the step alone.

    python -m benchmarks.run [--quick] [--out=DIR] [--data_dir=DIR] [--parts=1,3]

Prints the table and writes it to ``DIR/benchmarks.json`` and ``DIR/benchmarks.md`` (default
``runs/benchmarks``). Each row has a name, value, unit, target, met (yes/no/n.a.) and a note.
``--quick`` takes a few minutes; ``--smoke`` (tiny data, one step per measurement) only checks
that every part runs and is used by the tests. A part that raises becomes a row with no value
whose note starts with ``failed:``, and the exit status is then 1.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import time
import traceback

import jax

from benchmarks import parts
from benchmarks.bench_table import Row, to_markdown, to_text
from fcn_jax.outputs import write_atomic, write_json

DEFAULT_OUT = os.path.join("runs", "benchmarks")


def cpu_model() -> str:
    """The CPU's model name (Linux), else the platform's processor string."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def machine() -> dict:
    """What the numbers were measured on (load average: other processes sharing the cores)."""
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "load_average_1m": load[0],
        "jax": jax.__version__,
        "backend": jax.default_backend(),
        "devices": f"{jax.device_count()} x {jax.devices()[0].device_kind}",
        "python": platform.python_version(),
    }


def run_parts(bench: parts.Bench, selected: set[str] | None) -> tuple[list[Row], dict]:
    """Run the selected parts in order; a failing part becomes one ``failed:`` row."""
    rows, seconds = [], {}
    for title, measure in parts.PARTS:
        if selected and title.split()[0] not in selected:
            continue
        start = time.perf_counter()
        print(f"[{title}] ...", file=sys.stderr, flush=True)
        try:
            rows += measure(bench)
        except Exception as e:  # report and go on with the other parts
            traceback.print_exc()
            rows.append(
                Row(title, "part failed", None, "", note=f"failed: {type(e).__name__}: {e}")
            )
        seconds[title] = time.perf_counter() - start
        print(f"[{title}] {seconds[title]:.1f} s", file=sys.stderr, flush=True)
    return rows, seconds


def header(result: dict) -> str:
    """The markdown paragraph above the table."""
    m = result["machine"]
    return (
        f"# Benchmarks ({result['level']})\n\n"
        f"{result['date']}; {m['cpu']}, {m['cores']} cores (load average "
        f"{m['load_average_1m']:.1f} at start, {_load(result)} at the end: shared with other "
        f"processes), JAX {m['jax']} "
        f"on {m['devices']}; {result['seconds']:.0f} s in all."
    )


def _load(result: dict) -> str:
    load = result.get("load_average_1m_end")
    return "?" if load is None else f"{load:.1f}"


def write_results(out: str, result: dict) -> None:
    """``benchmarks.json`` and ``benchmarks.md`` in ``out``, each written atomically."""
    write_json(os.path.join(out, "benchmarks.json"), result)
    write_atomic(os.path.join(out, "benchmarks.md"), to_markdown(result["rows"], header(result)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    level = parser.add_mutually_exclusive_group()
    level.add_argument("--quick", action="store_true", help="a few minutes instead of ~10")
    level.add_argument("--smoke", action="store_true", help="tiny data; for tests only")
    parser.add_argument("--out", default=DEFAULT_OUT, help="directory for the table files")
    parser.add_argument("--data_dir", default=None, help="TFDS data directory")
    parser.add_argument("--parts", default=None, help="comma-separated part numbers, e.g. 1,3")
    args = parser.parse_args(argv)

    settings = parts.LEVELS["smoke" if args.smoke else "quick" if args.quick else "full"]
    selected = set(args.parts.split(",")) if args.parts else None
    start, date = time.perf_counter(), datetime.datetime.now().astimezone()
    info = machine()
    rows, seconds = run_parts(parts.Bench(settings, args.data_dir), selected)
    result = {
        "level": settings.level,
        "date": date.isoformat(timespec="seconds"),
        "machine": info,
        "seconds": time.perf_counter() - start,
        "part_seconds": seconds,
        "load_average_1m_end": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "rows": [r.to_dict() for r in rows],
    }
    write_results(args.out, result)
    print(header(result))
    print(to_text(result["rows"]))
    print(f"wrote {args.out}/benchmarks.json and benchmarks.md")
    return 1 if any(r["note"].startswith("failed:") for r in result["rows"]) else 0


if __name__ == "__main__":
    sys.exit(main())
