"""The value checks of a resolved training config: one-line errors naming the flag."""

from __future__ import annotations

from fcn_jax.models import PRESETS, check_choices

# Allowed values per field (norm and pool: the models' own check).
CHOICES = {
    "optimizer": ("adamw", "sgd"),
    "schedule": ("constant", "cosine", "warmup_cosine"),
    "precision": ("float32", "bfloat16"),
    "matmul_precision": ("auto", "default", "high", "highest"),
    "conv_grad": ("auto", "custom", "autodiff"),
    "input_pipeline": ("auto", "device", "grain"),
    "eval_mode": ("resize", "canvas"),
    "normalize": (None, "series", "dataset", "none"),
}
_POSITIVE = ("batch_size", "eval_batch_size", "checkpoint_every", "log_every")
_POSITIVE_OR_UNSET = ("steps", "epochs", "depth", "eval_every")


def check_config(config) -> None:
    """Raise ValueError with a one-line message for a bad value of a resolved ``config``
    (every field filled: :class:`~fcn_jax.config.ResolvedConfig`)."""
    if config.model not in PRESETS:
        raise ValueError(f"--model={config.model!r}: expected one of {sorted(PRESETS)}")
    for name, allowed in CHOICES.items():
        if getattr(config, name) not in allowed:
            raise ValueError(f"--{name}={getattr(config, name)!r}: expected one of {allowed}")
    check_choices(config.norm, config.pool)
    for name in _POSITIVE + _POSITIVE_OR_UNSET:
        value = getattr(config, name)
        if value is not None and value <= 0:
            raise ValueError(f"--{name}={value}: expected a positive number")
    for name in ("learning_rate", "width"):
        if not getattr(config, name) > 0:
            raise ValueError(f"--{name}={getattr(config, name)}: expected a positive number")
    for name in ("weight_decay", "warmup_steps", "worker_count", "eval_examples"):
        value = getattr(config, name)
        if value is not None and value < 0:
            raise ValueError(f"--{name}={value}: expected a number >= 0")
    if not 0 < config.device_data_fraction <= 1:
        raise ValueError(
            f"--device_data_fraction={config.device_data_fraction}: expected 0 < value <= 1"
        )
    if not 0 <= config.label_smoothing < 1:
        raise ValueError(f"--label_smoothing={config.label_smoothing}: expected 0 <= value < 1")
    if (config.steps is None) == (config.epochs is None):
        raise ValueError("give one of --steps and --epochs")
    from fcn_jax.data.augment import parse_augmentation

    parse_augmentation(config.zoom, config.translate)
    config.pixel_bounds()
