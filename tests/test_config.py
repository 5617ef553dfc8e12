"""Config resolution without training or subprocesses: recipes, defaults and explicit values
resolve into the config a run records; bad values are one-line errors before any work."""

import dataclasses
import json
import math

import pytest
from absl import flags
from loaders import make_loader
from tiny import TINY_TRAIN

from experiments.flags import run_cleanly
from fcn_jax.config import DEFAULTS, TrainConfig
from fcn_jax.data import load_dataset
from fcn_jax.models import PRESETS
from fcn_jax.recipes import RECIPES
from fcn_jax.run import train_and_evaluate

# --- recipes: what lands in config.json ------------------------------------------------------


def test_recipe_values_resolve_into_the_recorded_config(tfds_dir):
    """The direct form of test_any_size's test_recipe_values_land_in_config_json: the config
    a run records (``config.to_dict()`` of the resolved config, as JSON)."""
    config = TrainConfig(
        **{**TINY_TRAIN, "dataset": "mnist1d/tiny_variable", "eval_sizes": "32"},
        data_dir=tfds_dir,
        recipe="signals",
        model="seed",
        recalibrate_bn=False,
    )
    saved = json.loads(json.dumps(config.resolved().to_dict()))
    assert saved["recipe"] == "signals"
    for key in ("train_size", "zoom", "translate", "schedule", "buckets"):
        assert saved[key] == RECIPES["signals"]()[key]
    assert saved["model"] == "seed" and saved["steps"] == TINY_TRAIN["steps"]
    # Explicit values win over the recipe, False included; its length gives way to --steps.
    assert saved["recalibrate_bn"] is False and saved["epochs"] is None
    assert saved["width"] == TINY_TRAIN["width"] != RECIPES["signals"]()["width"]
    assert saved["warmup_steps"] == RECIPES["signals"]()["warmup_steps"] != DEFAULTS["warmup_steps"]


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_resolving_a_recorded_config_again_changes_nothing(name):
    """What config.json records reads back (TrainConfig(**saved)) as the same config, so a
    resumed or reused run compares equal field by field."""
    for extra in ({}, {"train_size": "fixed:28"}, {"steps": 7}, {"epochs": 2.5}):
        resolved = TrainConfig(recipe=name, **extra).resolved()
        saved = json.loads(json.dumps(resolved.to_dict()))
        assert TrainConfig(**saved).resolved() == resolved
        assert (resolved.steps is None) != (resolved.epochs is None)


def test_layers_recipe_over_caller_defaults_over_defaults():
    caller = {"model": "seed", "width": 2.0, "optimizer": "sgd", "steps": 1200}
    plain = TrainConfig().resolved(caller)
    assert (plain.model, plain.width, plain.optimizer, plain.steps) == ("seed", 2.0, "sgd", 1200)
    assert plain.learning_rate == DEFAULTS["learning_rate"]
    digits = TrainConfig(recipe="digits").resolved(caller)
    assert (digits.model, digits.width, digits.optimizer) == ("vgg", 0.5, "adamw")
    # The recipe's length (14 epochs) is one setting with the caller's steps: the recipe's wins.
    assert (digits.steps, digits.epochs) == (None, 14)
    mine = TrainConfig(recipe="digits", width=0.25, steps=3).resolved(caller)
    assert (mine.width, mine.steps, mine.epochs) == (0.25, 3, None)


def test_fields_the_resolution_leaves_alone():
    config = TrainConfig(steps=10).resolved()
    for key in ("depth", "norm", "train_size", "zoom", "buckets", "recipe", "tta_sizes"):
        assert getattr(config, key) is None, key
    unset = {
        f.name for f in dataclasses.fields(TrainConfig) if getattr(TrainConfig(), f.name) is None
    }
    assert set(DEFAULTS) <= unset  # every default fills a field that starts unset


# --- epochs: the config keeps the length as given ---------------------------------------------


