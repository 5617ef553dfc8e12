"""Compare training-size policies: the same model trained under ``fixed``, ``mixed_step``,
``mixed_example`` and ``native`` sizes, each for a few seeds, all tested on one shared grid of
test sizes, with the same number of training examples per policy.

``run_comparison(CompareConfig(train=TrainConfig(...)), workdir)`` opens the dataset once,
trains (or reuses, by the rule of :mod:`fcn_jax.runs.rundir`) one run per policy and seed in
``workdir/runs/<policy>-seed<k>/`` (ordinary training workdirs), aggregates their summaries
and writes the report (:mod:`fcn_jax.runs.report`): ``report.md``, ``compare.json``,
``accuracy_vs_size.png`` and (2-D data) ``heatmaps.png``.
"""

from __future__ import annotations

import dataclasses
import datetime
import math
import os
import time

import jax
from absl import logging

from fcn_jax.config import ResolvedConfig, TrainConfig, flag_defaults
from fcn_jax.data import Dataset, SizePolicy, parse_size_policy
from fcn_jax.data.policies import KIND_ALIASES
from fcn_jax.run import train_and_evaluate
from fcn_jax.runs.report import PRODUCTION_SIZE, findings, write_report
from fcn_jax.runs.rundir import RunDir, run_name, with_shared_cache
from fcn_jax.runs.stats import machine_info, sort_sizes, stats
from fcn_jax.setup import default_policy, model_spec, open_dataset
from fcn_jax.sizes import SizeList, format_size
from fcn_jax.workdir_lock import WorkdirLock

POLICIES = ("fixed", "mixed_step", "mixed_example", "native")

# mixed_example's default options: log-uniform sizes (equal weight per octave of scale).
DEFAULT_EXAMPLE_OPTIONS = ":log"
# mixed_step's default grid has at most this many values per axis (1-D, 2-D): one compile each.
STEP_GRID_VALUES = {1: 9, 2: 4}
# Summary fields aggregated over seeds (besides accuracies and the pointing game).
_AGGREGATED = (
    "train_compiles",
    "eval_compiles",
    "train_examples_per_sec",
    "wall_time_s",
    "final_loss",
    "train_examples",
    "train_pixels",
    "train_padded_pixels",
    "steps",
)


