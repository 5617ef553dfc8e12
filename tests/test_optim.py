"""fcn_jax.optim: learning-rate schedules and optimizers, made from a resolved TrainConfig."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from fcn_jax.config import TrainConfig
from fcn_jax.optim import make_optimizer, make_schedule

LR = 0.1


def config(**kw) -> TrainConfig:
    return TrainConfig(**{"learning_rate": LR, "steps": 50, **kw}).resolved()


def values(schedule, steps) -> np.ndarray:
    return np.array([float(schedule(s)) for s in steps])


def params():
    return {"w": jnp.array([[1.0, -2.0], [0.5, 4.0]]), "b": jnp.array([0.25, -1.0])}


def leaves(tree) -> list[np.ndarray]:
    return [np.asarray(x) for x in jax.tree.leaves(tree)]


# --- schedules -------------------------------------------------------------------------------


def test_constant_stays_at_the_learning_rate():
    schedule = make_schedule(config(schedule="constant"), 50)
    np.testing.assert_allclose(values(schedule, [0, 1, 25, 49, 50, 80]), LR, rtol=1e-6)


def test_cosine_decays_from_the_peak_to_zero_at_the_last_step():
    total = 40
    schedule = make_schedule(config(schedule="cosine"), total)
    lrs = values(schedule, range(total + 1))
    assert lrs[0] == pytest.approx(LR) and lrs[total] == pytest.approx(0.0, abs=1e-9)
    assert lrs[total // 2] == pytest.approx(LR / 2, rel=1e-5)  # cosine: half-way is half
    assert (np.diff(lrs) <= 1e-9).all()  # never rises
    assert float(schedule(total + 10)) == pytest.approx(0.0, abs=1e-9)  # and stays at 0


def test_warmup_rises_linearly_to_the_peak_at_the_end_of_warmup_then_decays_to_zero():
    total, warmup = 50, 10
    schedule = make_schedule(config(schedule="warmup_cosine", warmup_steps=warmup), total)
    lrs = values(schedule, range(total + 1))
    np.testing.assert_allclose(lrs[: warmup + 1], LR * np.arange(warmup + 1) / warmup, rtol=1e-5)
    assert lrs[warmup] == pytest.approx(LR) and lrs.argmax() == warmup
    assert (np.diff(lrs[warmup:]) <= 1e-9).all() and lrs[warmup + 1] < LR
    assert lrs[total] == pytest.approx(0.0, abs=1e-9)


def test_warmup_longer_than_the_run_is_cut_to_peak_at_the_last_step():
    total = 5
    schedule = make_schedule(config(schedule="warmup_cosine", warmup_steps=100), total)
    lrs = values(schedule, range(total + 1))
    np.testing.assert_allclose(lrs[:total], LR * np.arange(total) / (total - 1), rtol=1e-5)
    assert lrs[total] == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize("name", ["cosine", "warmup_cosine"])
def test_a_run_of_at_most_one_step_starts_at_the_peak(name):
    for total in (0, 1):  # 0 is taken as 1
        schedule = make_schedule(config(schedule=name), total)
        assert float(schedule(0)) == pytest.approx(LR)
        assert float(schedule(1)) == pytest.approx(0.0, abs=1e-9)


def test_schedule_defaults_come_from_the_config():
    resolved = TrainConfig(steps=400).resolved()  # DEFAULTS: cosine at 3e-3
    schedule = make_schedule(resolved, 400)
    assert resolved.schedule == "cosine"
    assert float(schedule(0)) == pytest.approx(3e-3) and float(schedule(400)) == 0
    recipe = TrainConfig(recipe="digits", steps=1000).resolved()  # warmup_cosine, 200 steps
    schedule = make_schedule(recipe, 1000)
    assert float(schedule(0)) == 0 and float(schedule(200)) == pytest.approx(3e-3)
    assert float(schedule(100)) == pytest.approx(1.5e-3)


# --- optimizers ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["adamw", "sgd"])
def test_each_optimizer_builds_and_steps_a_param_tree(name):
    tx = make_optimizer(config(optimizer=name, schedule="constant", weight_decay=0.0), 50)
    p = params()
    state = tx.init(p)
    grads = jax.tree.map(jnp.ones_like, p)
    updates, state = tx.update(grads, state, p)
    new = optax.apply_updates(p, updates)
    assert jax.tree.structure(new) == jax.tree.structure(p)
    # First step on unit gradients: Adam moves each weight by the learning rate; SGD with
    # Nesterov momentum 0.9 by (1 + 0.9) times it.
    step = {"adamw": LR, "sgd": 1.9 * LR}[name]
    for before, after in zip(leaves(p), leaves(new)):
        np.testing.assert_allclose(before - after, step, rtol=1e-4)
    second, _ = tx.update(grads, state, new)
    assert all(np.all(u < 0) for u in leaves(second))  # still downhill


def test_adamw_steps_follow_the_schedule():
    """Adam's step on a constant gradient is the learning rate: step k uses schedule(k)."""
    cfg = config(optimizer="adamw", schedule="warmup_cosine", warmup_steps=4, weight_decay=0.0)
    tx, schedule = make_optimizer(cfg, 20), make_schedule(cfg, 20)
    p = {"w": jnp.ones((3,))}
    state, grads = tx.init(p), {"w": jnp.full((3,), 0.5)}
    for k in range(8):
        updates, state = tx.update(grads, state, p)
        np.testing.assert_allclose(-np.asarray(updates["w"]), float(schedule(k)), atol=1e-6)
    assert float(schedule(0)) == 0 and float(schedule(4)) == pytest.approx(LR)


