"""Runs too short, or too near chance, for their numbers to mean much (fcn_jax/caveats.py):
the one-line warning of a run and of a comparison's report, and the examples/s left out."""

import logging

from test_report import fixed_vs_mixed
from tiny import TINY_TRAIN

from fcn_jax.caveats import MIN_STEPS, run_warning, throughput_meaningful
from fcn_jax.outputs import write_json
from fcn_jax.runs import grid as grids
from fcn_jax.runs import sweep, sweep_results
from fcn_jax.runs.report import findings, report_markdown


def test_short_and_near_chance_runs_get_one_line():
    assert run_warning(MIN_STEPS, 0.1, 10) is None
    assert run_warning(None, None, None) is None  # nothing known: nothing to say
    short = run_warning(40, 0.1, 10)
    assert short == (
        f"undertrained: only 40 steps (fewer than {MIN_STEPS}): a smoke test, its examples/s is "
        "not reported (train longer: --steps or --epochs)"
    )
    chance = run_warning(1500, 1.9, 10)  # ln 10 = 2.30: 1.9 is above half of it
    assert "final train loss 1.9 is above half the loss of guessing (2.3 for 10 classes)" in chance
    assert run_warning(1500, 1.1, 10) is None
    assert "\n" not in run_warning(40, 1.9, 10)
    assert throughput_meaningful(None) and not throughput_meaningful(MIN_STEPS - 1)


def with_steps(results: dict, steps: int) -> dict:
    for r in results["policies"].values():
        r["steps"] = {"mean": steps, "std": 0.0, "values": [steps] * 3}
    results["findings"] = findings(results)
    return results


def test_report_of_short_runs_warns_and_leaves_examples_per_second_out():
    md = report_markdown(with_steps(fixed_vs_mixed(), 40))
    warnings = [line for line in md.splitlines() if line.startswith("- Warning: ")]
    assert warnings == [
        f"- Warning: {p}: undertrained: only 40 steps (fewer than {MIN_STEPS}): a smoke test, "
        "its examples/s is not reported (train longer: --steps or --epochs)"
        for p in ("fixed", "mixed_example")
    ]
    assert "examples/s" not in md.split("- Training cost: ")[1].split("\n")[0]
    cost = md.split("## Cost and localization\n\n", 1)[1].splitlines()
    assert [row.split(" | ")[4] for row in cost[2:4]] == ["–", "–"]


def test_report_of_long_runs_is_unchanged():
    md = report_markdown(with_steps(fixed_vs_mixed(), 1200))
    assert "- Warning:" not in md and "fixed 1 compile(s) at 1100 examples/s" in md
    cost = md.split("## Cost and localization\n\n", 1)[1].splitlines()
    assert cost[2].split(" | ")[4] == "1100 ± 100"


def test_a_short_run_says_so_in_its_log_and_summary(tfds_dir, tmp_path, caplog):
    from fcn_jax.config import TrainConfig
    from fcn_jax.run import train_and_evaluate

    config = TrainConfig(**{**TINY_TRAIN, "data_dir": tfds_dir, "buckets": "auto:2"})
    with caplog.at_level(logging.WARNING):
        summary = train_and_evaluate(config, str(tmp_path / "run"))
    assert summary["warning"].startswith("undertrained: only 6 steps (fewer than")
    lines = [r.getMessage() for r in caplog.records if "undertrained" in r.getMessage()]
    assert lines == [f"{tmp_path / 'run'}: {summary['warning']}"]


def test_sweep_table_leaves_out_the_examples_per_second_of_short_runs(tmp_path):
    grid = {"steps": [40, 400]}
    runs = grids.plan_runs(grid, [0], {})
    sweep.prepare(str(tmp_path), runs, grid, [0], {}, None)
    for run, speed in zip(runs, (500.0, 2000.0)):
        steps = run.params["steps"]
        summary = {"test_accuracy": 0.5, "eval_accuracy": {"28x16": 0.5}, "steps": steps}
        summary["train_examples_per_sec"] = speed
        summary["warning"] = run_warning(steps, 0.1, 10)
        write_json(str(tmp_path / "runs" / run.name / "summary.json"), summary)
    lines = []
    sweep_results.aggregate(str(tmp_path), log=lines.append)
    rows = {line.split(" | ")[0]: line.split(" | ") for line in lines[0].splitlines()[2:]}
    assert rows["| 40"][-2] == "–" and rows["| 400"][-2] == "2000"
    (warning,) = [line for line in lines if line.startswith("warning: ")]
    assert warning.startswith("warning: 1 of 2 finished runs mean little, e.g. ")
    assert warning.endswith(f"{runs[0].name}: {run_warning(40, 0.1, 10)}")
