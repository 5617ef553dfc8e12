"""Recipes are functions returning the values they set, each with the command that reproduces
its numbers; their values are the ones docs/results.md measured."""

import json

import pytest
from tiny import TINY_TRAIN

from fcn_jax.config import TrainConfig
from fcn_jax.recipes import RECIPES, recipe, recipe_values
from fcn_jax.run import train_and_evaluate
from fcn_jax.settings import parsed_sizes

SHARED = {
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
# The values behind the numbers in docs/results.md: a change here changes those numbers.
EXPECTED = {
    "digits": {
        **SHARED,
        "model": "vgg",
        "width": 0.5,
        "depth": 4,
        "norm": "batch",
        "pool": "avg",
        "train_size": "mixed_example:16-64:log",
        "zoom": "0.9-1.1",
        "translate": 0.05,
        "label_smoothing": 0.1,
        "epochs": 14,
    },
    "scaled_digits": {
        **SHARED,
        "model": "vgg",
        "width": 0.75,
        "depth": 4,
        "norm": "batch",
        "pool": "avg",
        "train_size": "mixed_example:28-64:log:aspect=1.25",
        "zoom": "0.8-1.25",
        "translate": 0.05,
        "label_smoothing": 0.1,
        "epochs": 60,
        "eval_sizes": "28,42,49,56,64",
        "tta_sizes": "42,49,56,64",
    },
    "signals": {
        **SHARED,
        "model": "resnet",
        "width": 1.5,
        "depth": 2,
        "train_size": "mixed_example:32-72",
        "zoom": "0.9-1.1",
        "translate": 0.05,
        "steps": 3000,
    },
    "series": {
        **SHARED,
        "model": "fcn",
        "width": 1.0,
        "norm": "batch",
        "train_size": "native",
        "buckets": "auto:4",
        "batch_size": 16,
        "learning_rate": 1e-3,
        "warmup_steps": 100,
        "steps": 2000,
        "recalibrate_bn": False,
    },
}


def test_every_recipe_returns_exactly_its_values():
    assert set(RECIPES) == set(EXPECTED)
    for name, values in EXPECTED.items():
        assert RECIPES[name]() == values, name
        assert recipe_values(name) == values


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_a_recipe_s_docstring_holds_the_command_that_reproduces_it(name):
    doc = RECIPES[name].__doc__
    assert "python -m experiments.train" in doc and f"--recipe={name}" in doc


def test_adding_a_recipe_is_one_function(monkeypatch):
    monkeypatch.setattr("fcn_jax.recipes.RECIPES", dict(RECIPES))

    @recipe
    def tiny() -> dict:
        """A test recipe."""
        return {"width": 0.25, "steps": 7}

    config = TrainConfig(recipe="tiny").resolved()
    assert (config.width, config.steps, config.recipe) == (0.25, 7, "tiny")


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_every_recipe_resolves_to_its_values(name):
    config = TrainConfig(recipe=name).resolved()
    for key, value in parsed_sizes(RECIPES[name]()).items():  # size settings: parsed once
        assert getattr(config, key) == value


def test_recipe_fills_unset_fields_and_explicit_ones_win():
    mine = TrainConfig(recipe="digits", model="resnet", steps=10, pool="max").resolved()
    assert (mine.model, mine.pool, mine.steps, mine.epochs) == ("resnet", "max", 10, None)
    assert mine.zoom == RECIPES["digits"]()["zoom"]
    with pytest.raises(ValueError, match="--recipe='nope'"):
        TrainConfig(recipe="nope").resolved()


def test_recipe_buckets_are_dropped_for_an_explicit_unpadded_policy():
    for policy in ("fixed:28", "mixed_step:16-40:12"):
        config = TrainConfig(recipe="digits", train_size=policy).resolved()
        assert config.buckets is None and config.model == RECIPES["digits"]()["model"]
        assert config.recipe_dropped() == {"buckets": RECIPES["digits"]()["buckets"]}
    padded = TrainConfig(recipe="digits", train_size="mixed_example:16-40").resolved()
    assert padded.to_dict()["buckets"] == RECIPES["digits"]()["buckets"]
    assert padded.recipe_dropped() == {}


def test_recipe_values_land_in_config_json(tfds_dir, tmp_path):
    config = TrainConfig(
        **{**TINY_TRAIN, "dataset": "mnist1d/tiny_variable", "eval_sizes": "32"},
        data_dir=tfds_dir,
        recipe="signals",
        model="seed",
        recalibrate_bn=False,
    )
    train_and_evaluate(config, str(tmp_path))
    written = json.load(open(tmp_path / "config.json"))
    saved = written["config"]
    assert saved["recipe"] == "signals" and written["recipe_dropped"] == {}
    for key in ("train_size", "zoom", "translate", "schedule", "buckets"):
        assert saved[key] == RECIPES["signals"]()[key]
    assert saved["model"] == "seed" and saved["steps"] == TINY_TRAIN["steps"]
