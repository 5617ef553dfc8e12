"""The time-series suite: ``--recipe=series`` and the published FCN's architecture on UCR/UEA
datasets × seeds, beside the published results (``python -m experiments.series``).

Each dataset is trained at its series' own lengths (``native``); a dataset whose lengths vary is
also trained on the anchors' equal-length input, every series resampled to the longest
(``*_resampled``: ``--train_size=fixed:L`` and the test split resized to ``L``, as Fawaz et al.
2019 did). Runs are ordinary training workdirs ``WORKDIR/runs/<dataset>__<variant>__seed<k>``,
launched like a sweep's (in parallel, a finished run reused, an interrupted one resumed);
``report.md``, ``series.json`` and ``series.png`` hold mean ± std test accuracy per dataset and
variant beside the anchors.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from fcn_jax.config import TrainConfig
from fcn_jax.data.load import load_dataset
from fcn_jax.data.series import FOLDS
from fcn_jax.outputs import write_atomic, write_json
from fcn_jax.runs.grid import Run, flag
from fcn_jax.runs.rundir import RunDir
from fcn_jax.runs.stats import fmt, stats

DATASETS = (
    "GunPoint", "ItalyPowerDemand", "ArrowHead", "OSULeaf", "BasicMotions", "JapaneseVowels",
    "PickupGestureWiimoteZ",
)  # fmt: skip
# What each variant sets over the base flags; "resampled" ones only run on variable lengths.
# The published FCN (Wang et al. 2017) trained here: its layers on the recipe's schedule, no
# augmentation. Pinned, so that it stays the published FCN whatever the recipe becomes (since
# the cross-validation in docs/results.md dropped the recipe's augmentation, the two agree).
_FCN = {"recipe": "series", "model": "fcn", "width": 1.0, "zoom": "1", "translate": 0.0}
VARIANTS = {
    "recipe": {"recipe": "series"},
    "fcn": _FCN,
    "recipe_resampled": {"recipe": "series"},
    "fcn_resampled": _FCN,
}
LABELS = {
    "recipe": "recipe, native lengths",
    "fcn": "the published FCN's layers, no augmentation, native lengths",
    "recipe_resampled": "recipe, resampled to the longest",
    "fcn_resampled": "the published FCN's layers, no augmentation, resampled to the longest",
}
# Published test accuracy on the archive's default split (docs/results.md cites each source):
# FCN (Wang 2017): the authors' README table; FCN/ResNet (Fawaz 2019) and InceptionTime: the
# means over runs in hfawaz/dl-4-tsc and hfawaz/InceptionTime; HIVE-COTE 2: means over 30
# resamples (tsml-eval; Pickup's is its padded `_eq` variant, from Bake-off Redux 2024).
ANCHOR_COLUMNS = (
    "FCN (Wang 2017)", "FCN (Fawaz 2019)", "ResNet (Fawaz 2019)", "InceptionTime", "HIVE-COTE 2",
)  # fmt: skip
ANCHORS = {
    "GunPoint": (1.000, 1.000, 0.991, 1.000, 0.998),
    "ItalyPowerDemand": (0.970, 0.961, 0.963, 0.965, 0.963),
    "ArrowHead": (0.880, 0.843, 0.845, 0.846, 0.899),
    "OSULeaf": (0.988, 0.977, 0.979, 0.942, 0.969),
    "BasicMotions": (None, None, None, 1.000, 0.989),
    "JapaneseVowels": (None, 0.993, 0.992, 0.992, None),
    "PickupGestureWiimoteZ": (None, 0.744, 0.704, 0.760, 0.784),
    # Held back from tuning (measured with the recipe unchanged); UCR 2018, mean of 5 runs.
    "ACSF1": (None, 0.898, 0.916, None, None),
    "PLAID": (None, 0.904, 0.940, None, None),
}
# The suite's targets: the best FCN anchor, else the best deep one (Pickup: above them all).
TARGETS = {"PickupGestureWiimoteZ": 0.80}


@dataclasses.dataclass(frozen=True)
class Entry:
    """One dataset of the suite: its spec, lengths and the runs' variants."""

    name: str
    spec: str
    lengths: tuple[int, int]  # shortest and longest series over both splits
    channels: int
    cv: bool = False  # seed k tests on fold k % FOLDS of the train split

    def data_spec(self, seed: int) -> str:
        return f"{self.spec}/fold{seed % FOLDS}" if self.cv else self.spec

    @property
    def variable(self) -> bool:
        return self.lengths[0] != self.lengths[1]

    def variants(self, wanted) -> list[str]:
        return [v for v in wanted if self.variable or not v.endswith("_resampled")]


