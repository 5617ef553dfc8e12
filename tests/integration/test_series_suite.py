"""The time-series suite (``experiments.series``): its plan, its report from finished runs, and
one short run end to end on a dataset an installed aeon ships."""

import json
import os
import subprocess
import sys

from commands import REPO
from series_data import shipped

from fcn_jax.outputs import write_json
from fcn_jax.runs import series as suite
from fcn_jax.runs.rundir import RunDir

FIXED = suite.Entry("GunPoint", "ucr:GunPoint", (150, 150), 1)
VARIABLE = suite.Entry("JapaneseVowels", "ucr:JapaneseVowels", (7, 29), 12)


def test_plan_resamples_only_variable_lengths_and_base_flags_win():
    runs = suite.plan([FIXED, VARIABLE], list(suite.VARIANTS), 2, {"steps": 5})
    names = [r.name for r in runs]
    assert len(runs) == 2 * 2 + 4 * 2
    assert "GunPoint__recipe_resampled__seed0" not in names
    by_name = {r.name: r for r in runs}
    resampled = by_name["JapaneseVowels__fcn_resampled__seed1"]
    assert "--train_size=fixed:29" in resampled.flags and "--eval_sizes=29" in resampled.flags
    assert "--model=fcn" in resampled.flags and "--seed=1" in resampled.flags
    native = by_name["JapaneseVowels__recipe__seed0"].config.resolved()
    assert native.train_size.kind == "native" and native.steps == 5 and native.recipe == "series"


def test_cross_validation_puts_seed_k_on_fold_k():
    entry = suite.Entry("GunPoint", "ucr:GunPoint", (150, 150), 1, cv=True)
    runs = suite.plan([entry], ["recipe"], 5, {})
    assert [r.config.dataset for r in runs] == [f"ucr:GunPoint/fold{k % 4}" for k in range(5)]
    assert [r.name for r in runs][-1] == "GunPoint__recipe__seed4"


def test_report_gives_mean_std_beside_anchors_and_counts_missing_runs(tmp_path):
    runs = suite.plan([FIXED, VARIABLE], ["recipe", "recipe_resampled"], 2, {})
    accuracies = {"GunPoint": [1.0, 0.98], "JapaneseVowels": [0.99, 0.97]}
    for run in runs:
        if run.name == "JapaneseVowels__recipe__seed1":
            continue  # not finished: reported as 1 of 2
        acc = accuracies[run.params["dataset"]][run.seed]
        summary = {"test_accuracy": acc, "eval_accuracy": {"29": acc - 0.5, "150": acc}}
        write_json(RunDir.of(str(tmp_path), run.name).summary_path, summary)
    results = suite.collect(str(tmp_path), [FIXED, VARIABLE], runs)
    assert results["GunPoint"]["variants"]["recipe"]["mean"] == 0.99
    assert results["JapaneseVowels"]["variants"]["recipe_resampled"]["values"] == [0.49, 0.47]
    assert results["JapaneseVowels"]["target"] == 0.993  # the best FCN anchor
    assert results["GunPoint"]["target"] == 1.0
    text = suite.write_outputs(str(tmp_path), results, "test", ["-m", "experiments.series"])
    assert "| GunPoint | 150 | 1 | 0.990 ± 0.014 |  | 1.000 | 1.000 |" in text
    assert "| JapaneseVowels | 7–29 | 12 | 0.990 (1 of 2) | 0.480 ± 0.014 | 0.993 |" in text
    saved = json.loads((tmp_path / "series.json").read_text())
    assert saved["datasets"]["JapaneseVowels"]["variants"]["recipe"]["missing"] == [
        "JapaneseVowels__recipe__seed1"
    ]
    assert (tmp_path / "series.png").stat().st_size > 0


def test_a_short_suite_runs_end_to_end_and_reuses_finished_runs(tmp_path):
    shipped("ItalyPowerDemand")
    command = [
        sys.executable, "-m", "experiments.series", f"--workdir={tmp_path}",
        "--datasets=ItalyPowerDemand", "--seeds=1", "--variants=recipe", "--model=fcn",
        "--width=0.0625", "--steps=2", "--log_every=1", "--checkpoint_every=2",
    ]  # fmt: skip
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    first = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr[-2000:]
    assert "| ItalyPowerDemand | 24 | 1 |" in first.stdout
    summary = RunDir.of(str(tmp_path), "ItalyPowerDemand__recipe__seed0").summary()
    assert summary["steps"] == 2 and summary["dataset"] == "ucr:ItalyPowerDemand"
    again = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "skip ItalyPowerDemand__recipe__seed0" in again.stdout
