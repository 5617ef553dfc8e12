"""Recipes: tuned values for the training flags, by name (``--recipe=NAME``).

A recipe fills every flag the command line leaves unset; explicit flags override it, and the
run's ``config.json`` records the resolved values (see ``TrainConfig.resolved``).

``digits``: 2-D, MNIST-like grayscale digits, one set of weights for every size 14-64 (on
``procedural_digits/fixed28``, 3 seeds: 0.991 at 28x28, 0.982 at 28x16, 0.975 at 56x56, 0.948
at 64x64, 0.891 at 14x14; about 260 s on 2 CPU cores)::

    python -m experiments.train --workdir=runs/digits --recipe=digits \
        --dataset=procedural_digits/fixed28 --eval_sizes=14,20,28,28x16,16x28,40,56,64

``signals``: 1-D, MNIST-1D-like signals, every length 32-72 (on ``mnist1d``, 3 seeds: 0.987 at
length 40, at least 0.96 at every length 32-72; about 5 minutes on 2 CPU cores)::

    python -m experiments.train --workdir=runs/signals --recipe=signals --dataset=mnist1d \
        --eval_sizes=24,32,40,48,56,64,72

docs/results.md has the full tables and how they were measured.
"""

from __future__ import annotations

# Optimizer, schedule and evaluation settings both recipes share.
_SHARED = {
    "buckets": "auto:8",
    "batch_size": 64,
    "optimizer": "adamw",
    "learning_rate": 3e-3,
    "schedule": "warmup_cosine",
    "warmup_steps": 200,
    "weight_decay": 1e-4,
    "label_smoothing": 0.0,
    "recalibrate_bn": True,
}

RECIPES: dict[str, dict] = {
    "digits": {
        **_SHARED,
        "model": "seed",
        "width": 1.5,
        "depth": 4,  # receptive field 38 px (22 at depth 3): +2.6 points at 64x64, same time
        "norm": "batch",
        "pool": "avg",
        "train_size": "mixed_example:14-64:log",
        "zoom": "0.9-1.1",
        "translate": 0.05,
        "epochs": 3,
    },
    "signals": {
        **_SHARED,
        "model": "resnet",
        "width": 1.5,
        "depth": 2,
        "train_size": "mixed_example:32-72",
        "zoom": "0.9-1.1",
        "translate": 0.05,
        "steps": 3000,
    },
}


def recipe_values(name: str | None) -> dict:
    """The flag values of recipe ``name`` (``{}`` for None)."""
    if name is None:
        return {}
    if name not in RECIPES:
        raise ValueError(f"--recipe={name!r}: expected one of {sorted(RECIPES)}")
    return dict(RECIPES[name])