def describe(names, *, split: str, data_dir: str | None) -> list[Entry]:
    """Each dataset's :class:`Entry` (the dataset is read once, here, for its lengths) for
    testing on ``split``: ``test`` (the archive's), ``validation`` (fold 0 of the train split)
    or ``cv`` (seed k on fold k % FOLDS)."""
    entries = []
    for name in names:
        spec = f"ucr:{name}" + ("/validation" if split == "validation" else "")
        data = load_dataset(spec + ("/fold0" if split == "cv" else ""), data_dir)
        lengths = np.concatenate([data.train.sizes()[:, 0], data.test.sizes()[:, 0]])
        bounds = (int(lengths.min()), int(lengths.max()))
        entries.append(Entry(name, spec, bounds, data.in_channels, cv=split == "cv"))
    return entries


def plan(entries: list[Entry], variants, seeds: int, base: dict) -> list[Run]:
    """Every dataset × variant × seed as a sweep :class:`~fcn_jax.runs.grid.Run`, seed by seed
    (an interrupted suite has whole seeds done); base flags override a variant's values (e.g.
    ``--steps`` for a short suite)."""
    runs = []
    for seed in range(seeds):
        for entry in entries:
            for variant in entry.variants(variants):
                runs.append(_run(entry, variant, seed, base))
    return runs


def _run(entry: Entry, variant: str, seed: int, base: dict) -> Run:
    longest = entry.lengths[1]
    values = {"dataset": entry.data_spec(seed), **VARIANTS[variant], "eval_sizes": str(longest)}
    values["eval_examples"] = 0  # the whole test split
    if variant.endswith("_resampled"):
        values["train_size"] = f"fixed:{longest}"
    values = {**values, **base, "seed": seed}
    config = TrainConfig(**values)
    config.resolved()  # validates before anything starts
    flags = tuple(f for f in (flag(k, v) for k, v in values.items()) if f)
    params = {"dataset": entry.name, "variant": variant}
    return Run(f"{entry.name}__{variant}__seed{seed}", params, seed, flags, config)


def accuracy(summary: dict, variant: str, longest: int) -> float:
    """The run's test accuracy: at each series' own length, or resampled to the longest."""
    if variant.endswith("_resampled"):
        return summary["eval_accuracy"][str(longest)]
    return summary["test_accuracy"]


def collect(workdir: str, entries: list[Entry], runs: list[Run]) -> dict:
    """``series.json``'s content: per dataset its lengths, anchors, target and, per variant,
    the accuracies over seeds (mean, std, values) and the runs not finished."""
    by_entry = {e.name: e for e in entries}
    out = {}
    for entry in entries:
        anchors = dict(zip(ANCHOR_COLUMNS, ANCHORS.get(entry.name, (None,) * 5)))
        out[entry.name] = {
            "spec": entry.spec,
            "lengths": list(entry.lengths),
            "channels": entry.channels,
            "anchors": anchors,
            "target": target(entry.name, anchors),
            "variants": {},
        }
    for run in runs:
        entry = by_entry[run.params["dataset"]]
        slot = out[entry.name]["variants"].setdefault(
            run.params["variant"], {"values": [], "missing": []}
        )
        summary = RunDir.of(workdir, run.name).summary()
        if summary is None:
            slot["missing"].append(run.name)
        else:
            slot["values"].append(accuracy(summary, run.params["variant"], entry.lengths[1]))
    for row in out.values():
        for slot in row["variants"].values():
            slot.update({k: v for k, v in stats(slot["values"]).items() if k != "values"})
    return out


