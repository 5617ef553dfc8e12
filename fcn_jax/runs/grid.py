"""Sweep grids: ``TrainConfig`` field → list of values, from a JSON file, a Python file
defining ``GRID = {...}`` (:func:`load_grid_file`) or ``key=v1,v2`` strings (:func:`parse_set`),
expanded (× seeds) into :class:`Run` s by :func:`plan_runs`."""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import re
import runpy

from fcn_jax.config import ResolvedConfig, TrainConfig, field_types
from fcn_jax.runs.rundir import run_name

# Set by the sweep itself, not by the grid.
_RESERVED = {"seed": "give seeds with --seeds", "data_dir": "give it as a base flag"}


@dataclasses.dataclass(frozen=True)
class Run:
    """One training run of a sweep.

    Attributes:
      name: its directory name under ``DIR/runs``, made from its grid values and seed.
      params: its grid values (field → value).
      seed: its seed.
      flags: its training flags (base flags, grid values, seed; no workdir).
      config: the config those flags give, resolved (None when read back from ``sweep.json``).
    """

    name: str
    params: dict
    seed: int
    flags: tuple[str, ...]
    config: ResolvedConfig | None = dataclasses.field(default=None, compare=False, repr=False)

    def to_dict(self) -> dict:
        return {"name": self.name, "params": self.params, "seed": self.seed, "flags": self.flags}

    @classmethod
    def from_dict(cls, d: dict) -> Run:
        return cls(d["name"], d["params"], int(d["seed"]), tuple(d["flags"]))


def _coerce(key: str, value, from_text: bool):
    """A grid value as the field's type (text from ``--set`` is parsed; JSON is checked)."""
    kind, optional = field_types()[key]
    if value is None or (from_text and value.lower() in ("none", "null")):
        if not (optional and TrainConfig.__dataclass_fields__[key].default is None):
            raise ValueError(f"{value!r} is not allowed (the flag cannot be unset)")
        return None
    if from_text:
        if kind is bool:
            if value.lower() not in ("true", "false", "1", "0"):
                raise ValueError(f"{value!r} is not a boolean")
            return value.lower() in ("true", "1")
        try:
            return kind(value)
        except ValueError:
            article = "an" if kind is int else "a"
            raise ValueError(f"{value!r} is not {article} {kind.__name__}") from None
    ok = {
        bool: isinstance(value, bool),
        int: isinstance(value, int) and not isinstance(value, bool),
        float: isinstance(value, int | float) and not isinstance(value, bool),
        str: isinstance(value, str),
    }[kind]
    if not ok:
        raise ValueError(f"{value!r} is not a{'n' if kind is int else ''} {kind.__name__}")
    return float(value) if kind is float else value


def check_grid(grid, source: str, from_text: bool = False) -> dict[str, list]:
    """Validate a grid (field → list of values), coercing values to the fields' types.

    Raises:
      ValueError: one line naming ``source`` (the file, or ``--set``) and the key at fault.
    """
    if not isinstance(grid, dict):
        raise ValueError(f"{source}: expected a mapping of flag names to lists of values")
    types, out = field_types(), {}
    for key, values in grid.items():
        where = f"{source}: key {key!r}"
        if key in _RESERVED:
            raise ValueError(f"{where}: not a grid key ({_RESERVED[key]})")
        if key not in types:
            raise ValueError(f"{where}: not a training flag (--helpfull lists them)")
        values = values if isinstance(values, list) else [values]
        if not values:
            raise ValueError(f"{where}: empty list of values")
        try:
            out[key] = [_coerce(key, v, from_text) for v in values]
        except ValueError as e:
            raise ValueError(f"{where}: {e}") from None
        if len(set(map(repr, out[key]))) != len(out[key]):
            raise ValueError(f"{where}: repeated values {values}")
    return out


