"""fcn_jax.runs.report on hand-made comparison results (no training): the findings' sentences,
report.md's tables (mean ± std), and the files write_report leaves (atomically)."""

import json
import os

import pytest
from PIL import Image

import fcn_jax.outputs
from fcn_jax.config import TrainConfig
from fcn_jax.data import parse_size_policy
from fcn_jax.runs.compare import aggregate_policy
from fcn_jax.runs.report import findings, heatmaps_figure, report_markdown, write_report
from fcn_jax.runs.rundir import run_name
from fcn_jax.sizes import format_size

SIZES_2D = ("16x16", "28x16", "28x28", "40x40")  # already in sort_sizes order (by area)

# Per-seed accuracies per test size. fixed (trained at 28x28) falls off away from 28x28;
# mixed_example is flat, beats fixed at three sizes and is 1 point below at 28x28.
FIXED = {
    "16x16": [0.60, 0.62, 0.64],
    "28x16": [0.80, 0.82, 0.84],
    "28x28": [0.96, 0.98, 1.00],
    "40x40": [0.68, 0.70, 0.72],
}
MIXED = {
    "16x16": [0.90, 0.91, 0.92],
    "28x16": [0.95, 0.96, 0.97],
    "28x28": [0.96, 0.97, 0.98],
    "40x40": [0.95, 0.96, 0.97],
}


def summaries(accuracy: dict, *, test, compiles, speed, loss, pixels, pointing=None) -> list:
    """Per-seed run summaries (summary.json's fields the comparison reads)."""
    seeds = len(test)
    out = []
    for k in range(seeds):
        s = {
            "eval_accuracy": {size: v[k] for size, v in accuracy.items()},
            "test_accuracy": test[k],
            "num_params": 1234,
            "train_compiles": compiles,
            "eval_compiles": 4,
            "train_examples_per_sec": speed[k],
            "wall_time_s": 10.0 + k,
            "final_loss": loss[k],
            "train_examples": 1600,
            "train_pixels": pixels,
            "train_padded_pixels": pixels * 1.25,
        }
        if pointing is not None:
            s["pointing_game"] = pointing[k]
            s["eval_pointing_game"] = {size: pointing[k] for size in accuracy}
        out.append(s)
    return out


def make_results(per_policy: dict, *, spatial_dims=2, seeds=(0, 1, 2), command=None) -> dict:
    """compare.json's content as ``run_comparison`` builds it: ``per_policy`` maps a policy to
    (its --train_size, its per-seed summaries), aggregated by the comparison's own code."""
    policies = {
        p: aggregate_policy(
            spec,
            [run_name(p, s) for s in seeds],
            runs,
            [k == 0 for k in range(len(seeds))],  # the first seed's run reused
        )
        for p, (spec, runs) in per_policy.items()
    }
    first = next(iter(policies.values()))
    config = TrainConfig(
        dataset="procedural_digits/fixed28", steps=1200, eval_sizes=",".join(first["eval_accuracy"])
    ).resolved()
    results = {
        "command": command,
        "date": "2025-01-01T00:00:00+00:00",
        "machine": {
            "platform": "Linux-test",
            "processor": "x86_64",
            "cpu_count": 2,
            "jax": "0.0.test",
            "devices": ["TFRT_CPU_0"],
        },
        "dataset": {
            "name": "procedural_digits/fixed28",
            "num_classes": 10,
            "class_names": [str(i) for i in range(10)],
            "in_channels": 1,
            "spatial_dims": spatial_dims,
            "train_examples": 400,
            "test_examples": 100,
        },
        "model": {"preset": "vgg"},
        "num_params": first["num_params"],
        "config": {**config.to_dict(), "train_size": None, "seed": None, "buckets": None},
        "options": {},
        "seeds": list(seeds),
        "eval_sizes": list(first["eval_accuracy"]),
        "fixed_size": fixed_size(per_policy, spatial_dims),
        "notes": ["native dropped: every example has the same size."],
        "policies": policies,
    }
    results["findings"] = findings(results)
    results["wall_time_s"] = 123.4
    return results


def fixed_size(per_policy: dict, spatial_dims: int) -> str | None:
    """compare.json's ``fixed_size``: the fixed policy's size, as the comparison's plan has it."""
    if "fixed" not in per_policy:
        return None
    return format_size(parse_size_policy(per_policy["fixed"][0], spatial_dims).size)


