"""Sweep results (fcn_jax.runs.sweep_results): mean and std over seeds per grid point, the
unfinished runs pending, results.csv."""

import csv

from fcn_jax.outputs import write_json
from fcn_jax.runs import grid as grids
from fcn_jax.runs import sweep, sweep_results


def test_aggregate_mean_std_over_seeds(tmp_path):
    runs = grids.plan_runs({"learning_rate": [1e-3, 3e-3]}, [0, 1], {})
    sweep.prepare(str(tmp_path), runs, {"learning_rate": [1e-3, 3e-3]}, [0, 1], {}, None)
    accs = [0.4, 0.6, 0.9, None]  # the last run never finished
    for run, acc in zip(runs, accs):
        if acc is not None:
            summary = {"test_accuracy": acc, "eval_accuracy": {"28x16": acc / 2}, "steps": 6}
            write_json(str(tmp_path / "runs" / run.name / "summary.json"), summary)
    lines = []
    rows = sweep_results.aggregate(str(tmp_path), log=lines.append)
    assert [r["status"] for r in rows] == ["finished", "finished", "finished", "pending"]
    table = lines[0]
    assert "| 0.001 | 2/2 | 0.500 ± 0.141 | 0.250 ± 0.071 | 0.250 ± 0.071 |" in table
    assert "| 0.003 | 1/2 | 0.900 |" in table
    with open(tmp_path / "results.csv") as f:
        assert [r["status"] for r in csv.DictReader(f)][-1] == "pending"
