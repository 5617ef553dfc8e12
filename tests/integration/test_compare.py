"""experiments.compare end to end on a tiny config: report.md, compare.json, the runs'
summaries and the plots agree; a second invocation reuses the finished runs."""

import json
import os
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
from commands import REPO, cpu_devices
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from tiny import TINY_TRAIN

import fcn_jax.setup
from fcn_jax.config import TrainConfig
from fcn_jax.data import load_dataset, parse_size_policy
from fcn_jax.runs.compare import (
    DEFAULT_EXAMPLE_OPTIONS,
    STEP_GRID_VALUES,
    CompareConfig,
    comparison_defaults,
    run_comparison,
    shared_eval_sizes,
)
from fcn_jax.runs.stats import sort_sizes, stats

# The seed network without BatchNorm recalibration: fewer compiles than the default network.
TINY = {**TINY_TRAIN, "buckets": "auto:2", "model": "seed", "recalibrate_bn": False}
# mixed_step over 2 sizes, 24x24 among them (the fixed policy's program, compiled once): one
# new train compile instead of up to four for a 16-24 grid.
OPTIONS = dict(seeds=2, fixed_size="24", mixed_size="24x16-24x24:8", example_size="16-28")


def cli_flags(tfds_dir: str, workdir) -> list[str]:
    flags = [f"--{k}={v}" for k, v in {**TINY, **OPTIONS, "data_dir": tfds_dir}.items()]
    return [f"--workdir={workdir}", *flags]


@pytest.fixture(scope="module")
def compared(tfds_dir, tmp_path_factory):
    """One comparison through the command line (4 policies x 2 seeds), on 2 (CPU) devices with
    an eval batch size that does not split over them (rounded up to 32)."""
    load_dataset(TINY["dataset"], tfds_dir)  # build the data before any other process reads it
    workdir = tmp_path_factory.mktemp("compare")
    two = {"JAX_PLATFORMS": "cpu", **cpu_devices(2)}
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "experiments.compare",
            *cli_flags(tfds_dir, workdir),
            "--eval_batch_size=31",
        ],
        cwd=REPO,
        env={**os.environ, **two},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return workdir, out.stdout


def parse_table(markdown: str, heading: str) -> dict[str, dict[str, tuple]]:
    """The markdown table after ``heading``: row label → column → (mean, std or None)."""
    lines = markdown.split(heading, 1)[1].splitlines()
    rows = [line for line in lines if line.startswith("|")]
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip("|").split("|")])
    header, body = rows[0], rows[2:]
    table = {}
    for cells in body:
        parsed = {}
        for column, cell in zip(header[1:], cells[1:]):
            mean, _, std = cell.partition(" ± ")
            parsed[column] = (float(mean), float(std) if std else None)
        table[cells[0]] = parsed
    return table


def test_report_json_runs_and_plots_agree(compared):
    workdir, stdout = compared
    results = json.load(open(workdir / "compare.json"))
    report = (workdir / "report.md").read_text()
    policies = results["policies"]
    # tiny_variable varies in size: native stays
    assert sorted(policies) == ["fixed", "mixed_example", "mixed_step", "native"]
    assert results["seeds"] == [0, 1]
    assert "28x16" in results["eval_sizes"] and "24x24" in results["eval_sizes"]
    assert "--seeds=2" in " ".join(results["command"]) and "--seeds=2" in report
    assert results["machine"]["cpu_count"] == os.cpu_count()

    # Markdown table == compare.json (to the table's 3 decimals, ties rounded to even).
    table = parse_table(report, "## Accuracy per test size")
    assert list(table) == [*sort_sizes(results["eval_sizes"]), "own sizes"]
    for policy, r in policies.items():
        for size in results["eval_sizes"]:
            mean, std = table[size][policy]
            assert mean == pytest.approx(r["eval_accuracy"][size]["mean"], abs=6e-4)
            assert std == pytest.approx(r["eval_accuracy"][size]["std"], abs=6e-4)
        assert table["own sizes"][policy][0] == pytest.approx(r["test_accuracy"]["mean"], abs=6e-4)

    # compare.json per-seed values == each run's summary.json.
    for policy, r in policies.items():
        assert r["runs"] == [f"{policy}-seed0", f"{policy}-seed1"]
        summaries = [json.load(open(workdir / "runs" / n / "summary.json")) for n in r["runs"]]
        assert {s["train_size"] for s in summaries} == {r["train_size"]}
        assert {s["devices"] for s in summaries} == {2}
        for size, stat in r["eval_accuracy"].items():
            assert stat["values"] == [s["eval_accuracy"][size] for s in summaries]
            assert stat == stats(stat["values"])
        assert r["train_compiles"]["values"] == [s["train_compiles"] for s in summaries]
        assert r["pointing_game"]["values"] == [s["pointing_game"] for s in summaries]
        assert r["reused"] == [False, False]
    # What the comparison knows of its open dataset and model == what each run recorded.
    recorded = json.load(open(workdir / "runs" / "fixed-seed0" / "config.json"))
    assert results["dataset"] == recorded["dataset"]
    assert results["model"] == {"preset": recorded["config"]["model"], **recorded["model_spec"]}
    assert policies["fixed"]["train_size"] == "fixed:24x24"  # canonical: --fixed_size=24
    assert policies["fixed"]["train_compiles"]["values"] == [1, 1]
    assert policies["mixed_example"]["train_size"] == "mixed_example:16x16-28x28"
    assert max(policies["mixed_example"]["train_compiles"]["values"]) <= 2  # auto:2 buckets
    # The same number of training examples for every policy, and pixels reported.
    assert len({r["train_examples"]["mean"] for r in policies.values()}) == 1
    assert all(r["train_pixels"]["mean"] > 0 for r in policies.values())

    # Findings are in the report and printed; both plots are real PNGs.
    assert results["findings"] and all(f in report for f in results["findings"])
    assert results["findings"][0] in stdout
    for name, min_width in (("accuracy_vs_size.png", 300), ("heatmaps.png", 800)):
        with Image.open(workdir / name) as image:
            assert image.format == "PNG" and image.width >= min_width