def target(name: str, anchors: dict) -> float | None:
    """The best FCN anchor, else the best deep one (FCN, ResNet, InceptionTime)."""
    if name in TARGETS:
        return TARGETS[name]
    fcn = [v for k, v in anchors.items() if k.startswith("FCN") and v is not None]
    deep = [v for k, v in anchors.items() if k != "HIVE-COTE 2" and v is not None]
    return max(fcn or deep) if (fcn or deep) else None


SPLITS = {
    "test": "the archive's test split",
    "validation": "a validation split (a quarter of each train split)",
    "cv": f"{FOLDS}-fold cross-validation over each train split (seed k tests fold k % {FOLDS})",
}


def report(results: dict, split: str, command: list[str]) -> str:
    """``report.md``: one row per dataset, the variants' mean ± std beside the anchors."""
    variants = [v for v in VARIANTS if any(v in r["variants"] for r in results.values())]
    head = ["dataset", "length", "C", *variants, "target", *ANCHOR_COLUMNS]
    lines = [
        "# Time-series suite",
        "",
        f"Accuracy on {SPLITS[split]}, mean ± std over seeds; `python {' '.join(command)}`.",
        "Columns: " + "; ".join(f"`{v}`: {LABELS[v]}" for v in variants) + ".",
        "Anchors: published test accuracy (docs/results.md cites each).",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for name, row in results.items():
        lo, hi = row["lengths"]
        cells = [name, f"{lo}" if lo == hi else f"{lo}–{hi}", str(row["channels"])]
        for v in variants:
            slot = row["variants"].get(v)
            text = fmt(slot) if slot else ""
            if slot and slot["missing"]:
                text += f" ({len(slot['values'])} of {len(slot['values']) + len(slot['missing'])})"
            cells.append(text)
        cells.append("–" if row["target"] is None else f"{row['target']:.3f}")
        cells += ["–" if a is None else f"{a:.3f}" for a in row["anchors"].values()]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(results: dict, path: str) -> None:
    """``series.png``: each variant's mean accuracy (± std) per dataset, the targets as marks."""
    from fcn_jax.plots import plt, save_figure  # its import selects the headless backend

    names = list(results)
    variants = [v for v in VARIANTS if any(v in r["variants"] for r in results.values())]
    fig, ax = plt.subplots(figsize=(1.4 * len(names) + 2, 4))
    width = 0.8 / max(1, len(variants))
    for i, v in enumerate(variants):
        slots = [results[n]["variants"].get(v) or {} for n in names]
        means = [s.get("mean") or np.nan for s in slots]
        errs = [s.get("std") or 0 for s in slots]
        ax.bar(np.arange(len(names)) + i * width, means, width, yerr=errs, label=LABELS[v])
    targets = [results[n]["target"] or np.nan for n in names]
    ax.scatter(
        np.arange(len(names)) + 0.4 - width / 2, targets, marker="_", s=400, c="k", label="target"
    )
    ax.set_xticks(np.arange(len(names)) + 0.4 - width / 2, names, rotation=20, fontsize=8)
    ax.set_ylim(0.5, 1.01)
    ax.set_ylabel("test accuracy")
    ax.legend(fontsize=7, loc="lower left")
    save_figure(fig, path)


def write_outputs(workdir: str, results: dict, split: str, command: list[str]) -> str:
    """Write series.json, report.md and series.png; return the report."""
    text = report(results, split, command)
    write_json(
        os.path.join(workdir, "series.json"),
        {"split": split, "validation": split != "test", "command": command, "datasets": results},
    )
    write_atomic(os.path.join(workdir, "report.md"), text)
    plot(results, os.path.join(workdir, "series.png"))
    return text
