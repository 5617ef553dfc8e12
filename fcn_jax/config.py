"""The typed training configuration (library code never reads absl FLAGS)."""

from __future__ import annotations

import dataclasses
import typing

from fcn_jax.models import PRESETS
from fcn_jax.sizes import Size, parse_sizes

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


def _field(default, help: str, *, resumable: bool = False, affects_results: bool = True):
    """A config field with its flag help and roles (see :func:`fields_where`)."""
    roles = {"help": help, "resumable": resumable, "affects_results": affects_results}
    return dataclasses.field(default=default, metadata=roles)


@dataclasses.dataclass
class TrainConfig:
    """Everything a training run needs. Each field carries its flag help and its roles.

    A field left None is *unset*: :meth:`resolved` fills it from the recipe (``--recipe``),
    then from the caller's defaults (e.g. a comparison's), then from :data:`DEFAULTS`; fields
    such as ``depth``, ``norm``, ``train_size`` or ``zoom`` may stay None (the preset's, the
    data's or no augmentation).
    """

    dataset: str = _field(
        "procedural_digits",
        "procedural_digits[/CONFIG], mnist1d[/CONFIG], a TFDS name (mnist, "
        "cifar10, ...), npz:PATH, folder:PATH or idx:DIR",
    )
    data_dir: str | None = _field(
        None,
        "TFDS data directory (default: TFDS's own, ~/tensorflow_datasets)",
        resumable=True,
        affects_results=False,
    )
    recipe: str | None = _field(
        None,
        "tuned defaults, one of {recipes}: they fill every flag not given "
        "(see fcn_jax/recipes.py); config.json records the resolved values",
    )
    model: str | None = _field(
        None,
        "model preset: one of {presets}",
    )
    width: float | None = _field(
        None,
        "channel-width multiplier of the preset",
    )
    depth: int | None = _field(
        None,
        "number of stages/blocks of the preset (default: the preset's)",
    )
    norm: str | None = _field(
        None,
        "normalization after each conv: batch, group or none (default: the preset's)",
    )
    pool: str | None = _field(
        None,
        "global pooling: avg or max",
    )
    train_size: str | None = _field(
        None,
        "size policy: fixed:HxW | fixed:N | mixed_step:LO-HI[:STEP][:scale] (one "
        "size per step; alias mixed:) | mixed_example:LO-HI[:log][:aspect=R] (one size per "
        "example, packed into --buckets) | native (default: native for datasets of varying "
        "size, else fixed at the data's size)",
    )
    buckets: str | None = _field(
        None,
        "batch shapes of the native and mixed_example policies: auto:K (at most K "
        "compiles; default auto:8) or a list like 32x32,48x64",
    )
    zoom: str | None = _field(
        None,
        "augmentation: content scaled by a factor drawn log-uniformly from LO-HI "
        "(e.g. 0.7-1.2) within its canvas (default: none)",
    )
    translate: float | None = _field(
        None,
        "augmentation: content shifted by up to this fraction of the canvas per axis (0 to 0.5)",
    )
    eval_sizes: str | None = _field(
        None,
        "test sizes: a list like 28,28x16,40 or grid:16,28,40 (every HxW pair); "
        "default {eval_2d} in 2-D, {eval_1d} in 1-D",
        resumable=True,
    )
    eval_mode: str = _field(
        "resize",
        "resize: rescale the content to each test size; canvas: keep its scale "
        "and pad or crop to the canvas",
        resumable=True,
    )
    eval_examples: int | None = _field(
        2000,
        "test examples used per test size (all when 0)",
        resumable=True,
    )
    eval_batch_size: int = _field(
        250,
        "evaluation batch size",
        resumable=True,
        affects_results=False,
    )
    eval_every: int | None = _field(
        None,
        "also evaluate the test sizes on --eval_examples every N steps (default: at the end only)",
        resumable=True,
        affects_results=False,
    )
    recalibrate_bn: bool | None = _field(
        None,
        "re-estimate BatchNorm statistics at each test size before testing",
        resumable=True,
    )
    tta_sizes: str | None = _field(
        None,
        "test-time augmentation: also test with each example's logits averaged over these "
        "sizes (e.g. 28,42,56), reported in summary.json as tta_accuracy",
        resumable=True,
    )
    epochs: float | None = _field(
        None,
        "training length in epochs (instead of --steps)",
    )
    steps: int | None = _field(
        None,
        "training length in steps",
    )
    batch_size: int | None = _field(
        None,
        "global batch size (the base size with mixed:...:scale)",
    )
    optimizer: str | None = _field(
        None,
        "adamw or sgd (with Nesterov momentum 0.9)",
    )
    learning_rate: float | None = _field(
        None,
        "peak learning rate",
    )
    schedule: str | None = _field(
        None,
        "constant, cosine (decay to 0) or warmup_cosine",
    )
    warmup_steps: int | None = _field(
        None,
        "linear warm-up steps of warmup_cosine",
    )
    weight_decay: float | None = _field(
        None,
        "decoupled weight decay (adamw) or L2 (sgd)",
    )
    label_smoothing: float | None = _field(
        None,
        "label smoothing of the cross-entropy",
    )
    seed: int = _field(
        0,
        "seed for parameters and the data order",
    )
    precision: str = _field(
        "float32",
        "float32 or bfloat16 computation (parameters stay float32)",
    )
    matmul_precision: str = _field(
        "auto",
        "precision of float32 convolutions and matmuls on GPU/TPU: highest "
        "(exact: padded = alone within 1e-5), high or default (TF32 on GPU: 2-3x faster, ~1e-3 "
        "relative); auto: highest for float32 runs with padded batches (native, "
        "mixed_example), else default",
    )
    conv_grad: str = _field(
        "auto",
        "input gradient of strided convolutions: custom (no zero-stuffing), "
        "autodiff (XLA's own) or auto (custom on CPU and GPU, where it measured faster; "
        "autodiff on TPU)",
        resumable=True,
    )
    input_pipeline: str = _field(
        "auto",
        "device: the train split lives on the devices and batches are built "
        "there in jit; grain: host threads; auto: device when the split has one size and fits "
        "in --device_data_fraction of a device's memory",
        resumable=True,
    )
    device_data_fraction: float = _field(
        0.25,
        "share of one device's memory the train split may take on the device path",
        resumable=True,
    )
    worker_count: int = _field(
        0,
        "grain pipeline: build batches in this many processes (0: threads of this process)",
        resumable=True,
    )
    checkpoint_every: int = _field(
        500,
        "save a checkpoint every this many steps (and at the end)",
        resumable=True,
        affects_results=False,
    )
    log_every: int = _field(
        100,
        "log metrics every this many steps",
        resumable=True,
        affects_results=False,
    )
    precompile: bool = _field(
        False,
        "compile every declared bucket ahead of time before training",
        resumable=True,
        affects_results=False,
    )
    compilation_cache_dir: str | None = _field(
        None,
        "persistent XLA compilation cache, shareable by runs",
        resumable=True,
        affects_results=False,
    )
    distributed: bool = _field(
        False,
        "call jax.distributed.initialize() for multi-host training",
        resumable=True,
        affects_results=False,
    )
    skip_corrupt: bool = _field(
        False,
        "skip unreadable image files (reporting how many) instead of failing",
    )
    pixel_range: str = _field(
        "0,1",
        "LO,HI: the range float pixels of npz data must lie in (uint8 is divided by 255)",
    )

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
        recipe = recipe_values(self.recipe, values)
        for layer in (recipe, defaults or {}, DEFAULTS):
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
            "norm": (None, "none", "batch", "group"),
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"--{name}={getattr(self, name)!r}: expected one of {allowed}")
        counts = ["batch_size", "eval_batch_size", "checkpoint_every", "log_every"]
        for name in counts + ["steps", "epochs", "depth", "eval_every"]:
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
        from fcn_jax.data import parse_size_policy, resolve_buckets

        for name, parse in (
            ("train_size", lambda v, d: parse_size_policy(v, d)),
            ("eval_sizes", parse_eval_sizes),
            ("tta_sizes", parse_tta_sizes),
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

    def recipe_dropped(self) -> dict:
        """Of a resolved config: the recipe's values it dropped as not applying to an explicit
        choice (config.json's ``recipe_dropped``), e.g. ``{"buckets": "auto:8"}``."""
        from fcn_jax.recipes import dropped_values

        return dropped_values(self.recipe, self.to_dict())


def field_help(defaults: dict | None = None) -> dict[str, str]:
    """One-line help per config field (the absl entry point turns these into flags), naming
    the value an unset field takes (``defaults`` over :data:`DEFAULTS`)."""
    from fcn_jax.recipes import RECIPES

    names = {
        "recipes": sorted(RECIPES),
        "presets": sorted(PRESETS),
        "eval_2d": DEFAULT_EVAL_SIZES_2D,
        "eval_1d": DEFAULT_EVAL_SIZES_1D,
    }
    texts = {f.name: f.metadata["help"].format(**names) for f in dataclasses.fields(TrainConfig)}
    for key, value in {**DEFAULTS, **(defaults or {})}.items():
        texts[key] += f" (default: {value})"
    return texts


def fields_where(role: str) -> frozenset[str]:
    """Names of the fields with a role: ``resumable`` (may change when a run resumes: how, not
    what, it computes) or ``affects_results`` (False: bookkeeping a finished run can be reused
    across)."""
    return frozenset(f.name for f in dataclasses.fields(TrainConfig) if f.metadata[role])


def field_types(config_cls: type = TrainConfig) -> dict[str, tuple[type, bool]]:
    """Field → (base type, whether None is allowed) of a config dataclass: what flags and
    sweep grids parse."""
    hints = typing.get_type_hints(config_cls)
    out = {}
    for f in dataclasses.fields(config_cls):
        args = typing.get_args(hints[f.name])
        base = [t for t in args if t is not type(None)] or [hints[f.name]]
        out[f.name] = (base[0], type(None) in args)
    return out


def parse_eval_sizes(
    spec: str | None, spatial_dims: int, *, flag: str = "eval_sizes", grid: bool = True
) -> list[Size]:
    """:func:`~fcn_jax.sizes.parse_sizes` of ``spec``, or of the default test sizes when unset."""
    if spec is None:
        spec = DEFAULT_EVAL_SIZES_2D if spatial_dims == 2 else DEFAULT_EVAL_SIZES_1D
    return parse_sizes(spec, spatial_dims, flag=flag, grid=grid)


def parse_tta_sizes(spec: str | None, spatial_dims: int) -> list[Size]:
    """``"28,42"`` → [(28, 28), (42, 42)] (2-D): the sizes whose logits test-time
    augmentation averages; [] when unset. A list only (no ``grid:``)."""
    if spec is None:
        return []
    return parse_sizes(spec, spatial_dims, flag="tta_sizes", grid=False)
