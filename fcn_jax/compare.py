"""Compare training-size policies: the same model trained under ``fixed``, ``mixed_step``,
``mixed_example`` and ``native`` sizes, each for a few seeds, all tested on one shared grid of
test sizes, with the same number of training examples per policy.

``run_comparison(CompareConfig(train=TrainConfig(...)), workdir)`` trains (or reuses) one run
per policy and seed in ``workdir/runs/<policy>-seed<k>/`` (ordinary training workdirs),
aggregates their ``summary.json`` files and writes, via :func:`write_report`:

* ``report.md``: what was run, findings read off the numbers, accuracy per test size per
  policy (mean ± std over seeds), cost (compiles, throughput, wall time) and localization;
* ``compare.json``: the same numbers, per-seed values included;
* ``accuracy_vs_size.png`` and (2-D data) ``heatmaps.png``.
"""

from __future__ import annotations

import dataclasses
import datetime
import math
import os
import platform
import shlex
import time

import numpy as np
from absl import logging

from fcn_jax.config import TrainConfig, parse_eval_sizes, size_key
from fcn_jax.data.policies import parse_size_policy
from fcn_jax.outputs import read_json, write_atomic, write_json

POLICIES = ("fixed", "mixed_step", "mixed_example", "native")
POLICY_ALIASES = {"mixed": "mixed_step"}  # the name of mixed_step before mixed_example existed
PRODUCTION_SIZE = (28, 16)  # the 28x16 test size every 2-D comparison includes
# A test size "falls off" when it loses more than this below the policy's best; "far" beyond
# the second threshold.
FALL_OFF = 0.05
BIG_FALL_OFF = 0.20

# Defaults of a comparison where they differ from a lone training run's: all policies together
# must finish in about 5 minutes on a 2-core CPU (see benchmarks/compare_budget.py). They fill
# what neither the flags nor a recipe set.
TRAIN_DEFAULTS = {"steps": 1200}
DEFAULT_DATASET = "procedural_digits/fixed28"
DEFAULT_EVAL_EXAMPLES = 1000
# mixed_example's default options: log-uniform sizes (equal weight per octave of scale).
DEFAULT_EXAMPLE_OPTIONS = ":log"
# mixed_step's default grid has at most this many values per axis (1-D, 2-D): one compile each.
STEP_GRID_VALUES = {1: 9, 2: 4}

# Config fields that leave a finished run's results unchanged: a run differing only in these
# is reused as is. A difference elsewhere retrains, re-evaluates or (training fields) raises.
_NO_EFFECT_FIELDS = {
    "data_dir",
    "compilation_cache_dir",
    "checkpoint_every",
    "log_every",
    "precompile",
    "distributed",
    "eval_batch_size",
}
# Summary fields measured while training: kept from the first run when a finished run is
# re-evaluated (re-evaluation trains no step, so it has no throughput of its own).
_TRAINING_MEASUREMENTS = (
    "train_examples_per_sec",
    "train_compiles",
    "train_compile_seconds",
    "wall_time_s",
    "final_loss",
)


