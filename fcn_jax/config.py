"""The typed training configuration (library code never reads absl FLAGS)."""

from __future__ import annotations

import dataclasses
import re

from fcn_jax.models import PRESETS

# Test sizes that include the 28×16 'production' image of the original discussion.
DEFAULT_EVAL_SIZES_2D = "grid:16,28,40,56"
DEFAULT_EVAL_SIZES_1D = "24,32,40,56,72"


# Values of the fields left unset (None) by the flags, the recipe and the caller's defaults.
DEFAULTS = {
    "model": "seed",
    "width": 1.0,
    "pool": "avg",
    "recalibrate_bn": False,
    "steps": 1500,
    "batch_size": 64,
    "optimizer": "adamw",
    "learning_rate": 3e-3,
    "schedule": "cosine",
    "warmup_steps": 100,
    "weight_decay": 1e-4,
    "label_smoothing": 0.0,
    "translate": 0.0,
}
# The training length is one setting given either way: a layer that sets one sets both.
LENGTH_FIELDS = ("steps", "epochs")


@dataclasses.dataclass
class TrainConfig:
    """Everything a training run needs. Field docs double as the flag help text.

    A field left None is *unset*: :meth:`resolved` fills it from the recipe (``--recipe``),
    then from the caller's defaults (e.g. a comparison's), then from :data:`DEFAULTS`; fields
    such as ``depth``, ``norm``, ``train_size`` or ``zoom`` may stay None (the preset's, the
    data's or no augmentation).
    """

    dataset: str = "procedural_digits"
    data_dir: str | None = None
    recipe: str | None = None
    model: str | None = None
    width: float | None = None
    depth: int | None = None
    norm: str | None = None
    pool: str | None = None
    train_size: str | None = None
    buckets: str | None = None
    zoom: str | None = None
    translate: float | None = None
    eval_sizes: str | None = None
    eval_mode: str = "resize"
    eval_examples: int | None = 2000
    eval_batch_size: int = 250
    recalibrate_bn: bool | None = None
    epochs: float | None = None
    steps: int | None = None
    batch_size: int | None = None
    optimizer: str | None = None
    learning_rate: float | None = None
    schedule: str | None = None
    warmup_steps: int | None = None
    weight_decay: float | None = None
    label_smoothing: float | None = None
    seed: int = 0
    precision: str = "float32"
    matmul_precision: str = "auto"
    conv_grad: str = "auto"
    input_pipeline: str = "auto"
    device_data_fraction: float = 0.25
    worker_count: int = 0
    checkpoint_every: int = 500
    log_every: int = 100
    precompile: bool = False
    compilation_cache_dir: str | None = None
    distributed: bool = False
    skip_corrupt: bool = False
    pixel_range: str = "0,1"

    def resolved(self, defaults: dict | None = None) -> TrainConfig:
        """A validated copy with every unset field filled: the recipe's value, else
        ``defaults``'s, else :data:`DEFAULTS`'s. Explicit values always win; ``steps`` and
        ``epochs`` count as one setting (explicitly giving both is an error)."""
        from fcn_jax.recipes import recipe_values

        values = self.to_dict()
        if all(values[k] is not None for k in LENGTH_FIELDS):
            raise ValueError(
                f"--steps={self.steps} and --epochs={self.epochs}: give one training length"
            )
        length_set = any(values[k] is not None for k in LENGTH_FIELDS)
        for layer in (recipe_values(self.recipe), defaults or {}, DEFAULTS):
            for key, value in layer.items():
                if key in LENGTH_FIELDS:
                    if not length_set:
                        values[key] = value
                elif values[key] is None:
                    values[key] = value
            length_set = length_set or any(k in layer for k in LENGTH_FIELDS)
        return TrainConfig(**values).validate()

    def validate(self) -> TrainConfig:
        """Raise ValueError with a one-line message for a bad value; return self (a resolved
        config: see :meth:`resolved`)."""
        if self.model not in PRESETS:
            raise ValueError(f"--model={self.model!r}: expected one of {sorted(PRESETS)}")
        choices = {
            "optimizer": ("adamw", "sgd"),
            "schedule": ("constant", "cosine", "warmup_cosine"),
            "precision": ("float32", "bfloat16"),
            "matmul_precision": ("auto", "default", "high", "highest"),
            "conv_grad": ("auto", "custom", "autodiff"),
            "input_pipeline": ("auto", "device", "grain"),
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
        if self.worker_count < 0:
            raise ValueError(f"--worker_count={self.worker_count}: expected a number >= 0")
        if not 0 < self.device_data_fraction <= 1:
            raise ValueError(
                f"--device_data_fraction={self.device_data_fraction}: expected 0 < value <= 1"
            )
        if not 0 <= self.label_smoothing < 1:
            raise ValueError(f"--label_smoothing={self.label_smoothing}: expected 0 <= value < 1")
        if (self.steps is None) == (self.epochs is None):
            raise ValueError("give one of --steps and --epochs")
        from fcn_jax.data.augment import parse_augmentation

        parse_augmentation(self.zoom, self.translate)
        self.pixel_bounds()
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

    def pixel_bounds(self) -> tuple[float, float]:
        """``pixel_range`` as (LO, HI)."""
        try:
            lo, hi = (float(v) for v in self.pixel_range.split(","))
        except ValueError:
            lo = hi = None
        if lo is None or not lo < hi:
            raise ValueError(f"--pixel_range={self.pixel_range!r}: expected LO,HI with LO < HI")
        return lo, hi

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def field_help(defaults: dict | None = None) -> dict[str, str]:
    """One-line help per config field (the absl entry point turns these into flags), naming
    the value an unset field takes (``defaults`` over :data:`DEFAULTS`)."""
    from fcn_jax.recipes import RECIPES

    texts = {
        "dataset": "procedural_digits[/CONFIG], mnist1d[/CONFIG], a TFDS name (mnist, "
        "cifar10, ...), npz:PATH or folder:PATH",
        "data_dir": "TFDS data directory (default: TFDS's own, ~/tensorflow_datasets)",
        "recipe": f"tuned defaults, one of {sorted(RECIPES)}: they fill every flag not given "
        "(see fcn_jax/recipes.py); config.json records the resolved values",
        "model": f"model preset: one of {sorted(PRESETS)}",
        "width": "channel-width multiplier of the preset",
        "depth": "number of stages/blocks of the preset (default: the preset's)",
        "norm": "normalization after each conv: batch or group (default: the preset's)",
        "pool": "global pooling: avg or max",
        "train_size": "size policy: fixed:HxW | fixed:N | mixed_step:LO-HI[:STEP][:scale] (one "
        "size per step; alias mixed:) | mixed_example:LO-HI[:log][:aspect=R] (one size per "
        "example, packed into --buckets) | native (default: native for datasets of varying "
        "size, else fixed at the data's size)",
        "buckets": "batch shapes of the native and mixed_example policies: auto:K (at most K "
        "compiles; default auto:8) or a list like 32x32,48x64",
        "zoom": "augmentation: content scaled by a factor drawn log-uniformly from LO-HI "
        "(e.g. 0.7-1.2) within its canvas (default: none)",
        "translate": "augmentation: content shifted by up to this fraction of the canvas per "
        "axis (0 to 0.5)",
        "eval_sizes": "test sizes: a list like 28,28x16,40 or grid:16,28,40 (every HxW pair); "
        f"default {DEFAULT_EVAL_SIZES_2D} in 2-D, {DEFAULT_EVAL_SIZES_1D} in 1-D",
        "eval_mode": "resize: rescale the content to each test size; canvas: keep its scale "
        "and pad or crop to the canvas",
        "eval_examples": "test examples used per test size (all when 0)",
        "eval_batch_size": "evaluation batch size",
        "recalibrate_bn": "re-estimate BatchNorm statistics at each test size before testing",
        "epochs": "training length in epochs (instead of --steps)",
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
        "matmul_precision": "precision of float32 convolutions and matmuls on GPU/TPU: highest "
        "(exact: padded = alone within 1e-5), high or default (TF32 on GPU: 2-3x faster, ~1e-3 "
        "relative); auto: highest for float32 runs with padded batches (native, "
        "mixed_example), else default",
        "conv_grad": "input gradient of strided convolutions: custom (no zero-stuffing), "
        "autodiff (XLA's own) or auto (custom on CPU and GPU, where it measured faster; "
        "autodiff on TPU)",
        "input_pipeline": "device: the train split lives on the devices and batches are built "
        "there in jit; grain: host threads; auto: device when the split has one size and fits "
        "in --device_data_fraction of a device's memory",
        "device_data_fraction": "share of one device's memory the train split may take on the "
        "device path",
        "worker_count": "grain pipeline: build batches in this many processes (0: threads of "
        "this process)",
        "checkpoint_every": "save a checkpoint every this many steps (and at the end)",
        "log_every": "log metrics every this many steps",
        "precompile": "compile every declared bucket ahead of time before training",
        "compilation_cache_dir": "persistent XLA compilation cache, shareable by runs",
        "distributed": "call jax.distributed.initialize() for multi-host training",
        "skip_corrupt": "skip unreadable image files (reporting how many) instead of failing",
        "pixel_range": "LO,HI: the range float pixels of npz data must lie in (uint8 is divided "
        "by 255)",
    }
    for key, value in {**DEFAULTS, **(defaults or {})}.items():
        texts[key] += f" (default: {value})"
    return texts


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
        if len(parts) != spatial_dims:
            raise ValueError(f"--eval_sizes={spec!r}: {t!r} is not a {spatial_dims}-D size")
        if min(parts) < 1:
            raise ValueError(f"--eval_sizes={spec!r}: {t!r} has a zero side")
        sizes.append(parts)
    return list(dict.fromkeys(sizes))


def size_key(size) -> str:
    """(28, 16) → "28x16"; (40,) → "40" (the keys of ``eval_accuracy``)."""
    return "x".join(str(int(s)) for s in size)