def comparison_defaults() -> dict:
    """The training values of a comparison where they differ from a lone run's, all in one
    place: they fill what neither the flags nor a recipe set (``dataset`` and
    ``eval_examples``, never unset, are the flags' defaults). All policies together finish in
    about 5 minutes on a 2-core CPU (benchmarks/compare_budget.py)::

        python -m experiments.compare --workdir=runs/compare
    """
    return {
        "dataset": "procedural_digits/fixed28",
        "eval_examples": 1000,
        # The network must hold every size the policies train on: on real digits the 3-stage
        # `seed` network without normalization underfits mixed sizes (final loss 0.20 against
        # fixed's 0.05; twice the steps: +1.6 points at 28x28) and ended 2.8 points below
        # fixed at 28x28, while `vgg` at width 0.5 with BatchNorm (recalibrated per test size)
        # ends 0.9 below at the same cost (docs/results.md).
        "model": "vgg",
        "width": 0.5,
        "norm": "batch",
        "recalibrate_bn": True,
        # At least 4 epochs (config.training_length): 1200 steps are 1.5 epochs of 50 000 real
        # digits, where mixed_example still underfit (1.2 points below fixed at 28x28; 0.5
        # after 4 epochs). Smaller data keeps the 1200 steps.
        "steps": 1200,
        "min_epochs": 4,
    }


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
        default_factory=lambda: flag_defaults(comparison_defaults())
    )
    seeds: int = 1
    policies: tuple[str, ...] = POLICIES
    fixed_size: str | None = None
    mixed_size: str | None = None
    example_size: str | None = None

    def validate(self) -> CompareConfig:
        """Raise ValueError with a one-line message for a bad option; return self (the train
        config is checked as it is resolved)."""
        if self.train.train_size is not None:
            raise ValueError(
                "--train_size: a comparison sets it per policy; use --policies, --fixed_size "
                "and --mixed_size"
            )
        if self.seeds < 1:
            raise ValueError(f"--seeds={self.seeds}: expected a positive number")
        self.policies = tuple(KIND_ALIASES.get(p, p) for p in self.policies)
        unknown = [p for p in self.policies if p not in POLICIES]
        if unknown or not self.policies or len(set(self.policies)) != len(self.policies):
            raise ValueError(
                f"--policies={','.join(self.policies)}: expected distinct names among {POLICIES}"
            )
        return self

    def size_policies(self, dataset, eval_sizes: list) -> dict[str, SizePolicy]:
        """Each policy's ``--train_size``, parsed for ``dataset`` (e.g. ``{"fixed":
        SizePolicy("fixed", 2, size=(28, 28)), ...}``), the defaults derived from it and the
        test sizes (see the attributes)."""
        d, fixed = dataset.spatial_dims, default_policy(dataset)  # at the data's size, or native
        if self.fixed_size:
            fixed = parse_size_policy(f"fixed:{self.fixed_size}", d)
        elif fixed.kind != "fixed":
            fixed = SizePolicy("fixed", d, size=(28, 28) if d == 2 else (40,))
        f = fixed.size
        lo = [min(v) for v in zip(f, *eval_sizes)]
        hi = [max(v) for v in zip(f, *eval_sizes)]
        example = self.example_size or f"{_compact(lo)}-{_compact(hi)}{DEFAULT_EXAMPLE_OPTIONS}"
        mixed = self.mixed_size or _step_grid(f, lo, hi, STEP_GRID_VALUES[d])
        return {
            "fixed": fixed,
            "mixed_step": parse_size_policy(f"mixed_step:{mixed}", d),
            "mixed_example": parse_size_policy(f"mixed_example:{example}", d),
            "native": SizePolicy("native", d),
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
    return str(size[0]) if len(set(size)) == 1 else format_size(size)


@dataclasses.dataclass
class Plan:
    """What a comparison runs: each policy's run config per seed, all on one test grid."""

    base: ResolvedConfig  # bound to the data; eval_sizes and the compilation cache shared
    policies: dict[str, SizePolicy]  # policy name → its --train_size
    seeds: list[int]
    notes: list[str]

    def run_config(self, policy: str, seed: int) -> ResolvedConfig:
        train_size = self.policies[policy]
        return dataclasses.replace(
            self.base,
            train_size=train_size,
            seed=seed,
            # A recipe's or the user's buckets are the padded policies' own setting.
            buckets=self.base.buckets if train_size.pads else None,
        )


def plan_comparison(
    config: CompareConfig, base: ResolvedConfig, dataset: Dataset, workdir: str
) -> Plan:
    """The runs of ``config`` (validated; ``base``: its resolved train config) on ``dataset``;
    bad sizes and policies fail here, before any training."""
    notes, policies = [], list(config.policies)
    if "native" in policies and default_policy(dataset).kind != "native":
        policies.remove("native")
        notes.append(
            f"native dropped: every example of {dataset.name} has the same size, so native "
            "training would equal fixed training at that size."
        )
    if not policies:
        raise ValueError("--policies: nothing left to compare")
    base = base.for_data(dataset.spatial_dims, len(dataset.train))
    eval_sizes, note = shared_eval_sizes(base.eval_sizes)
    notes += [note] if note else []
    sizes = config.size_policies(dataset, list(eval_sizes))
    base = with_shared_cache(dataclasses.replace(base, eval_sizes=eval_sizes), workdir)
    seeds = [base.seed + k for k in range(config.seeds)]
    return Plan(base, {p: sizes[p] for p in policies}, seeds, notes)


def run_comparison(config: CompareConfig, workdir: str, *, command: list[str] | None = None):
    """Train or reuse every run, aggregate, write the report files; return compare.json's
    content. ``command`` (e.g. ``sys.argv``) is recorded in the report. One comparison per
    workdir: another one running there is a one-line ``WorkdirBusy`` (and each run locks its
    own directory)."""
    with WorkdirLock(workdir, holder=jax.process_index() == 0) as lock:
        lock.acquire()  # before the dataset is opened: a second comparison stops at once
        return _run_comparison(config, workdir, command, lock)


def _run_comparison(config: CompareConfig, workdir: str, command, lock: WorkdirLock):
    start = time.perf_counter()
    base = config.validate().train.resolved(comparison_defaults())
    # Opened once, for every run (opening a folder dataset reads each of its files).
    dataset = open_dataset(base)
    plan = plan_comparison(config, base, dataset, workdir)
    os.makedirs(workdir, exist_ok=True)
    lock.acquire()  # a workdir made just now
    per_policy = {}
    for policy, train_size in plan.policies.items():
        runs = [run_name(policy, seed) for seed in plan.seeds]
        done = [
            train_or_reuse(plan.run_config(policy, seed), RunDir.of(workdir, name), dataset)
            for seed, name in zip(plan.seeds, runs)
        ]
        summaries, reused = (list(x) for x in zip(*done))
        per_policy[policy] = aggregate_policy(train_size.spec(), runs, summaries, reused)
    first = next(iter(per_policy.values()))
    results = {
        "command": list(command) if command is not None else None,
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": machine_info(),
        "dataset": dataset.facts(),
        "model": {"preset": plan.base.model, **model_spec(plan.base, dataset).to_dict()},
        "num_params": first["num_params"],
        "config": {**plan.base.to_dict(), "train_size": None, "seed": None, "buckets": None},
        "options": {
            "seeds": config.seeds,
            "policies": list(config.policies),
            "fixed_size": config.fixed_size,
            "mixed_size": config.mixed_size,
            "example_size": config.example_size,
        },
        "seeds": plan.seeds,
        "eval_sizes": sort_sizes(first["eval_accuracy"]),
        "fixed_size": format_size(plan.policies["fixed"].size)
        if "fixed" in plan.policies
        else None,
        "notes": plan.notes,
        "policies": per_policy,
    }
    results["findings"] = findings(results)
    results["wall_time_s"] = time.perf_counter() - start  # the whole comparison, reuse included
    if jax.process_index() == 0:  # one writer
        write_report(results, workdir)
    return results


def shared_eval_sizes(sizes: SizeList) -> tuple[SizeList, str | None]:
    """The test sizes of every run: ``sizes`` (bound to the data), plus 28x16 in 2-D when it
    is missing. Returns ``(sizes, note or None)``."""
    if sizes.spatial_dims != 2 or PRODUCTION_SIZE in sizes.sizes:
        return sizes, None
    extended = SizeList((*sizes.sizes, PRODUCTION_SIZE), 2)
    return extended, f"added the production size 28x16 to --eval_sizes={sizes.spec()}."


def train_or_reuse(config: TrainConfig, rundir: RunDir, dataset: Dataset) -> tuple[dict, bool]:
    """``(summary, reused)``: a run the reuse rule keeps is read back (``True``); anything
    else goes to ``train_and_evaluate`` with the open ``dataset`` (``False``), which trains,
    resumes an interrupted run, re-evaluates a finished one or refuses a conflicting one."""
    if rundir.reusable(config):
        logging.info("%s: reusing the finished run", rundir.path)
        return rundir.summary(), True
    old = rundir.summary()
    logging.info("%s: training %s, seed %d", rundir.path, config.train_size.spec(), config.seed)
    summary = train_and_evaluate(config, rundir.path, dataset=dataset)
    return rundir.keep_training_measurements(old, summary), False


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
    out.update({key: stats(s.get(key) for s in summaries) for key in _AGGREGATED})
    if all("pointing_game" in s for s in summaries):
        out["pointing_game"] = stats(s["pointing_game"] for s in summaries)
        out["eval_pointing_game"] = {
            k: stats(s["eval_pointing_game"][k] for s in summaries) for k in sizes
        }
    return out