@dataclasses.dataclass
class CompareConfig:
    """A comparison: a base training config and the policies and seeds to run it under.

    Attributes:
      train: the base config; ``train_size`` must be None (each policy sets it) and run ``k``
        uses seed ``train.seed + k``.
      seeds: runs per policy.
      policies: a subset of ``POLICIES`` (``mixed`` means ``mixed_step``); ``native`` is
        dropped (with a note) for data whose examples all share one size.
      fixed_size: the size of the fixed policy (``fixed:<fixed_size>``); default: the data's
        own size when all examples share one, else 28 (2-D) or 40 (1-D).
      mixed_size: the range of mixed_step (``mixed_step:<mixed_size>``); default: a grid of at
        most ``STEP_GRID_VALUES`` values per axis through the fixed size, covering every test
        size.
      example_size: the range of mixed_example (``mixed_example:<example_size>``); default:
        log-uniform from the smallest to the largest test size, the fixed size included.
    """

    train: TrainConfig = dataclasses.field(
        default_factory=lambda: TrainConfig(
            dataset=DEFAULT_DATASET, eval_examples=DEFAULT_EVAL_EXAMPLES
        )
    )
    seeds: int = 1
    policies: tuple[str, ...] = POLICIES
    fixed_size: str | None = None
    mixed_size: str | None = None
    example_size: str | None = None

    def validate(self) -> CompareConfig:
        """Raise ValueError with a one-line message for a bad value; return self."""
        self.train.resolved(TRAIN_DEFAULTS)
        if self.train.train_size is not None:
            raise ValueError(
                "--train_size: a comparison sets it per policy; use --policies, --fixed_size "
                "and --mixed_size"
            )
        if self.seeds < 1:
            raise ValueError(f"--seeds={self.seeds}: expected a positive number")
        self.policies = tuple(POLICY_ALIASES.get(p, p) for p in self.policies)
        unknown = [p for p in self.policies if p not in POLICIES]
        if unknown or not self.policies or len(set(self.policies)) != len(self.policies):
            raise ValueError(
                f"--policies={','.join(self.policies)}: expected distinct names among {POLICIES}"
            )
        return self

    def policy_specs(self, dataset, eval_sizes: list) -> dict[str, str]:
        """Each policy's ``--train_size`` (e.g. ``{"fixed": "fixed:28", ...}``), the defaults
        derived from ``dataset`` and the test sizes (see the attributes)."""
        from fcn_jax.train import default_train_size

        d, own = dataset.spatial_dims, default_train_size(dataset)  # "fixed:28x28" or "native"
        fixed = self.fixed_size or own.partition(":")[2] or ("28" if d == 2 else "40")
        f = parse_size_policy(f"fixed:{fixed}", d).size
        lo = [min(v) for v in zip(f, *eval_sizes)]
        hi = [max(v) for v in zip(f, *eval_sizes)]
        example = self.example_size or f"{_compact(lo)}-{_compact(hi)}{DEFAULT_EXAMPLE_OPTIONS}"
        mixed = self.mixed_size or _step_grid(f, lo, hi, STEP_GRID_VALUES[d])
        return {
            "fixed": f"fixed:{fixed}",
            "mixed_step": f"mixed_step:{mixed}",
            "mixed_example": f"mixed_example:{example}",
            "native": "native",
        }