def fixed_vs_mixed(**kw) -> dict:
    fixed = summaries(
        FIXED,
        test=[0.97, 0.98, 0.99],
        compiles=1,
        speed=[1000.0, 1100.0, 1200.0],
        loss=[0.1, 0.1, 0.1],
        pixels=1600 * 784,
        pointing=[0.5, 0.6, 0.7],
    )
    mixed = summaries(
        MIXED,
        test=[0.96, 0.97, 0.98],
        compiles=2,
        speed=[800.0, 800.0, 800.0],
        loss=[0.19, 0.20, 0.21],
        pixels=2.4e6,
        pointing=[0.8, 0.8, 0.8],
    )
    return make_results(
        {"fixed": ("fixed:28", fixed), "mixed_example": ("mixed_example:16-40:log", mixed)}, **kw
    )


# --- findings --------------------------------------------------------------------------------


def test_findings_of_fixed_against_mixed():
    assert fixed_vs_mixed()["findings"] == [
        "fixed (fixed:28) peaks at 0.980 on 28x28; it loses more than 5.0 points at 3 of 4 "
        "test sizes and more than 20.0 points at 2 (16x16, 40x40); its worst is 16x16 at 0.620.",
        "mixed_example (mixed_example:16-40:log) peaks at 0.970 on 28x28; it loses more than "
        "5.0 points at 1 of 4 test sizes (16x16) but nowhere more than 20.0 points; its worst "
        "is 16x16 at 0.910.",
        "Spread over the grid (max − min of the mean accuracy): fixed 0.360, mixed_example "
        "0.060; mixed_example is the flattest.",
        "Averaged over all 4 test sizes: mixed_example 0.950, fixed 0.780.",
        "At the production size 28x16: mixed_example 0.960, fixed 0.820.",
        "mixed_example beats fixed at 3 of 4 test sizes; at 28x16 it is 14.0 points above "
        "fixed, at fixed's own size 28x28 1.0 points below.",
        "On the test images at their own sizes: fixed 0.980, mixed_example 0.970.",
        "Training cost: fixed 1 compile(s) at 1100 examples/s, 1600 examples, 1M pixels, "
        "final loss 0.100 ± 0.000, mixed_example 2 compile(s) at 800 examples/s, 1600 "
        "examples, 2M pixels, final loss 0.200 ± 0.010.",
        "Seed noise (std over 3 seeds, averaged over test sizes): fixed 0.020, mixed_example "
        "0.010; gaps below about twice that are not resolved.",
    ]


def test_an_exact_tie_is_no_win_and_a_gap_within_noise_still_counts():
    """No tie band: equal means are not a win ("0.0 points above"), but any higher mean is,
    however small against the seed noise the last finding reports."""
    same = {k: list(v) for k, v in FIXED.items()}
    same["40x40"] = [v + 0.001 for v in FIXED["40x40"]]  # 0.1 points, noise 2 points
    kw = dict(test=[0.9] * 3, compiles=1, speed=[None] * 3, loss=[0.1] * 3, pixels=1e6)
    results = make_results(
        {
            "fixed": ("fixed:28", summaries(FIXED, **kw)),
            "mixed_step": ("mixed_step:16-40:12", summaries(same, **kw)),
        }
    )
    (vs,) = [f for f in results["findings"] if " beats fixed " in f]
    assert vs == (
        "mixed_step beats fixed at 1 of 4 test sizes; at 28x16 it is 0.0 points above fixed, "
        "at fixed's own size 28x28 0.0 points above."
    )
    assert "fixed 0.020, mixed_step 0.020; gaps below about twice" in results["findings"][-1]
    # No throughput measured: the cost finding leaves it out (and the table shows a dash).
    (cost,) = [f for f in results["findings"] if f.startswith("Training cost")]
    assert cost.startswith("Training cost: fixed 1 compile(s), 1600 examples, 1M pixels")
    assert "examples/s" not in cost