@pytest.mark.parametrize(
    "name, shrink",
    [
        ("adamw", LR * 0.01),  # decoupled: p -= lr * wd * p
        ("sgd", 1.9 * LR * 0.01),  # L2 in the gradient, through Nesterov momentum 0.9
    ],
)
def test_weight_decay_shrinks_every_weight_without_a_gradient(name, shrink):
    p = params()
    zero = jax.tree.map(jnp.zeros_like, p)
    for wd, factor in ((0.01, 1 - shrink), (0.0, 1.0)):
        tx = make_optimizer(config(optimizer=name, schedule="constant", weight_decay=wd), 50)
        updates, _ = tx.update(zero, tx.init(p), p)
        for before, after in zip(leaves(p), leaves(optax.apply_updates(p, updates))):
            np.testing.assert_allclose(after, before * factor, rtol=1e-6)


def test_weight_decay_follows_the_schedule():
    """adamw's decay is scaled by the learning rate: none while warm-up's rate is 0."""
    cfg = config(optimizer="adamw", schedule="warmup_cosine", warmup_steps=5, weight_decay=0.5)
    tx, p = make_optimizer(cfg, 50), params()
    zero = jax.tree.map(jnp.zeros_like, p)
    updates, state = tx.update(zero, tx.init(p), p)
    assert all(np.all(u == 0) for u in leaves(updates))  # step 0: lr 0
    updates, _ = tx.update(zero, state, p)  # step 1: lr = LR / 5
    for before, u in zip(leaves(p), leaves(updates)):
        np.testing.assert_allclose(u, -(LR / 5) * 0.5 * before, rtol=1e-5)


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("optimizer", "lion", "--optimizer='lion': expected one of ('adamw', 'sgd')"),
        (
            "schedule",
            "linear",
            "--schedule='linear': expected one of ('constant', 'cosine', 'warmup_cosine')",
        ),
        ("learning_rate", 0.0, "--learning_rate=0.0: expected a positive number"),
        ("weight_decay", -1e-4, "--weight_decay=-0.0001: expected a number >= 0"),
        ("warmup_steps", -1, "--warmup_steps=-1: expected a number >= 0"),
    ],
)
def test_bad_optimizer_settings_are_one_line_errors_before_any_optimizer(field, value, message):
    """optim.py trusts its config: the names and numbers are checked when it is resolved."""
    with pytest.raises(ValueError) as e:
        TrainConfig(steps=10, **{field: value}).resolved()
    assert str(e.value) == message