def _step_grid(fixed, lo, hi, values: int) -> str:
    """``"LO-HI:STEP"``: a grid through ``fixed`` per axis that covers ``[lo, hi]`` with at most
    ``values`` values per axis (the smallest such STEP; more values where none fits)."""
    while True:
        first = max(1, math.ceil((max(hi) - min(lo)) / max(values - 1, 1)))
        for step in range(first, max(hi) + 1):
            start = [f - math.ceil((f - a) / step) * step for f, a in zip(fixed, lo)]
            end = [f + math.ceil((b - f) / step) * step for f, b in zip(fixed, hi)]
            if all((e - s) // step + 1 <= values and s >= 1 for s, e in zip(start, end)):
                return f"{_compact(start)}-{_compact(end)}:{step}"
        values += 1


def _compact(size) -> str:
    """(16, 16) → "16"; (28, 16) → "28x16" (one number when every axis agrees)."""
    return str(size[0]) if len(set(size)) == 1 else size_key(size)


def run_name(policy: str, seed: int) -> str:
    return f"{policy}-seed{seed}"


def run_comparison(config: CompareConfig, workdir: str, *, command: list[str] | None = None):
    """Train or reuse every run, aggregate, write the report files; return compare.json's
    content. ``command`` (e.g. ``sys.argv``) is recorded in the report."""
    from fcn_jax.data import load_dataset
    from fcn_jax.train import default_train_size

    start = time.perf_counter()
    config.validate()
    base = config.train.resolved(TRAIN_DEFAULTS)
    dataset = load_dataset(
        base.dataset,
        base.data_dir,
        skip_corrupt=base.skip_corrupt,
        pixel_range=base.pixel_bounds(),
    )
    d = dataset.spatial_dims
    notes, policies = [], list(config.policies)
    if "native" in policies and default_train_size(dataset) != "native":
        policies.remove("native")
        notes.append(
            f"native dropped: every example of {dataset.name} has the same size, so native "
            "training would equal fixed training at that size."
        )
    if not policies:
        raise ValueError("--policies: nothing left to compare")
    eval_sizes, note = shared_eval_sizes(base.eval_sizes, d)
    notes += [note] if note else []
    specs = config.policy_specs(dataset, parse_eval_sizes(eval_sizes, d))
    parsed = {p: parse_size_policy(specs[p], d) for p in policies}  # bad sizes fail early
    base = dataclasses.replace(
        base,
        eval_sizes=eval_sizes,
        # Every run compiles the same eval shapes (and seeds the same train shapes): share them.
        compilation_cache_dir=base.compilation_cache_dir
        or os.path.join(os.path.abspath(workdir), "xla_cache"),
    )
    os.makedirs(workdir, exist_ok=True)

    seeds = [base.seed + k for k in range(config.seeds)]
    per_policy = {}
    for policy in policies:
        summaries, reused = [], []
        for seed in seeds:
            run_config = dataclasses.replace(
                base,
                train_size=specs[policy],
                seed=seed,
                # A recipe's or the user's buckets are the padded policies' own setting.
                buckets=base.buckets if parsed[policy].pads else None,
            )
            summary, was_reused = train_or_reuse(
                run_config, os.path.join(workdir, "runs", run_name(policy, seed))
            )
            summaries.append(summary)
            reused.append(was_reused)
        per_policy[policy] = aggregate_policy(
            specs[policy], [run_name(policy, s) for s in seeds], summaries, reused
        )

    first_run = read_json(
        os.path.join(workdir, "runs", run_name(policies[0], seeds[0]), "config.json")
    )
    results = {
        "command": list(command) if command is not None else None,
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": machine_info(),
        "dataset": first_run["dataset"],
        "model": {"preset": base.model, **first_run["model_spec"]},
        "num_params": per_policy[policies[0]]["num_params"],
        "config": {**base.to_dict(), "train_size": None, "seed": None, "buckets": None},
        "options": {
            "seeds": config.seeds,
            "policies": list(config.policies),
            "fixed_size": config.fixed_size,
            "mixed_size": config.mixed_size,
            "example_size": config.example_size,
        },
        "seeds": seeds,
        "eval_sizes": sort_sizes(per_policy[policies[0]]["eval_accuracy"]),
        "notes": notes,
        "policies": per_policy,
    }
    results["findings"] = findings(results)
    results["wall_time_s"] = time.perf_counter() - start  # the whole comparison, reuse included
    write_report(results, workdir)
    return results


def shared_eval_sizes(spec: str | None, spatial_dims: int) -> tuple[str, str | None]:
    """The eval-size spec of every run: ``spec`` (or the default), plus 28x16 in 2-D when it
    is missing. Returns ``(spec, note or None)``."""
    from fcn_jax.config import DEFAULT_EVAL_SIZES_1D, DEFAULT_EVAL_SIZES_2D

    spec = spec or (DEFAULT_EVAL_SIZES_2D if spatial_dims == 2 else DEFAULT_EVAL_SIZES_1D)
    sizes = parse_eval_sizes(spec, spatial_dims)
    if spatial_dims != 2 or PRODUCTION_SIZE in sizes:
        return spec, None
    extended = ",".join(size_key(s) for s in [*sizes, PRODUCTION_SIZE])
    return extended, f"added the production size 28x16 to --eval_sizes={spec}."


def train_or_reuse(config: TrainConfig, rundir: str) -> tuple[dict, bool]:
    """A finished run with the same results-relevant config is read back (``True``);
    anything else goes to ``train_and_evaluate`` (``False``), which trains, resumes an
    interrupted run, re-evaluates a finished one or refuses a conflicting one."""
    from fcn_jax.train import train_and_evaluate

    summary_path = os.path.join(rundir, "summary.json")
    config_path = os.path.join(rundir, "config.json")
    old = None
    if os.path.exists(summary_path) and os.path.exists(config_path):
        old = read_json(summary_path)
        saved, current = read_json(config_path)["config"], config.to_dict()
        if all(saved.get(k) == v for k, v in current.items() if k not in _NO_EFFECT_FIELDS):
            logging.info("%s: reusing the finished run", rundir)
            return old, True
    logging.info("%s: training %s, seed %d", rundir, config.train_size, config.seed)
    summary = train_and_evaluate(config, rundir)
    if old is not None and summary.get("resumed_from_step") == summary["steps"]:
        # Re-evaluated only: keep the training measurements of the run that trained.
        summary = {**summary, **{k: old.get(k) for k in _TRAINING_MEASUREMENTS}}
        write_json(summary_path, summary)
    return summary, False


def stats(values) -> dict:
    """``{"mean", "std", "values"}``; std is the sample std over seeds (None for one value);
    None values (e.g. no throughput) are left out of mean and std."""
    values = [None if v is None else float(v) for v in values]
    present = [v for v in values if v is not None]
    mean = float(np.mean(present)) if present else None
    std = float(np.std(present, ddof=1)) if len(present) > 1 else None
    return {"mean": mean, "std": std, "values": values}


def aggregate_policy(spec: str, runs: list[str], summaries: list[dict], reused: list[bool]):
    """One policy's numbers over its seeds."""
    sizes = list(summaries[0]["eval_accuracy"])
    out = {
        "train_size": spec,
        "runs": runs,
        "reused": reused,
        "num_params": summaries[0].get("num_params"),
        "test_accuracy": stats(s["test_accuracy"] for s in summaries),
        "eval_accuracy": {k: stats(s["eval_accuracy"][k] for s in summaries) for k in sizes},
    }
    for key in (
        "train_compiles",
        "eval_compiles",
        "train_examples_per_sec",
        "wall_time_s",
        "final_loss",
        "train_examples",
        "train_pixels",
        "train_padded_pixels",
    ):
        out[key] = stats(s.get(key) for s in summaries)
    if all("pointing_game" in s for s in summaries):
        out["pointing_game"] = stats(s["pointing_game"] for s in summaries)
        out["eval_pointing_game"] = {
            k: stats(s["eval_pointing_game"][k] for s in summaries) for k in sizes
        }
    return out


def sort_sizes(keys) -> list[str]:
    """Size keys ("28x16") by area, then by shape."""
    parsed = {k: tuple(int(v) for v in k.split("x")) for k in keys}
    return sorted(parsed, key=lambda k: (math.prod(parsed[k]), parsed[k]))


def machine_info() -> dict:
    import jax

    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "jax": jax.__version__,
        "devices": [str(d) for d in jax.devices()],
        "device_kind": jax.devices()[0].device_kind,
    }