def test_one_seed_a_flat_policy_and_two_mixed_policies():
    flat = {k: [0.95] for k in SIZES_2D}
    low = {k: [0.5] for k in SIZES_2D}
    low["28x28"] = [0.9]
    kw = dict(test=[0.9], compiles=1, speed=[500.0], loss=[0.3], pixels=1e6)
    results = make_results(
        {
            "fixed": ("fixed:28", summaries(low, **kw)),
            "mixed_step": ("mixed_step:16-40:12", summaries(flat, **kw)),
            "mixed_example": ("mixed_example:16-40", summaries(flat, **kw)),
        },
        seeds=(5,),
    )
    f = results["findings"]
    assert f[1] == (
        "mixed_step (mixed_step:16-40:12) stays within 5.0 points of its best (0.950 on 16x16) "
        "at every test size."
    )
    assert "fixed 0.400, mixed_step 0.000, mixed_example 0.000; mixed_step is the flattest" in f[3]
    vs = [x for x in f if " beats fixed " in x]
    assert [x.split(" beats")[0] for x in vs] == ["mixed_step", "mixed_example"]
    assert vs[0] == (
        "mixed_step beats fixed at 4 of 4 test sizes; at 28x16 it is 45.0 points above fixed, "
        "at fixed's own size 28x28 5.0 points above."
    )
    assert f[-1] == "One seed per policy: gaps of a few points may be seed noise (try --seeds=3)."
    md = report_markdown(results)
    assert "## Accuracy per test size (one seed)" in md
    assert "| 28x28 | 0.900 | 0.950 | 0.950 |" in md  # no ± for one seed
    assert "- Seeds: 5 (one seed: no std)" in md


def test_1d_results_have_no_production_size_and_name_fixed_s_own_length():
    sizes = {"32": [0.8, 0.9], "40": [0.95, 0.97], "56": [0.7, 0.8]}
    kw = dict(test=[0.9, 0.9], compiles=1, speed=[1.0, 1.0], loss=[0.1, 0.1], pixels=1e6)
    better = {k: [v + 0.01 for v in vs] for k, vs in sizes.items()}
    results = make_results(
        {
            "fixed": ("fixed:40", summaries(sizes, **kw)),
            "mixed_example": ("mixed_example:32-56", summaries(better, **kw)),
        },
        spatial_dims=1,
        seeds=(0, 1),
    )
    text = " ".join(results["findings"])
    assert "production size" not in text
    assert (
        "mixed_example beats fixed at 3 of 3 test sizes, at fixed's own size 40 1.0 points "
        "above." in results["findings"]
    )
    md = report_markdown(results)
    assert "heatmaps.png" not in md and "1-D)" in md


# --- report.md -------------------------------------------------------------------------------


def test_report_tables_are_mean_plus_minus_std():
    results = fixed_vs_mixed(command=["python", "-m", "experiments.compare", "--seeds=3", "a b"])
    md = report_markdown(results)
    assert md.startswith("# Training-size policies compared\n")
    assert "- Command: `python -m experiments.compare --seeds=3 'a b'`" in md
    assert "- Note: native dropped: every example has the same size." in md
    assert "- Policies: fixed = `fixed:28`, mixed_example = `mixed_example:16-40:log`" in md
    assert "- Seeds: 0, 1, 2 (mean ± sample std over seeds below)" in md
    assert "4 (`16x16,28x16,28x28,40x40`)" in md
    assert "`runs/fixed-seed0` (reused), `runs/fixed-seed1`, `runs/fixed-seed2`" in md
    assert all(f"- {f}" in md for f in results["findings"])
    table = md.split("## Accuracy per test size (mean ± std over 3 seeds)\n\n", 1)[1]
    assert table.splitlines()[:7] == [
        "| test size | fixed | mixed_example |",
        "|---|---|---|",
        "| 16x16 | 0.620 ± 0.020 | 0.910 ± 0.010 |",
        "| 28x16 | 0.820 ± 0.020 | 0.960 ± 0.010 |",
        "| 28x28 | 0.980 ± 0.020 | 0.970 ± 0.010 |",
        "| 40x40 | 0.700 ± 0.020 | 0.960 ± 0.010 |",
        "| own sizes | 0.980 ± 0.010 | 0.970 ± 0.010 |",
    ]
    cost = md.split("## Cost and localization\n\n", 1)[1].splitlines()
    assert cost[2] == (
        "| fixed | `fixed:28` | 1 ± 0 | 4 ± 0 | 1100 ± 100 | 11.0 ± 1.0 | 0.100 ± 0.000 "
        "| 1600 ± 0 | 1.3 ± 0.0 | 1.6 ± 0.0 | 0.600 ± 0.100 | 0.600 ± 0.100 |"
    )
    assert cost[3].startswith("| mixed_example | `mixed_example:16-40:log` | 2 ± 0 |")
    assert md.rstrip().endswith("![accuracy heatmaps](heatmaps.png)")


def test_missing_measurements_are_dashes():
    results = fixed_vs_mixed()
    for r in results["policies"].values():
        del r["pointing_game"], r["eval_pointing_game"]
        r["train_examples_per_sec"] = {"mean": None, "std": None, "values": [None] * 3}
    assert "- Command: `(library call)`" in report_markdown(results)
    row = report_markdown(results).split("| fixed | `fixed:28` |", 1)[1].splitlines()[0]
    cells = [c.strip() for c in row.strip(" |").split("|")]
    assert cells[2] == "–" and cells[-2:] == ["–", "–"]


