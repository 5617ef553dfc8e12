"""The typed training configuration (library code never reads absl FLAGS): a
:class:`TrainConfig` as the flags give it (None: unset) and the :class:`ResolvedConfig` a run
takes (every setting filled, size settings parsed)."""

from __future__ import annotations

import dataclasses
import typing

from fcn_jax.models import PRESETS
from fcn_jax.settings import (
    DEFAULT_EVAL_SIZES,
    SIZE_FIELDS,
    bind_sizes,
    parsed_sizes,
    spelled,
)
from fcn_jax.sizes import SizeList

if typing.TYPE_CHECKING:
    from fcn_jax.data import BucketSpec, SizePolicy


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
# The training length is one setting: a layer that sets one of these sets them all
# (min_epochs: a defaults' floor under its steps; see training_length).
LENGTH_FIELDS = ("steps", "epochs", "min_epochs")


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
        "cifar10, ...), npz:PATH, folder:PATH, idx:DIR, ucr:NAME (a UCR/UEA time-series "
        "dataset) or ts:PATH/NAME (NAME_TRAIN.ts and NAME_TEST.ts)",
    )
    train_split: str | None = _field(
        None,
        "the split to train on, whole or sliced as TFDS writes it, for every kind of data: "
        "train[:50000], train[:80%], ... (default: train)",
    )
    test_split: str | None = _field(
        None,
        "the split to test on, e.g. train[50000:] to hold out the rest of the train split "
        "(default: test; a TFDS dataset without one: validation)",
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
        "global batch size (the base size with mixed_step:...:scale)",
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
    normalize: str | None = _field(
        None,
        "ucr:/ts: series: series (z-normalize each series per channel, the univariate "
        "archive's protocol), dataset (the train split's per-channel mean and std) or none "
        "(default: series for univariate, dataset for multivariate data)",
    )
    allow_pickle: bool = _field(
        False,
        "read object arrays of npz files by unpickling them: only for files you trust "
        "(unpickling a crafted file runs its code)",
        resumable=True,
        affects_results=False,
    )

    def resolved(self, defaults: dict | None = None) -> ResolvedConfig:
        """A validated copy with every unset field filled and its size settings parsed: the
        recipe's value, else ``defaults``'s, else :data:`DEFAULTS`'s. Explicit values always
        win; the training length is one setting (:func:`training_length`)."""
        from fcn_jax.recipes import recipe_values

        explicit = parsed_sizes(self.to_dict())
        if explicit["steps"] is not None and explicit["epochs"] is not None:
            raise ValueError(
                f"--steps={self.steps} and --epochs={self.epochs}: give one training length"
            )
        layers = [explicit, recipe_values(self.recipe, explicit), defaults or {}, DEFAULTS]
        values = {k: next((v[k] for v in layers if v.get(k) is not None), None) for k in explicit}
        return ResolvedConfig(**{**values, **training_length(layers)})

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


@dataclasses.dataclass
class ResolvedConfig(TrainConfig):
    """A training config with every setting filled (:meth:`TrainConfig.resolved`), validated,
    and its size settings parsed once: ``train_size`` a
    :class:`~fcn_jax.data.policies.SizePolicy` (None: the data's own), ``buckets`` a
    :class:`~fcn_jax.data.buckets.BucketSpec`, ``eval_sizes`` and ``tta_sizes``
    :class:`~fcn_jax.sizes.SizeList` s (None: the default test sizes; no averaging). Text given
    to them (``dataclasses.replace``, a recorded config) is parsed on construction. Sizes the
    text leaves open (``fixed:28``) wait for the data: :meth:`for_data` binds them;
    :meth:`to_dict` spells them canonically.

    ``min_epochs`` (not recorded): a length that came from defaults giving it, raised to that
    many epochs by :meth:`for_data` once the data's size is known.
    """

    train_size: SizePolicy | None = None
    buckets: BucketSpec | None = None
    eval_sizes: SizeList | None = None
    tta_sizes: SizeList | None = None
    min_epochs: float | None = None

    def __post_init__(self):
        for name, value in parsed_sizes({k: getattr(self, k) for k in SIZE_FIELDS}).items():
            setattr(self, name, value)
        from fcn_jax.config_checks import check_config

        check_config(self)

    def resolved(self, defaults: dict | None = None) -> ResolvedConfig:
        """Itself: resolution happens once (a resolved config takes no other defaults)."""
        if defaults:
            raise ValueError("this config is resolved already: give defaults when resolving")
        return self

    def for_data(self, spatial_dims: int, train_examples: int | None = None) -> ResolvedConfig:
        """This config for data of ``spatial_dims`` (1 or 2) with ``train_examples`` training
        examples: size settings bound (the default test sizes filled in), a pending
        ``min_epochs`` applied (:func:`training_length`). One-line ValueError naming the flag
        whose sizes are of another dimensionality."""
        bound = {k: bind_sizes(k, getattr(self, k), spatial_dims) for k in SIZE_FIELDS}
        length = {k: getattr(self, k) for k in LENGTH_FIELDS}
        length = training_length([length], self.batch_size, train_examples)
        return dataclasses.replace(self, **bound, **length)

    def to_dict(self) -> dict:
        """The :class:`TrainConfig` fields, size settings in their canonical spelling (what
        config.json records)."""
        return {f.name: spelled(getattr(self, f.name)) for f in dataclasses.fields(TrainConfig)}

    def recipe_dropped(self) -> dict:
        """The recipe's values dropped as not applying to an explicit choice (config.json's
        ``recipe_dropped``), e.g. ``{"buckets": "auto:8"}``."""
        from fcn_jax.recipes import dropped_values

        return dropped_values(self.recipe, {"train_size": self.train_size, "buckets": self.buckets})


def training_length(
    layers: list[dict], batch_size: int | None = None, train_examples: int | None = None
) -> dict:
    """``steps``, ``epochs`` and a pending ``min_epochs``: the training length is one setting,
    taken whole from the first of ``layers`` (explicit values, the recipe, the caller's
    defaults, :data:`DEFAULTS`) that sets any of it. A ``min_epochs`` beside ``steps`` raises
    the length to that many epochs of ``train_examples`` (when the steps are fewer) once they
    are known; until then it stays pending."""
    layer = next(v for v in layers if any(v.get(k) is not None for k in LENGTH_FIELDS))
    length = {k: layer.get(k) for k in LENGTH_FIELDS}
    if length["min_epochs"] is not None and train_examples is not None:
        minimum = length["min_epochs"] * (train_examples // batch_size)
        if length["steps"] is not None and minimum > length["steps"]:
            length.update(steps=None, epochs=float(length["min_epochs"]))
        length["min_epochs"] = None
    return length


def flag_defaults(defaults: dict) -> TrainConfig:
    """A config of ``defaults``'s values for the fields never unset (their default is not
    None: resolution cannot fill them), the dataclass's for the others: what a command's
    flags start from (e.g. a comparison's dataset)."""
    fixed = {f.name for f in dataclasses.fields(TrainConfig) if f.default is not None}
    return TrainConfig(**{k: v for k, v in defaults.items() if k in fixed})


def field_help(defaults: dict | None = None) -> dict[str, str]:
    """One-line help per config field (the absl entry point turns these into flags), naming
    the value an unset field takes (``defaults`` over :data:`DEFAULTS`; the flags show the
    others' own)."""
    from fcn_jax.recipes import RECIPES

    names = {
        "recipes": sorted(RECIPES),
        "presets": sorted(PRESETS),
        "eval_2d": DEFAULT_EVAL_SIZES[2],
        "eval_1d": DEFAULT_EVAL_SIZES[1],
    }
    texts = {f.name: f.metadata["help"].format(**names) for f in dataclasses.fields(TrainConfig)}
    unset = {f.name for f in dataclasses.fields(TrainConfig) if f.default is None}
    values = {**DEFAULTS, **(defaults or {})}
    for key, value in values.items():
        if key in unset:
            texts[key] += f" (default: {value})"
    if values.get("min_epochs"):
        texts["steps"] += f" (at least {values['min_epochs']} epochs unless a length is given)"
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