# --- findings: sentences computed from the numbers -----------------------------------------


def _mixed_policies(policies) -> list[str]:
    """The mixed policies compared (in POLICIES order), when fixed is compared too."""
    return [p for p in ("mixed_step", "mixed_example") if p in policies and "fixed" in policies]


def _means(results: dict, policy: str) -> dict[str, float]:
    return {k: v["mean"] for k, v in results["policies"][policy]["eval_accuracy"].items()}


def _listed(keys: list[str], limit: int = 6) -> str:
    return ", ".join(keys[:limit]) + (", ..." if len(keys) > limit else "")


def _pts(x: float) -> str:
    return f"{100 * x:.1f} points"


def findings(results: dict) -> list[str]:
    """A few sentences read off the numbers (none of them canned)."""
    policies, out = list(results["policies"]), []
    specs = {p: results["policies"][p]["train_size"] for p in policies}
    n_sizes = len(results["eval_sizes"])
    for p in policies:
        means = _means(results, p)
        best = max(means, key=means.get)
        worst = min(means, key=means.get)
        loss = {k: means[best] - means[k] for k in sort_sizes(means)}
        drops = [k for k, v in loss.items() if v > FALL_OFF]
        big = [k for k, v in loss.items() if v > BIG_FALL_OFF]
        if drops:
            text = (
                f"{p} ({specs[p]}) peaks at {means[best]:.3f} on {best}; it loses more than "
                f"{_pts(FALL_OFF)} at {len(drops)} of {n_sizes} test sizes"
            )
            if big:
                text += f" and more than {_pts(BIG_FALL_OFF)} at {len(big)} ({_listed(big)})"
            else:
                text += f" ({_listed(drops)}) but nowhere more than {_pts(BIG_FALL_OFF)}"
            out.append(f"{text}; its worst is {worst} at {means[worst]:.3f}.")
        else:
            out.append(
                f"{p} ({specs[p]}) stays within {_pts(FALL_OFF)} of its best ({means[best]:.3f} "
                f"on {best}) at every test size."
            )
    spreads = {
        p: max(_means(results, p).values()) - min(_means(results, p).values()) for p in policies
    }
    if len(policies) > 1:
        flat = min(spreads, key=spreads.get)
        listed = ", ".join(f"{p} {spreads[p]:.3f}" for p in policies)
        out.append(
            f"Spread over the grid (max − min of the mean accuracy): {listed}; {flat} is the "
            "flattest."
        )
    grid_means = {p: float(np.mean(list(_means(results, p).values()))) for p in policies}
    ranked = sorted(policies, key=grid_means.get, reverse=True)
    out.append(
        f"Averaged over all {n_sizes} test sizes: "
        + ", ".join(f"{p} {grid_means[p]:.3f}" for p in ranked)
        + "."
    )
    prod = size_key(PRODUCTION_SIZE)
    if all(prod in _means(results, p) for p in policies):
        at = {p: _means(results, p)[prod] for p in policies}
        text = f"At the production size {prod}: " + ", ".join(
            f"{p} {at[p]:.3f}" for p in sorted(policies, key=at.get, reverse=True)
        )
        out.append(text + ".")
    for mixed in _mixed_policies(policies):
        fixed, other = _means(results, "fixed"), _means(results, mixed)
        wins = [k for k in fixed if other[k] > fixed[k]]
        text = f"{mixed} beats fixed at {len(wins)} of {n_sizes} test sizes"
        if prod in fixed:
            gap = other[prod] - fixed[prod]
            text += f"; at {prod} it is {_pts(abs(gap))} {'above' if gap >= 0 else 'below'} fixed"
        own = results["policies"]["fixed"]["train_size"].removeprefix("fixed:")
        own = size_key(parse_size_policy(f"fixed:{own}", results["dataset"]["spatial_dims"]).size)
        if own in fixed:
            gap = other[own] - fixed[own]
            text += (
                f", at fixed's own size {own} {_pts(abs(gap))} {'above' if gap >= 0 else 'below'}"
            )
        out.append(text + ".")
    native = {p: results["policies"][p]["test_accuracy"]["mean"] for p in policies}
    out.append(
        "On the test images at their own sizes: "
        + ", ".join(f"{p} {native[p]:.3f}" for p in sorted(policies, key=native.get, reverse=True))
        + "."
    )
    cost = []
    for p in policies:
        r = results["policies"][p]
        speed = r["train_examples_per_sec"]["mean"]
        text = f"{p} {r['train_compiles']['mean']:.0f} compile(s)"
        text += f" at {speed:.0f} examples/s" if speed else ""
        if r.get("train_examples", {}).get("mean"):
            text += (
                f", {r['train_examples']['mean']:.0f} examples, "
                f"{r['train_pixels']['mean'] / 1e6:.0f}M pixels"
            )
        cost.append(text + f", final loss {fmt(r['final_loss'])}")
    out.append("Training cost: " + ", ".join(cost) + ".")
    seeds = len(results["seeds"])
    if seeds > 1:
        noise = {
            p: float(np.mean([v["std"] for v in results["policies"][p]["eval_accuracy"].values()]))
            for p in policies
        }
        out.append(
            f"Seed noise (std over {seeds} seeds, averaged over test sizes): "
            + ", ".join(f"{p} {noise[p]:.3f}" for p in policies)
            + "; gaps below about twice that are not resolved."
        )
    else:
        out.append("One seed per policy: gaps of a few points may be seed noise (try --seeds=3).")
    return out