def test_second_invocation_reuses_finished_runs(compared, tfds_dir):
    """The library call with the command line's config retrains nothing."""
    workdir, _ = compared
    runs = sorted((workdir / "runs").iterdir())
    mtimes = {p.name: os.path.getmtime(p / "summary.json") for p in runs}
    config = CompareConfig(train=TrainConfig(**{**TINY, "data_dir": tfds_dir}), **OPTIONS)
    results = run_comparison(config, str(workdir))
    assert all(r["reused"] == [True, True] for r in results["policies"].values())
    assert {p.name: os.path.getmtime(p / "summary.json") for p in runs} == mtimes
    assert "(reused)" in (workdir / "report.md").read_text()


def test_the_dataset_is_opened_once(tfds_dir, tmp_path, monkeypatch):
    """Every run of a library call trains on the comparison's open dataset: the comparison
    and its runs open datasets through ``fcn_jax.setup.open_dataset``, once in all."""
    opened, real = [], fcn_jax.setup.load_dataset

    def counted(*args, **kw):
        opened.append(args)
        return real(*args, **kw)

    monkeypatch.setattr(fcn_jax.setup, "load_dataset", counted)
    train = TrainConfig(**{**TINY, "data_dir": tfds_dir})
    config = CompareConfig(train=train, seeds=2, policies=("fixed",), fixed_size="24")
    results = run_comparison(config, str(tmp_path))
    assert len(opened) == 1, f"opened {len(opened)} times: a run opened the dataset again"
    assert results["policies"]["fixed"]["reused"] == [False, False]
    assert results["dataset"]["name"] == TINY["dataset"]


@settings(max_examples=30, deadline=None)
@given(
    sizes=st.lists(st.tuples(st.integers(8, 90), st.integers(8, 90)), min_size=1, max_size=6),
    fixed=st.integers(10, 64),
)
def test_default_ranges_cover_the_test_sizes_and_the_fixed_size(sizes, fixed):
    dataset = SimpleNamespace(
        spatial_dims=2, train=SimpleNamespace(common_size=lambda: (fixed, fixed))
    )
    policies = CompareConfig().size_policies(dataset, sizes)
    assert policies["fixed"].spec() == f"fixed:{fixed}x{fixed}"
    everything = [*sizes, (fixed, fixed)]
    example = policies["mixed_example"]
    assert all(np.all(np.asarray(example.low) <= s) for s in everything)
    assert all(np.all(np.asarray(example.high) >= s) for s in everything)
    step = policies["mixed_step"]
    assert (fixed, fixed) in step.grid()
    assert all(np.all(np.asarray(step.low) <= s) for s in everything)
    assert all(np.all(np.asarray(step.high) >= s) for s in everything)


def test_default_ranges_on_the_default_grid():
    dataset = SimpleNamespace(spatial_dims=2, train=SimpleNamespace(common_size=lambda: (28, 28)))
    grid = shared_eval_sizes(TrainConfig().resolved().for_data(2).eval_sizes)[0]
    policies = CompareConfig().size_policies(dataset, list(grid))
    # 4 x 4 = 16 compiles, 28 among them
    assert policies["mixed_step"] == parse_size_policy("mixed_step:14-56:14", 2)
    assert len(policies["mixed_step"].grid()) == STEP_GRID_VALUES[2] ** 2
    example = parse_size_policy(f"mixed_example:16-56{DEFAULT_EXAMPLE_OPTIONS}", 2)
    assert policies["mixed_example"] == example


def test_every_policy_trains_at_least_min_epochs_unless_a_length_is_given():
    defaults = comparison_defaults()
    steps, min_epochs = defaults["steps"], defaults["min_epochs"]
    base = TrainConfig().resolved(defaults)  # the length waits for the data
    small = steps * 64 // min_epochs  # the default steps already cover min_epochs epochs
    assert (base.for_data(2, small).steps, base.for_data(2, small).epochs) == (steps, None)
    large = base.for_data(2, 50_000)
    assert (large.steps, large.epochs, large.min_epochs) == (None, min_epochs, None)
    given = [TrainConfig(steps=100), TrainConfig(epochs=1.0)]
    for explicit in [*given, TrainConfig(recipe="digits"), TrainConfig(recipe="signals")]:
        resolved = explicit.resolved(defaults)
        bound = resolved.for_data(2, 50_000)
        assert (bound.steps, bound.epochs) == (resolved.steps, resolved.epochs)


def test_bad_options_fail_with_one_line(tfds_dir, tmp_path):
    base = TrainConfig(**{**TINY, "data_dir": tfds_dir})
    with pytest.raises(ValueError, match="--policies"):
        CompareConfig(train=base, policies=("fixed", "bogus")).validate()
    with pytest.raises(ValueError, match="--train_size"):
        CompareConfig(train=TrainConfig(**{**TINY, "train_size": "fixed:24"})).validate()
    with pytest.raises(ValueError, match="fixed:0"):
        run_comparison(CompareConfig(train=base, fixed_size="0"), str(tmp_path))
