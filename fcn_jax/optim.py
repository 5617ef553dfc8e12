"""The optimizer and its learning-rate schedule, made from the training config."""

from __future__ import annotations

import optax

from fcn_jax.config import TrainConfig


def make_schedule(config: TrainConfig, total_steps: int) -> optax.Schedule:
    lr, total_steps = config.learning_rate, max(total_steps, 1)
    if config.schedule == "constant":
        return optax.constant_schedule(lr)
    if config.schedule == "cosine":
        return optax.cosine_decay_schedule(lr, total_steps)
    warmup = min(config.warmup_steps, total_steps - 1)
    return optax.warmup_cosine_decay_schedule(0.0, lr, warmup, total_steps)


def make_optimizer(config: TrainConfig, total_steps: int) -> optax.GradientTransformation:
    schedule = make_schedule(config, total_steps)
    if config.optimizer == "adamw":
        return optax.adamw(schedule, weight_decay=config.weight_decay)
    return optax.chain(
        optax.add_decayed_weights(config.weight_decay),
        optax.sgd(schedule, momentum=0.9, nesterov=True),
    )