# --- report files ----------------------------------------------------------------------------


def fmt(stat: dict | None, digits: int = 3) -> str:
    """``0.912 ± 0.004`` (no ± for one seed; ``–`` when missing)."""
    if not stat or stat.get("mean") is None:
        return "–"
    text = f"{stat['mean']:.{digits}f}"
    return text + (f" ± {stat['std']:.{digits}f}" if stat.get("std") is not None else "")


def _length(cfg: dict) -> str:
    return f"{cfg['steps']} steps" if cfg["steps"] else f"{cfg['epochs']} epochs"


def _grid_mean(per_size: dict | None) -> dict | None:
    """Per-seed means over the test sizes of ``{size: stats}``, as stats."""
    if not per_size:
        return None
    per_seed = np.array([v["values"] for v in per_size.values()], dtype=float)
    return stats(per_seed.mean(axis=0))


def _scaled(stat: dict | None, factor: float) -> dict | None:
    """``stat`` with mean and std multiplied by ``factor``."""
    if not stat or stat.get("mean") is None:
        return None
    return {k: None if stat.get(k) is None else stat[k] * factor for k in ("mean", "std")}


def _command_text(command) -> str:
    return shlex.join(command) if command else "(library call)"


def report_markdown(results: dict) -> str:
    """The report as markdown (see the module docstring)."""
    policies = list(results["policies"])
    P = results["policies"]
    cfg, m, ds = results["config"], results["machine"], results["dataset"]
    seeds = results["seeds"]
    lines = [
        "# Training-size policies compared",
        "",
        "## What was run",
        "",
        f"- Command: `{_command_text(results['command'])}`",
        f"- Dataset: {ds['name']} ({ds['train_examples']} train / {ds['test_examples']} test "
        f"examples, {ds['num_classes']} classes, {ds['spatial_dims']}-D)",
        f"- Model: {cfg['model']} (width {cfg['width']}, {results['num_params']} parameters), "
        f"{_length(cfg)} of batch {cfg['batch_size']}, "
        f"{cfg['optimizer']} lr {cfg['learning_rate']:g} ({cfg['schedule']})",
        "- Policies: " + ", ".join(f"{p} = `{P[p]['train_size']}`" for p in policies),
        f"- Seeds: {', '.join(map(str, seeds))} "
        + ("(mean ± sample std over seeds below)" if len(seeds) > 1 else "(one seed: no std)"),
        f"- Test sizes: {len(results['eval_sizes'])} (`{cfg['eval_sizes']}`), "
        f"{cfg['eval_examples'] or 'all'} test examples each, eval mode {cfg['eval_mode']}",
        f"- Machine: {m['platform']}, {m['processor']}, {m['cpu_count']} CPUs, "
        f"jax {m['jax']}, devices {', '.join(m['devices'])}",
        f"- Date: {results['date']}; the comparison took {results['wall_time_s']:.0f} s",
        "- Runs: "
        + ", ".join(
            f"`runs/{name}`{' (reused)' if reused else ''}"
            for p in policies
            for name, reused in zip(P[p]["runs"], P[p]["reused"])
        ),
    ]
    lines += [f"- Note: {n}" for n in results["notes"]]
    lines += ["", "## Findings", ""] + [f"- {f}" for f in results["findings"]]
    lines += [
        "",
        "## Accuracy per test size "
        + (f"(mean ± std over {len(seeds)} seeds)" if len(seeds) > 1 else "(one seed)"),
        "",
        "| test size | " + " | ".join(policies) + " |",
        "|---|" + "---|" * len(policies),
    ]
    for key in results["eval_sizes"]:
        lines.append(
            f"| {key} | " + " | ".join(fmt(P[p]["eval_accuracy"][key]) for p in policies) + " |"
        )
    lines.append("| own sizes | " + " | ".join(fmt(P[p]["test_accuracy"]) for p in policies) + " |")
    lines += [
        "",
        "Rows are test sizes (height x width) sorted by area; 'own sizes' tests every image at "
        "its own size.",
        "",
        "## Cost and localization",
        "",
        "| policy | train size | train compiles | eval compiles | train examples/s "
        "| wall time (s) | final loss | examples | pixels (M) | padded pixels (M) "
        "| pointing game | pointing game (grid mean) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for p in policies:
        r = P[p]
        cells = [
            p,
            f"`{r['train_size']}`",
            fmt(r["train_compiles"], 0),
            fmt(r["eval_compiles"], 0),
            fmt(r["train_examples_per_sec"], 0),
            fmt(r["wall_time_s"], 1),
            fmt(r["final_loss"]),
            fmt(r.get("train_examples"), 0),
            fmt(_scaled(r.get("train_pixels"), 1e-6), 1),
            fmt(_scaled(r.get("train_padded_pixels"), 1e-6), 1),
            fmt(r.get("pointing_game")),
            fmt(_grid_mean(r.get("eval_pointing_game"))),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "Pointing game: the fraction of test images (own sizes) whose class-activation-map peak "
        "for the true class falls inside the digit's box; grid mean: its mean over the test "
        "sizes ('–' where the data has no boxes).",
        "",
        "## Plots",
        "",
        "![accuracy against test size](accuracy_vs_size.png)",
    ]
    if ds["spatial_dims"] == 2:
        lines += ["", "![accuracy heatmaps](heatmaps.png)"]
    return "\n".join(lines) + "\n"


def write_report(results: dict, workdir: str) -> None:
    """Write report.md, compare.json and the plots of ``results`` into ``workdir``."""
    write_json(os.path.join(workdir, "compare.json"), results)
    plot_accuracy_vs_size(results, os.path.join(workdir, "accuracy_vs_size.png"))
    if results["dataset"]["spatial_dims"] == 2:
        plot_heatmaps(results, os.path.join(workdir, "heatmaps.png"))
    write_atomic(os.path.join(workdir, "report.md"), report_markdown(results))


def plot_accuracy_vs_size(results: dict, path: str) -> None:
    """Mean accuracy per test size (sorted by area) per policy, with a ±std band over seeds."""
    from fcn_jax.plots import plt, save_figure

    keys = results["eval_sizes"]
    x = np.arange(len(keys))
    fig, ax = plt.subplots(figsize=(max(6, 0.45 * len(keys)), 4))
    for policy, r in results["policies"].items():
        mean = np.array([r["eval_accuracy"][k]["mean"] for k in keys])
        std = np.array([r["eval_accuracy"][k]["std"] or 0.0 for k in keys])
        (line,) = ax.plot(x, mean, marker="o", label=f"{policy} ({r['train_size']})")
        ax.fill_between(x, mean - std, mean + std, color=line.get_color(), alpha=0.2)
    prod = size_key(PRODUCTION_SIZE)
    if prod in keys:
        ax.axvline(keys.index(prod), color="gray", linestyle=":", label=f"production {prod}")
    ax.set_xticks(x, keys, rotation=60)
    ax.set_xlabel("test size (height x width, sorted by area)")
    ax.set_ylabel("test accuracy")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(f"{results['dataset']['name']}: mean over {len(results['seeds'])} seed(s)")
    save_figure(fig, path)


def plot_heatmaps(results: dict, path: str) -> None:
    """Mean accuracy over test height x width per policy, side by side, plus mixed_example −
    fixed (or mixed_step − fixed) on a diverging colormap (blue: mixed better)."""
    from fcn_jax.plots import draw_heatmap, plt, save_figure

    policies = list(results["policies"])
    means = {p: _means(results, p) for p in policies}
    diff, mixed = None, _mixed_policies(policies)[-1:]  # mixed_example when compared
    if mixed:
        diff = {k: means[mixed[0]][k] - means["fixed"][k] for k in means["fixed"]}
    n = len(policies) + (diff is not None)
    fig, axes = plt.subplots(1, n, figsize=(3.8 * n, 3.6), squeeze=False, layout="constrained")
    axes = list(axes[0])
    for i, (ax, p) in enumerate(zip(axes, policies)):
        image = draw_heatmap(ax, means[p], f"{p} ({results['policies'][p]['train_size']})")
        if i:
            ax.set_ylabel("")
    fig.colorbar(image, ax=axes[: len(policies)], shrink=0.8, label="test accuracy")
    if diff is not None:
        limit = max(max(abs(v) for v in diff.values()), 0.01)
        ax = axes[-1]
        title = f"{mixed[0]} − fixed"
        image = draw_heatmap(ax, diff, title, cmap="RdBu", vmin=-limit, vmax=limit)
        ax.set_ylabel("")
        for text in ax.texts:  # white labels vanish on the diverging map's pale middle
            text.set_color("white" if abs(float(text.get_text())) > 0.6 * limit else "black")
        fig.colorbar(image, ax=ax, shrink=0.8, label="accuracy difference")
    save_figure(fig, path)
