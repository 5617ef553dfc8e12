"""The benchmark table: targets and met flags, its JSON and markdown forms, and a smoke run of
``python -m benchmarks.run`` (every part's code path on tiny data; timings are not checked)."""

import json
import math
import os
import re

import pytest

from benchmarks import common
from benchmarks.common import COLUMNS, Row, cells, met_flag, to_markdown


def parse_markdown_table(text: str) -> list[dict[str, str]]:
    """The rows of the table in ``to_markdown``'s output, as dicts of cell strings."""
    rows = []
    for line in text.splitlines():
        if line.startswith("| ") and not line.startswith("| part |"):
            parts = re.split(r"(?<!\\)\|", line)[1:-1]  # on bars not escaped
            rows.append(dict(zip(COLUMNS, [p.strip().replace("\\|", "|") for p in parts])))
    return rows


PARTS = (
    "1 compile",
    "2 padding",
    "3 throughput",
    "4 vs PyTorch",
    "5 time to acc.",
    "6 end to end",
    "7 host overhead",
)
# Rows whose value may be missing: the measurement was skipped or the goal not reached.
MAY_BE_EMPTY = ("4 vs PyTorch", "seconds to", "steps to", "buckets needed")
POSITIVE_UNITS = ("compiles", "s", "ex/s", "px/s", "×", "img/s", "steps", "buckets")


@pytest.mark.parametrize(
    "value, target, expected",
    [
        (8, "<= 8", "yes"),
        (9, "<= 8", "no"),
        (0.9, ">= 0.9", "yes"),
        (0.69, ">= 0.9", "no"),
        (3.0, "> 3", "no"),
        (2.9, "< 3", "yes"),
        (None, ">= 1", "n.a."),
        (1.0, None, "n.a."),
        (float("nan"), ">= 1", "n.a."),
    ],
)
def test_met_flag(value, target, expected):
    assert met_flag(value, target) == expected


def test_bad_target_rejected():
    with pytest.raises(ValueError, match="bad target"):
        Row("p", "n", 1.0, "u", target="at least 3")


def test_format_value():
    assert common.format_value(None) == "-"
    assert common.format_value(1234567.8) == "1,234,568"
    assert common.format_value(8.0) == "8"
    assert common.format_value(0.68712) == "0.687"


def test_markdown_round_trip_with_bars_in_notes():
    rows = [
        Row("1 x", "a | b", 0.5, "u", ">= 0.9", "note | with bar").to_dict(),
        Row("2 y", "skipped", None, "img/s", ">= 1", "torch absent").to_dict(),
    ]
    parsed = parse_markdown_table(to_markdown(rows, "# title"))
    assert [list(r.values()) for r in parsed] == [cells(r) for r in rows]
    assert [r["met"] for r in parsed] == ["no", "n.a."]


def test_torch_rows():
    from benchmarks.parts.vs_torch import torch_rows

    skipped = torch_rows({"size": 28, "batch_size": 128, "skipped": "torch not installed"})
    assert [(r.value, r.met) for r in skipped] == [(None, "n.a.")] * 2
    assert all("torch not installed" in r.note for r in skipped)
    measured = {
        "size": 64,
        "batch_size": 128,
        "jax_images_per_s": 300.0,
        "torch_images_per_s": 200.0,
        "torch_threads": 2,
        "torch_1thread_images_per_s": 600.0,
        "ratio": 1.5,
        "ratio_vs_best_torch": 0.5,
        "jax_compile_s": 1.0,
        "first_losses_max_rel": 1e-7,
        "same_math": True,
    }
    rows = torch_rows(measured)
    assert [(r.value, r.met) for r in rows] == [(1.5, "yes"), (0.5, "no")]
    assert all(r.name.endswith("64x64") for r in rows)


@pytest.fixture(scope="module")
def smoke(tfds_dir, tmp_path_factory):
    from benchmarks import run

    out = str(tmp_path_factory.mktemp("bench"))
    status = run.measure("smoke", out, data_dir=tfds_dir)
    with open(os.path.join(out, "benchmarks.json")) as f:
        result = json.load(f)
    with open(os.path.join(out, "benchmarks.md")) as f:
        markdown = f.read()
    return status, result, markdown


def test_smoke_run_has_every_part_and_no_failure(smoke):
    status, result, _ = smoke
    rows = result["rows"]
    failed = [r for r in rows if r["note"].startswith("failed:")]
    assert status == 0 and not failed, failed
    assert {r["part"] for r in rows} == set(PARTS)
    assert result["level"] == "smoke"
    assert result["machine"]["cores"] >= 1 and result["date"]


def test_smoke_values_and_met_flags(smoke):
    _, result, _ = smoke
    for row in result["rows"]:
        value = row["value"]
        assert row["met"] == met_flag(value, row["target"]), row
        if value is None:
            assert any(k in row["part"] + row["name"] for k in MAY_BE_EMPTY), row
            assert row["met"] == "n.a." and row["note"], row
            continue
        assert math.isfinite(value), row
        if row["unit"] in POSITIVE_UNITS:
            assert value > 0, row
        if row["unit"] in ("valid/padded", "accuracy"):
            assert 0 <= value <= 1, row


def test_smoke_specific_rows(smoke):
    _, result, _ = smoke
    by_name = {r["name"]: r for r in result["rows"]}
    bucketed = by_name["train compiles, native auto:8"]
    assert bucketed["target"] == "<= 8" and 1 <= bucketed["value"] <= 8
    naive = by_name["train compiles, naive jax.jit"]
    assert naive["value"] >= 1
    from benchmarks.parts import SMOKE

    labels = [label for label, _, _ in SMOKE.policies]
    ratios = {r["name"].split()[0]: r for r in result["rows"] if "÷ fixed" in r["name"]}
    assert set(ratios) == set(labels) - {"fixed"}
    assert all(r["target"] == ">= 0.9" for k, r in ratios.items() if k != "pad-to-max")
    e2e = {r["name"]: r for r in result["rows"] if r["part"] == "6 end to end"}
    assert set(e2e) == {
        f"end to end ÷ step alone, fixed, {p} pipeline" for p in ("device", "grain")
    }
    assert all(r["value"] > 0 and r["target"] == ">= 0.9" for r in e2e.values())
    torch_rows = [r for r in result["rows"] if r["part"] == "4 vs PyTorch"]
    assert torch_rows and all(r["value"] is not None or r["note"] for r in torch_rows)


def test_smoke_markdown_matches_json(smoke):
    _, result, markdown = smoke
    assert markdown.startswith("# Benchmarks (smoke)")
    parsed = parse_markdown_table(markdown)
    assert [list(r.values()) for r in parsed] == [cells(r) for r in result["rows"]]
