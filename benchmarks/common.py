"""What the benchmarks share: table rows and their markdown, timing of train steps."""

from __future__ import annotations

import dataclasses
import math
import operator
import time
from collections.abc import Callable
from typing import Any

import jax

from fcn_jax import sharding
from fcn_jax.config import TrainConfig
from fcn_jax.data.plan import TRAIN_KEYS

OPS = {">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt}
COLUMNS = ("part", "name", "value", "unit", "target", "met", "note")


def parse_target(target: str) -> tuple[str, float]:
    """``">= 0.9"`` → ``(">=", 0.9)``."""
    op, _, number = target.strip().partition(" ")
    if op not in OPS:
        raise ValueError(f"bad target {target!r}: expected '<op> <number>' with op in {list(OPS)}")
    return op, float(number)


def met_flag(value: float | None, target: str | None) -> str:
    """``value`` against ``target`` (``"<op> <number>"``, op one of >=, <=, >, <): ``"yes"`` or
    ``"no"``; ``"n.a."`` without a target or a value (a skipped measurement)."""
    if target is None or value is None or not math.isfinite(value):
        return "n.a."
    op, number = parse_target(target)
    return "yes" if OPS[op](value, number) else "no"


@dataclasses.dataclass
class Row:
    """One measurement. ``value`` is None for a skipped measurement (say why in ``note``)."""

    part: str
    name: str
    value: float | None
    unit: str
    target: str | None = None
    note: str = ""

    def __post_init__(self):
        self.value = None if self.value is None else float(self.value)
        if self.target is not None:
            parse_target(self.target)  # fail early on a malformed target

    @property
    def met(self) -> str:
        return met_flag(self.value, self.target)

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "met": self.met}


def format_value(value: float | None) -> str:
    """Thousands separators for large values, 3 significant digits for the rest; ``"-"`` for a
    skipped measurement."""
    if value is None or not math.isfinite(value):
        return "-" if value is None else str(value)
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return str(int(value)) if value == int(value) else f"{value:.3g}"


def cells(row: dict[str, Any]) -> list[str]:
    """The markdown cells of a row dict (``Row.to_dict()``)."""
    values = (row["part"], row["name"], format_value(row["value"]), row["unit"])
    return [*map(str, values), row["target"] or "-", row["met"], str(row["note"])]


def to_markdown(rows: list[dict[str, Any]], header: str = "") -> str:
    """A markdown document: optional header paragraph, then one table of ``rows``."""
    lines = [header, ""] if header else []
    lines += ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for row in rows:
        escaped = (c.replace("|", "\\|").replace("\n", " ") for c in cells(row))
        lines.append("| " + " | ".join(escaped) + " |")
    return "\n".join(lines) + "\n"


def seed_config(**fields) -> TrainConfig:
    """The training config every step benchmark builds from (``fcn_jax.setup.build``): the
    ``seed`` model from seed 0, AdamW 3e-3 at a constant rate, no label smoothing."""
    base = dict(model="seed", optimizer="adamw", learning_rate=3e-3, schedule="constant")
    return TrainConfig(**{**base, "label_smoothing": 0.0, **fields})


class StepRunner:
    """A setup's compiled train step with its own state on the devices.

    ``batches`` are held on the devices for :meth:`run`; the first step on each (compiling
    every shape) is done at construction, ``losses`` are its losses.
    """

    def __init__(self, setup, batches=()):
        self.setup, mesh = setup, setup.mesh
        self.state = jax.tree.leaves(jax.device_put(setup.state, sharding.replicated(mesh)))
        self.batches = [self.placed(b) for b in batches]
        self.losses = [float(self.step(b)["loss"]) for b in self.batches]

    def placed(self, batch: dict) -> dict:
        """A loader's batch as the step takes it: global arrays split over the mesh."""
        return sharding.to_global(batch, self.setup.mesh, TRAIN_KEYS)

    def step(self, batch: dict) -> dict:
        self.state, metrics = self.setup.train_step(self.state, batch)
        return metrics

    def train(self, n: int):
        """``n`` steps on the loader's next batches; yields each batch as the loader made it."""
        for _ in range(n):
            batch = next(self.setup.loader)
            self.step(self.placed(batch))
            yield batch

    def run(self, n: int, batches: list[dict] | None = None) -> float:
        """Examples/s over ``n`` steps cycling through ``batches`` (default: all held), with
        one host sync at the end."""
        batches, examples, start = batches or self.batches, 0, time.perf_counter()
        for i in range(n):
            batch = batches[i % len(batches)]
            self.step(batch)
            examples += batch["label"].shape[0]
        jax.block_until_ready(self.state)
        return examples / (time.perf_counter() - start)


def time_interleaved(runs: dict[Any, Callable[[], float]], rounds: int) -> dict[Any, list]:
    """Each of ``runs`` called once per round, in turn, the order reversed every other round
    (so that load from other processes hits them alike); their results by name."""
    names, results = list(runs), {name: [] for name in runs}
    for r in range(rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            results[name].append(runs[name]())
    return results
