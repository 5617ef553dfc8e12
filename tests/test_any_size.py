"""Any-size training: per-example sizes in few buckets, augmentation, recipes, --epochs."""

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from loaders import make_loader
from loaders import same as _same
from loaders import take as _take
from tiny import TINY_TRAIN

import fcn_jax
from fcn_jax.config import TrainConfig
from fcn_jax.data import parse_size_policy, resize, resolve_buckets
from fcn_jax.data.augment import Augmentation, parse_augmentation
from fcn_jax.data.buckets import ExampleSizes, fitting_buckets
from fcn_jax.recipes import RECIPES
from fcn_jax.run import train_and_evaluate
from fcn_jax.settings import parsed_sizes


def _loader(ds, spec, aug=None, **kw):
    return make_loader(ds, spec, min_size=(4, 4), augmentation=aug, **kw)


# --- the per-example policy ------------------------------------------------------------------


@pytest.mark.parametrize("spec", ["mixed_example:14-64", "mixed_example:14-64:log:aspect=2"])
def test_size_distribution(spec):
    policy = parse_size_policy(spec, 2)
    sizes, prob = policy.size_distribution()
    assert sizes.min() == 14 and sizes.max() == 64 and prob.sum() == pytest.approx(1)
    if policy.max_aspect:
        assert (sizes.max(1) <= 2 * sizes.min(1)).all() and (sizes == [14, 28]).all(1).any()
        # log-uniform: each axis' marginal falls like 1/n (before the aspect cut, at the middle)
        ratio = prob[(sizes == [30, 30]).all(1)] / prob[(sizes == [40, 40]).all(1)]
        assert ratio == pytest.approx((40 * 40) / (30 * 30))
    else:
        assert len(sizes) == 51 * 51 and np.allclose(prob, 1 / 51**2)


@pytest.mark.parametrize("k", [1, 3, 8])
def test_example_sizes_follow_the_policy_within_k_buckets(k):
    policy = parse_size_policy("mixed_example:14-64", 2)
    buckets = resolve_buckets(f"auto:{k}", policy, None)
    assert 1 <= len(buckets) <= k and (64, 64) in buckets
    sampler = ExampleSizes(policy, buckets)
    draws = [sampler.draw(3, step, 4) for step in range(3000)]
    sizes = np.concatenate([s for _, s in draws])
    for bucket, s in draws:  # every example fits its batch's bucket
        assert bucket in buckets and (s <= np.asarray(bucket)).all()
    # Each example's size is distributed as the policy says: uniform per axis over 14..64.
    for axis in range(2):
        counts = np.bincount(sizes[:, axis] - 14, minlength=51)
        assert counts.min() > 0 and abs(sizes[:, axis].mean() - 39) < 0.8  # ~3 std
    assert sampler.draw(3, 5, 4)[0] == draws[5][0]  # a pure function of (seed, step)
    assert np.array_equal(sampler.draw(3, 5, 4)[1], draws[5][1])


def test_example_sizes_draw_as_generator_choice():
    """The sampler inverts its cumulative distributions itself; the sizes are still the ones
    ``Generator.choice(p=...)`` draws (what earlier versions drew: runs reproduce)."""
    policy = parse_size_policy("mixed_example:16-56:log:aspect=2", 2)
    sizes, prob = policy.size_distribution()
    buckets = resolve_buckets("auto:5", policy, None)
    sampler = ExampleSizes(policy, buckets)
    assign = fitting_buckets(sizes, [tuple(b) for b in buckets], "sizes")
    mass = np.array([prob[assign == k].sum() for k in range(len(buckets))])
    for step in range(200):
        rng = np.random.default_rng([7, 3, step])
        k = int(rng.choice(len(buckets), p=mass / mass.sum()))
        pick = rng.choice((assign == k).sum(), size=6, p=prob[assign == k] / mass[k])
        bucket, drawn = sampler.draw(7, step, 6)
        assert bucket == buckets[k] and np.array_equal(drawn, sizes[assign == k][pick])


def test_loader_batches_are_exactly_masked(small):
    loader = _loader(small, "mixed_example:6-24", buckets="auto:3")
    shapes = set()
    for batch in _take(loader, 12):
        shapes.add(batch["image"].shape[1:3])
        for image, n, i in zip(batch["image"], batch["sizes"], batch["index"], strict=True):
            want = resize(small.train[int(i)]["image"], n)
            np.testing.assert_array_equal(image[: n[0], : n[1]], want)
            assert not image[n[0] :].any() and not image[:, n[1] :].any()
    assert shapes <= set(loader.plan.buckets) and len(loader.plan.buckets) <= 3
    assert len({tuple(n) for b in _take(loader, 4) for n in b["sizes"]}) > 8  # sizes vary


