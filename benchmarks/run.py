"""All benchmarks in one table, one module per part in ``benchmarks/parts/``.

    python -m benchmarks.run [--quick] [--out=DIR] [--data_dir=DIR] [--parts=1,3]

Prints the table and writes ``DIR/benchmarks.json`` and ``DIR/benchmarks.md`` (default
``runs/benchmarks``). ``--quick`` shortens every part (its time: docs/benchmarks.md);
``--smoke`` (tiny data, a step or two per measurement; for the tests) checks that every part
runs. A part that raises becomes a row with no value whose note starts with ``failed:``, and the
exit status is then 1.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import sys
import time
import traceback

from absl import app, flags

from benchmarks.common import Row, to_markdown
from benchmarks.parts import (
    LEVELS,
    compile_budget,
    end_to_end,
    host_overhead,
    padding,
    throughput,
    time_to_accuracy,
    vs_torch,
)
from fcn_jax.outputs import write_atomic, write_json
from fcn_jax.runs.stats import load_average, machine_info

PARTS = (compile_budget, padding, throughput, vs_torch, time_to_accuracy, end_to_end, host_overhead)

flags.DEFINE_boolean("quick", False, "shorter measurements of every part")
flags.DEFINE_boolean("smoke", False, "tiny data; for tests only")
flags.DEFINE_string("out", os.path.join("runs", "benchmarks"), "directory for the table files")
flags.DEFINE_string("data_dir", None, "TFDS data directory")
flags.DEFINE_list("parts", None, "part numbers to run, e.g. 1,3 (default: all)")


def measure(level: str, out: str, data_dir: str | None = None, parts=()) -> int:
    """Run the parts of ``level`` (full, quick or smoke; ``parts``: their numbers, default
    all) and write the table; 1 if a part failed, else 0."""
    settings = dataclasses.replace(LEVELS[level], data_dir=data_dir)
    start, date, info = time.perf_counter(), datetime.datetime.now().astimezone(), machine_info()
    rows, seconds = [], {}
    for part in (p for p in PARTS if not parts or p.PART.split()[0] in parts):
        print(f"[{part.PART}] ...", file=sys.stderr, flush=True)
        part_start = time.perf_counter()
        try:
            rows += [r.to_dict() for r in part.rows(settings)]
        except Exception as e:  # report and go on with the other parts
            traceback.print_exc()
            note = f"failed: {type(e).__name__}: {e}"
            rows.append(Row(part.PART, "part failed", None, "", note=note).to_dict())
        seconds[part.PART] = time.perf_counter() - part_start
        print(f"[{part.PART}] {seconds[part.PART]:.1f} s", file=sys.stderr, flush=True)
    total, end, stamp = time.perf_counter() - start, load_average(), date.isoformat("T", "seconds")
    header = (
        f"# Benchmarks ({level})\n\n{stamp}; {info['cpu']}, {info['cores']} cores (load average "
        f"{info['load_average_1m']:.1f} at start, {end:.1f} at the end: shared with other "
        f"processes), JAX {info['jax']} on {len(info['devices'])} x {info['device_kind']}; "
        f"{total:.0f} s in all."
    )
    result = dict(level=level, date=stamp, machine=info, seconds=total, part_seconds=seconds)
    write_json(
        os.path.join(out, "benchmarks.json"), {**result, "load_average_1m_end": end, "rows": rows}
    )
    write_atomic(os.path.join(out, "benchmarks.md"), to_markdown(rows, header))
    print(to_markdown(rows, header) + f"\nwrote {out}/benchmarks.json and benchmarks.md")
    return int(any(r["note"].startswith("failed:") for r in rows))


def main(argv) -> int:
    f = flags.FLAGS
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if f.quick and f.smoke:
        raise app.UsageError("--quick and --smoke: give one")
    level = "smoke" if f.smoke else "quick" if f.quick else "full"
    return measure(level, f.out, f.data_dir, f.parts)


if __name__ == "__main__":
    app.run(main)