def load_grid_file(path: str) -> dict[str, list]:
    """A grid from ``*.json`` (an object) or ``*.py`` (a module-level ``GRID`` dict)."""
    if not os.path.exists(path):
        raise ValueError(f"--grid={path}: no such file")
    if path.endswith(".py"):
        try:
            namespace = runpy.run_path(path)
        except Exception as e:
            raise ValueError(f"{path}: cannot run it: {type(e).__name__}: {e}") from None
        if "GRID" not in namespace:
            raise ValueError(f"{path}: defines no GRID = {{...}}")
        grid = namespace["GRID"]
    else:
        try:
            with open(path) as f:
                grid = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not valid JSON: {e}") from None
    return check_grid(grid, path)


def parse_set(items: list[str]) -> dict[str, list]:
    """``["model=seed,allcnn", "learning_rate=1e-3,3e-3"]`` → a grid. A value list may be
    JSON (``'eval_sizes=["24,28x16", "grid:16,28"]'``) when values contain commas."""
    grid = {}
    for item in items:
        key, eq, text = item.partition("=")
        key = key.strip()
        if not eq or not key or not text.strip():
            raise ValueError(f"--set={item}: expected KEY=V1,V2,...")
        if key in grid:
            raise ValueError(f"--set: key {key!r} given twice")
        if text.lstrip().startswith("["):
            try:
                values = [v if isinstance(v, str) else json.dumps(v) for v in json.loads(text)]
            except json.JSONDecodeError as e:
                raise ValueError(f"--set={item}: not a JSON list: {e}") from None
        else:
            values = [v.strip() for v in text.split(",")]
        grid[key] = values
    return check_grid(grid, "--set", from_text=True)


def merge_grids(*grids: dict[str, list]) -> dict[str, list]:
    out = {}
    for grid in grids:
        for key, values in grid.items():
            if key in out:
                raise ValueError(f"grid key {key!r} given both in --grid and --set")
            out[key] = values
    return out


def flag(name: str, value) -> str | None:
    """``--name=value`` (``--name``/``--noname`` for booleans; None: leave the flag out)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return f"--{name}" if value else f"--no{name}"
    return f"--{name}={value}"


def _slug(value) -> str:
    return re.sub(r"[^A-Za-z0-9.=+-]+", "_", str(value)).strip("_") or "_"


def point_label(params: dict) -> str:
    """``model=seed__train_size=fixed_28``: a grid point in its runs' names."""
    return "__".join(f"{k}={_slug(v)}" for k, v in params.items())


def plan_runs(grid: dict[str, list], seeds: list[int], base: dict) -> list[Run]:
    """Every grid point × seed as a :class:`Run`; each point's config is validated first.

    ``base``: the base training flags given explicitly (field → value); they go to every run.
    """
    clash = sorted(set(grid) & set(base))
    if clash:
        raise ValueError(f"--{clash[0]} given both as a base flag and in the grid")
    if not seeds:
        raise ValueError("--seeds: expected at least one seed")
    if "seed" in base:
        raise ValueError("--seed: a sweep sets each run's seed; give the seeds with --seeds")
    keys = list(grid)
    runs, names = [], {}
    for combo in itertools.product(*(grid[k] for k in keys)):
        params = dict(zip(keys, combo))
        where = "grid point " + ", ".join(f"{k}={v}" for k, v in params.items())
        try:  # resolved once a run (validated, size settings included): the reuse rule's
            configs = [TrainConfig(**{**base, **params, "seed": s}).resolved() for s in seeds]
        except ValueError as e:
            raise ValueError(f"{where}: {e}") from None
        for seed, config in zip(seeds, configs):
            name = run_name(point_label(params), seed, sep="__")
            if name in names:
                raise ValueError(f"{where} and {names[name]} both map to run name {name!r}")
            names[name] = where
            values = {**base, **params, "seed": seed}
            flags = tuple(f for f in (flag(k, v) for k, v in values.items()) if f)
            runs.append(Run(name, params, seed, flags, config))
    return runs
