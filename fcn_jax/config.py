"""The typed training configuration (library code never reads absl FLAGS)."""

from __future__ import annotations

import dataclasses
import re

from fcn_jax.models import PRESETS

# Test sizes that include the 28×16 'production' image of the original discussion.
DEFAULT_EVAL_SIZES_2D = "grid:16,28,40,56"
DEFAULT_EVAL_SIZES_1D = "24,32,40,56,72"


@dataclasses.dataclass
class TrainConfig:
    """Everything a training run needs. Field docs double as the flag help text."""

    dataset: str = "procedural_digits"
    data_dir: str | None = None
    model: str = "seed"
    width: float = 1.0
    depth: int | None = None
    norm: str | None = None
    pool: str = "avg"
    train_size: str | None = None
    buckets: str | None = None
    eval_sizes: str | None = None
    eval_mode: str = "resize"
    eval_examples: int | None = 2000
    eval_batch_size: int = 250
    recalibrate_bn: bool = False
    epochs: float | None = None
    steps: int | None = 1500
    batch_size: int = 64
    optimizer: str = "adamw"
    learning_rate: float = 3e-3
    schedule: str = "cosine"
    warmup_steps: int = 100
    weight_decay: float = 1e-4
    label_smoothing: float = 0.0
    seed: int = 0
    precision: str = "float32"
    checkpoint_every: int = 500
    log_every: int = 100
    precompile: bool = False
    compilation_cache_dir: str | None = None
    distributed: bool = False
    skip_corrupt: bool = False

    def validate(self) -> TrainConfig:
        """Raise ValueError with a one-line message for a bad value; return self."""
        if self.model not in PRESETS:
            raise ValueError(f"--model={self.model!r}: expected one of {sorted(PRESETS)}")
        choices = {
            "optimizer": ("adamw", "sgd"),
            "schedule": ("constant", "cosine", "warmup_cosine"),
            "precision": ("float32", "bfloat16"),
            "eval_mode": ("resize", "canvas"),
            "pool": ("avg", "max"),
            "norm": (None, "batch", "group"),
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"--{name}={getattr(self, name)!r}: expected one of {allowed}")
        counts = ["batch_size", "eval_batch_size", "checkpoint_every", "log_every"]
        for name in counts + ["steps", "epochs", "depth"]:
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"--{name}={value}: expected a positive number")
        if self.eval_examples is not None and self.eval_examples < 0:
            raise ValueError(f"--eval_examples={self.eval_examples}: expected a number >= 0")
        for name in ("learning_rate", "width"):
            if not getattr(self, name) > 0:
                raise ValueError(f"--{name}={getattr(self, name)}: expected a positive number")
        for name in ("weight_decay", "warmup_steps"):
            if getattr(self, name) < 0:
                raise ValueError(f"--{name}={getattr(self, name)}: expected a number >= 0")
        if not 0 <= self.label_smoothing < 1:
            raise ValueError(f"--label_smoothing={self.label_smoothing}: expected 0 <= value < 1")
        if self.steps is None and self.epochs is None:
            raise ValueError("give --steps or --epochs")
        self._check_size_specs()
        return self

    def _check_size_specs(self) -> None:
        """Syntax of the size strings, before any data is loaded (the dimensionality, 1-D or
        2-D, comes from the data: a spec must parse for at least one)."""
        from fcn_jax.data.policies import parse_size_policy, resolve_buckets

        for name, parse in (
            ("train_size", lambda v, d: parse_size_policy(v, d)),
            ("eval_sizes", parse_eval_sizes),
            (
                "buckets",
                lambda v, d: resolve_buckets(v, parse_size_policy("native", d), [(1,) * d]),
            ),
        ):
            value = getattr(self, name)
            if value is None:
                continue
            errors = []
            for d in (2, 1):
                try:
                    parse(value, d)
                    break
                except ValueError as e:
                    errors.append(str(e))
            else:
                message = errors[0]
                raise ValueError(message if message.startswith("--") else f"--{name}: {message}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def field_help() -> dict[str, str]:
    """One-line help per config field (the absl entry point turns these into flags)."""
    return {
        "dataset": "procedural_digits[/CONFIG], mnist1d[/CONFIG], a TFDS name (mnist, "
        "cifar10, ...), npz:PATH or folder:PATH",
        "data_dir": "TFDS data directory (default: TFDS's own, ~/tensorflow_datasets)",
        "model": f"model preset: one of {sorted(PRESETS)}",
        "width": "channel-width multiplier of the preset",
        "depth": "number of stages/blocks of the preset (default: the preset's)",
        "norm": "normalization after each conv: batch or group (default: the preset's)",
        "pool": "global pooling: avg or max",
        "train_size": "size policy: fixed:HxW | fixed:N | mixed:LO-HI[:STEP][:scale] | native "
        "(default: native for datasets of varying size, else fixed at the data's size)",
        "buckets": "native policy's batch shapes: auto:K or a list like 32x32,48x64",
        "eval_sizes": "test sizes: a list like 28,28x16,40 or grid:16,28,40 (every HxW pair); "
        f"default {DEFAULT_EVAL_SIZES_2D} in 2-D, {DEFAULT_EVAL_SIZES_1D} in 1-D",
        "eval_mode": "resize: rescale the content to each test size; canvas: keep its scale "
        "and pad or crop to the canvas",
        "eval_examples": "test examples used per test size (all when 0)",
        "eval_batch_size": "evaluation batch size",
        "recalibrate_bn": "re-estimate BatchNorm statistics at each test size before testing",
        "epochs": "training length in epochs (used when --steps is not given)",
        "steps": "training length in steps",
        "batch_size": "global batch size (the base size with mixed:...:scale)",
        "optimizer": "adamw or sgd (with Nesterov momentum 0.9)",
        "learning_rate": "peak learning rate",
        "schedule": "constant, cosine (decay to 0) or warmup_cosine",
        "warmup_steps": "linear warm-up steps of warmup_cosine",
        "weight_decay": "decoupled weight decay (adamw) or L2 (sgd)",
        "label_smoothing": "label smoothing of the cross-entropy",
        "seed": "seed for parameters and the data order",
        "precision": "float32 or bfloat16 computation (parameters stay float32)",
        "checkpoint_every": "save a checkpoint every this many steps (and at the end)",
        "log_every": "log metrics every this many steps",
        "precompile": "compile every declared bucket ahead of time before training",
        "compilation_cache_dir": "persistent XLA compilation cache, shareable by runs",
        "distributed": "call jax.distributed.initialize() for multi-host training",
        "skip_corrupt": "skip unreadable image files (reporting how many) instead of failing",
    }


_SIZE = re.compile(r"^\d+(x\d+)?$")


def parse_eval_sizes(spec: str | None, spatial_dims: int) -> list[tuple[int, ...]]:
    """``"28,28x16"`` → [(28, 28), (28, 16)]; ``"grid:16,28"`` → every (h, w) pair (2-D)."""
    if spec is None:
        spec = DEFAULT_EVAL_SIZES_2D if spatial_dims == 2 else DEFAULT_EVAL_SIZES_1D
    expected = "expected a list like 28,28x16 or grid:16,28,40"
    grid = spec.startswith("grid:")
    items = [t.strip() for t in spec.removeprefix("grid:").split(",") if t.strip()]
    if not items or not all(_SIZE.match(t) for t in items) or (grid and spatial_dims != 2):
        raise ValueError(f"--eval_sizes={spec!r}: {expected}")
    if grid:
        values = sorted({int(t) for t in items})
        return [(h, w) for h in values for w in values]
    sizes = []
    for t in items:
        parts = tuple(int(p) for p in t.split("x"))
        if len(parts) == 1:
            parts = parts * spatial_dims
        if len(parts) != spatial_dims or min(parts) < 1:
            raise ValueError(f"--eval_sizes={spec!r}: {t!r} is not a {spatial_dims}-D size")
        sizes.append(parts)
    return list(dict.fromkeys(sizes))


def size_key(size) -> str:
    """(28, 16) → "28x16"; (40,) → "40" (the keys of ``eval_accuracy``)."""
    return "x".join(str(int(s)) for s in size)