def test_epochs_stay_epochs_and_count_the_loader_s_steps(small):
    """The config half of test_any_size's test_epochs_set_the_step_count: --epochs is kept as
    given (steps unset) and the steps are the loader's, floor(examples / batch) per epoch."""
    config = TrainConfig(
        **{**TINY_TRAIN, "steps": None}, epochs=2, train_size="fixed:16"
    ).resolved()
    saved = json.loads(json.dumps(config.to_dict()))
    assert saved["epochs"] == 2 and saved["steps"] is None
    loader = make_loader(small, config.train_size, batch_size=config.batch_size)
    n = len(small.train)
    assert loader.steps_for(config.epochs) == math.ceil(2 * (n // config.batch_size)) == 6
    assert loader.steps_for(0.5) == math.ceil((n // config.batch_size) / 2)


# --- bad values: one line, before any work ----------------------------------------------------


@pytest.mark.parametrize(
    "field, value, pattern",
    [
        ("model", "lenet", r"^--model='lenet': expected one of \['allcnn', "),
        ("steps", -3, r"^--steps=-3: expected a positive number$"),
        ("train_size", "mixed:abc", r"^--train_size: bad size policy 'mixed:abc': "),
        ("buckets", "auto:x", r"^--buckets: bad bucket spec 'auto:x'"),
        ("eval_sizes", "28,ab", r"^--eval_sizes='28,ab': 'ab' is not a size like 28 or 28x16$"),
        ("pixel_range", "1,0", r"^--pixel_range='1,0': expected LO,HI with LO < HI$"),
        ("label_smoothing", 1.0, r"^--label_smoothing=1.0: expected 0 <= value < 1$"),
        ("recipe", "nope", r"^--recipe='nope': expected one of \["),
    ],
)
def test_bad_values_are_one_line_errors_naming_the_flag(field, value, pattern):
    """The direct form of test_train's test_bad_flag_fails_fast_with_one_line (its flags are
    the first three, plus more), and of what the command line prints: see below."""
    with pytest.raises(ValueError, match=pattern) as e:
        TrainConfig(**{field: value}).resolved()
    assert "\n" not in str(e.value)


def test_an_unknown_dataset_is_a_one_line_error_naming_it():
    with pytest.raises(ValueError, match="^unknown dataset 'no_such_dataset_xyz': ") as e:
        load_dataset("no_such_dataset_xyz")
    assert "\n" not in str(e.value)


def test_the_command_line_prints_an_expected_error_as_one_line(capsys):
    """``run_cleanly`` (experiments/train.py's wrapper of main): exit status 1 and one
    ``error:`` line, no traceback; an unexpected error still raises."""

    def main(argv):
        TrainConfig(model="lenet").resolved()

    flags.FLAGS.mark_as_parsed()  # as app.run leaves them: the wrapper reads --verbosity
    with pytest.raises(SystemExit) as e:
        run_cleanly(main, (ValueError,))(["train"])
    assert e.value.code == 1
    err = capsys.readouterr().err
    assert err.splitlines() == [f"error: --model='lenet': expected one of {sorted(PRESETS)}"]
    assert "Traceback" not in err

    def broken(argv):
        raise KeyError("bug")

    with pytest.raises(KeyError):
        run_cleanly(broken, (ValueError,))(["train"])


def test_length_resolution():
    assert TrainConfig().resolved().steps == 1500
    assert TrainConfig(epochs=3).resolved().steps is None
    assert TrainConfig(epochs=3).resolved({"steps": 800}).epochs == 3
    assert TrainConfig().resolved({"steps": 800}).steps == 800
    with pytest.raises(ValueError, match="--steps=5 and --epochs=2.0"):
        TrainConfig(steps=5, epochs=2.0).resolved()


def test_epochs_set_the_step_count(tfds_dir, tmp_path):
    config = TrainConfig(
        **{**TINY_TRAIN, "steps": None}, epochs=2, data_dir=tfds_dir, train_size="fixed:16"
    )
    summary = train_and_evaluate(config, str(tmp_path))
    saved = json.load(open(tmp_path / "config.json"))
    n = saved["dataset"]["train_examples"]
    assert summary["steps"] == math.ceil(2 * (n // TINY_TRAIN["batch_size"]))
    assert saved["config"]["epochs"] == 2 and saved["config"]["steps"] is None