@settings(max_examples=2, deadline=None)
@given(step=st.integers(0, 10_000))
def test_padded_per_example_batch_equals_each_example_alone(small, step):
    """The model on a padded mixed_example batch gives each example's logits run alone."""
    loader = _loader(small, "mixed_example:8-20", buckets="auto:2", batch_size=3, seed=step)
    batch = next(loader)
    model = fcn_jax.create_model("seed", num_classes=4, width=0.25, seed=1)
    padded = np.asarray(model(batch["image"], sizes=batch["sizes"]))
    for row, (image, n) in enumerate(zip(batch["image"], batch["sizes"], strict=True)):
        alone = np.asarray(model(image[None, : n[0], : n[1]]))[0]
        np.testing.assert_allclose(padded[row], alone, rtol=1e-5, atol=1e-5)


def test_train_compiles_at_most_k_on_14_to_64(tfds_dir, tmp_path):
    config = TrainConfig(
        **{**TINY_TRAIN, "steps": 8, "eval_sizes": "20"},
        data_dir=tfds_dir,
        train_size="mixed_example:14-64",
        buckets="auto:2",
    )
    summary = train_and_evaluate(config, str(tmp_path))
    assert 1 <= summary["train_compiles"] <= 2 and len(summary["buckets"]) <= 2
    shapes = {tuple(s[1:3]) for s in summary["train_compile_shapes"]}
    assert shapes <= {tuple(b) for b in summary["buckets"]}
    assert summary["train_examples"] == 8 * 16
    assert summary["train_pixels"] < summary["train_padded_pixels"]


# --- augmentation ----------------------------------------------------------------------------


def test_zoom_and_shift_move_the_content():
    image = np.ones((20, 20, 1), np.float32)
    aug = Augmentation(0.5, 0.5, 0.0)
    out = aug.apply(image, (20, 20), 0.5, (0.0, 0.0))
    assert out.shape == (20, 20, 1)
    np.testing.assert_array_equal(np.argwhere(out[..., 0] > 0.5).min(0), [5, 5])
    shifted = aug.apply(image, (20, 30), 0.5, (0.25, -0.1))  # 5 rows down, 3 columns left
    rows, cols = np.nonzero(shifted[..., 0] > 0.5)
    assert (rows.min(), cols.min()) == (5 + 5, 7 - 3) and (rows.max(), cols.max()) == (19, 18)
    zoomed = aug.apply(image, (20, 20), 1.5, (0.5, 0.5))  # 30x30 from (5, 5): cropped
    assert zoomed.shape == (20, 20, 1) and zoomed[5:, 5:].all()
    assert not zoomed[:5].any() and not zoomed[:, :5].any()


@pytest.mark.parametrize("spec", ["fixed:16", "mixed_example:8-24"])
def test_augmentation_is_deterministic_and_resumes_exactly(small, spec):
    aug = parse_augmentation("0.6-1.3", 0.2)
    plain = _take(_loader(small, spec), 6)
    first = _loader(small, spec, aug=aug)
    a = _take(first, 6)
    assert _same(a, _take(_loader(small, spec, aug=aug), 6))
    assert not _same(a, plain) and not _same(a, _take(_loader(small, spec, aug=aug, seed=1), 6))
    state = json.loads(json.dumps(first.get_state()))
    want = _take(first, 7)
    resumed = _loader(small, spec, aug=aug)
    resumed.set_state(state)
    assert _same(_take(resumed, 7), want)


@pytest.mark.parametrize(
    "zoom, translate", [("1.2-0.8", 0.0), ("x", 0.0), ("0-1", 0.0), ("0.9", 0.0), (None, 0.7)]
)
def test_bad_augmentation_is_one_line(zoom, translate):
    with pytest.raises(ValueError, match="--zoom|--translate") as err:
        TrainConfig(zoom=zoom, translate=translate).resolved()
    assert "\n" not in str(err.value)


# --- training length and recipes -------------------------------------------------------------


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


def test_epochs_of_varying_length_count_their_own_steps(small):
    loader = _loader(small, "mixed_step:8-24:4:scale")
    n = loader.steps_for(1)
    first = np.concatenate([b["index"] for b in _take(loader, n)])
    assert len(set(first.tolist())) == len(first) > len(small.train) // 2  # one epoch, no repeat
    assert loader.steps_for(2) > n and loader.steps_for(0.5) == math.ceil(n / 2)