# --- write_report ----------------------------------------------------------------------------


def test_write_report_writes_every_file_and_no_temporary(tmp_path):
    results = fixed_vs_mixed()
    write_report(results, str(tmp_path))
    assert sorted(os.listdir(tmp_path)) == [
        "accuracy_vs_size.png",
        "compare.json",
        "heatmaps.png",
        "report.md",
    ]
    assert json.load(open(tmp_path / "compare.json")) == results
    assert (tmp_path / "report.md").read_text() == report_markdown(results)
    for name, min_width in (("accuracy_vs_size.png", 300), ("heatmaps.png", 800)):
        with Image.open(tmp_path / name) as image:
            assert image.format == "PNG" and image.width >= min_width


def test_write_report_of_1d_results_has_no_heatmaps(tmp_path):
    kw = dict(test=[0.9, 0.9], compiles=1, speed=[1.0, 1.0], loss=[0.1, 0.1], pixels=1e6)
    sizes = {"32": [0.8, 0.9], "40": [0.95, 0.97]}
    results = make_results(
        {"fixed": ("fixed:40", summaries(sizes, **kw))}, spatial_dims=1, seeds=(0, 1)
    )
    write_report(results, str(tmp_path))
    assert sorted(os.listdir(tmp_path)) == ["accuracy_vs_size.png", "compare.json", "report.md"]


def test_a_failed_write_keeps_the_old_file_and_leaves_no_partial_one(tmp_path, monkeypatch):
    (tmp_path / "compare.json").write_text('{"old": true}\n')
    (tmp_path / "report.md").write_text("old report\n")

    def fail(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(fcn_jax.outputs.os, "fsync", fail)  # after the bytes are written
    with pytest.raises(OSError, match="No space left"):
        write_report(fixed_vs_mixed(), str(tmp_path))
    assert sorted(os.listdir(tmp_path)) == ["compare.json", "report.md"]
    assert json.load(open(tmp_path / "compare.json")) == {"old": True}
    assert (tmp_path / "report.md").read_text() == "old report\n"


def test_heatmap_titles_do_not_run_into_each_other():
    """The docs' comparison: three policies with long train sizes, and the difference panel."""
    kw = dict(test=[0.9, 0.9], compiles=1, speed=[1.0, 1.0], loss=[0.1, 0.1], pixels=1e6)
    grid = {f"{h}x{w}": [0.9, 0.8] for h in (16, 28, 40, 56) for w in (16, 28, 40, 56)}
    specs = {"fixed": "fixed:28x28", "mixed_step": "mixed_step:14-56:14"}
    specs["mixed_example"] = "mixed_example:16-56:log"
    results = make_results({p: (v, summaries(grid, **kw)) for p, v in specs.items()}, seeds=(0, 1))
    fig = heatmaps_figure(results)
    renderer = fig.canvas.get_renderer()
    fig.draw(renderer)  # the constrained layout places the panels on drawing
    boxes = [ax.title.get_window_extent(renderer) for ax in fig.axes if ax.get_title()]
    assert len(boxes) == 4
    for left, right in zip(boxes, boxes[1:]):
        assert left.x1 < right.x0, (left, right)


def own_sizes_note(results: dict) -> str:
    md = report_markdown(results)
    return md.split("| own sizes |", 1)[1].split("\n\n", 1)[1].split("\n", 1)[0]


def test_the_report_says_why_own_sizes_differs_from_its_size_row():
    """The comparison's defaults: BatchNorm recalibrated per test size, 1000 test examples."""
    results = fixed_vs_mixed()
    results["config"].update(recalibrate_bn=True, eval_examples=1000, eval_mode="resize")
    note = own_sizes_note(results)
    assert "Every row uses the first 1000 test examples." in note
    assert "re-estimated on training images at each test size (--recalibrate_bn)" in note
    assert "'own sizes' the statistics kept from training" in note and "canvas" not in note
    results["config"].update(recalibrate_bn=False, eval_examples=None, eval_mode="canvas")
    note = own_sizes_note(results)
    assert "Every row uses all the test examples." in note and "BatchNorm" not in note
    assert "(--eval_mode=canvas), 'own sizes' runs it as it is." in note
    results["config"].update(eval_mode="resize")
    assert own_sizes_note(results).endswith("its own size. Every row uses all the test examples.")
