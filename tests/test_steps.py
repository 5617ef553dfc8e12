"""fcn_jax.steps: the train step's non-finite guard, per-shape compilation accounting, the
leaves form of the state, and the eval / logits steps on a tiny batch."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import fcn_jax
from fcn_jax import sharding
from fcn_jax.config import TrainConfig
from fcn_jax.optim import make_optimizer
from fcn_jax.steps import (
    CompiledStep,
    cross_entropy,
    init_state,
    make_eval_step,
    make_logits_step,
    make_train_step,
    over_leaves,
    train_step,
)

CLASSES = 3
SIZE = (8, 8)  # the seed network's minimum size: the smallest train batches


@pytest.fixture(scope="module")
def setup():
    """The tiny model, optimizer, fresh state and step settings, as ``fcn_jax.setup.build``
    makes them: a BatchNorm seed network, so the state has statistics (``rest``) too."""
    model = fcn_jax.create_model("seed", num_classes=CLASSES, width=0.25, norm="batch", seed=0)
    cfg = TrainConfig(steps=10, schedule="constant", learning_rate=0.05).resolved()
    tx = make_optimizer(cfg, 10)
    model.train()
    graphdef, state = init_state(model, tx)
    model.eval()
    eval_graphdef = nnx.split(model, nnx.Param, ...)[0]
    mesh = sharding.make_mesh()
    kw = dict(state_sharding=sharding.replicated(mesh), batch_sharding=sharding.batch_sharded(mesh))
    host = jax.device_get(state)  # a copy: the train step donates its input state
    treedef = jax.tree.structure(state)
    step = make_train_step(graphdef, tx, label_smoothing=0.0, use_sizes=True, treedef=treedef, **kw)
    return dict(
        model=model,
        tx=tx,
        graphdef=graphdef,
        eval_graphdef=eval_graphdef,
        host=host,
        treedef=treedef,
        kw=kw,
        step=step,
    )


def fresh_leaves(setup) -> list[jax.Array]:
    return [jnp.asarray(x) for x in jax.tree.leaves(setup["host"])]


def train_batch(n=4, size=SIZE, seed=0, nan=False) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    image = rng.uniform(0, 1, (n, *size, 1)).astype(np.float32)
    if nan:
        image[1, 2, 3, 0] = np.nan
    return {
        "image": image,
        "label": (np.arange(n) % CLASSES).astype(np.int32),
        "sizes": np.tile(np.asarray(size, np.int32), (n, 1)),
    }


def host_tree(setup, leaves) -> dict:
    return jax.device_get(jax.tree.unflatten(setup["treedef"], leaves))


def same(a, b) -> bool:
    return jax.tree.structure(a) == jax.tree.structure(b) and all(
        np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))
    )


# --- the non-finite guard ---------------------------------------------------------------------


def test_a_finite_step_updates_params_optimizer_and_statistics(setup):
    leaves, metrics = setup["step"](fresh_leaves(setup), train_batch())
    new, old = host_tree(setup, leaves), setup["host"]
    assert int(new["step"]) == 1 and int(new["bad_step"]) == 0
    assert np.isfinite(float(metrics["loss"])) and 0 <= float(metrics["accuracy"]) <= 1
    for part in ("params", "rest", "opt_state"):
        changed = [
            not np.array_equal(a, b) for a, b in zip(*map(jax.tree.leaves, (new[part], old[part])))
        ]
        assert any(changed), part
    # Every weight moved (Adam moves each by about the learning rate on the first step).
    for a, b in zip(jax.tree.leaves(new["params"]), jax.tree.leaves(old["params"])):
        assert np.abs(a - b).max() > 1e-3


def test_a_non_finite_step_keeps_the_state_and_records_its_step(setup):
    step = setup["step"]
    leaves, metrics = step(fresh_leaves(setup), train_batch(nan=True))
    new, old = host_tree(setup, leaves), setup["host"]
    assert np.isnan(float(metrics["loss"]))  # the metrics still say what happened
    assert int(new["step"]) == 1 and int(new["bad_step"]) == 1
    for part in ("params", "rest", "opt_state"):
        assert same(new[part], old[part]), part
    # From the first bad step on, no step updates: a finite batch changes nothing either.
    leaves, metrics = step(leaves, train_batch(seed=1))
    after = host_tree(setup, leaves)
    assert np.isfinite(float(metrics["loss"]))
    assert int(after["step"]) == 2 and int(after["bad_step"]) == 1
    for part in ("params", "rest", "opt_state"):
        assert same(after[part], old[part]), part
    assert step.compiles == 1  # one batch shape


def test_the_first_bad_step_is_recorded_after_good_ones(setup):
    step = setup["step"]
    leaves, _ = step(fresh_leaves(setup), train_batch())
    good = host_tree(setup, leaves)
    leaves, _ = step(leaves, train_batch(nan=True))
    leaves, _ = step(leaves, train_batch(nan=True, seed=2))  # a later bad step: still 2
    bad = host_tree(setup, leaves)
    assert int(bad["step"]) == 3 and int(bad["bad_step"]) == 2
    for part in ("params", "rest", "opt_state"):
        assert same(bad[part], good[part]), part


def test_a_huge_learning_rate_trips_the_guard_on_the_next_loss():
    """Finite input, diverging weights: the step whose loss overflows is the one recorded."""
    model = fcn_jax.create_model("seed", num_classes=CLASSES, width=0.25, seed=0)
    cfg = TrainConfig(steps=10, optimizer="sgd", learning_rate=1e30, schedule="constant")
    tx = make_optimizer(cfg.resolved(), 10)
    graphdef, state = init_state(model, tx)
    fn = jax.jit(
        functools.partial(
            train_step, graphdef=graphdef, tx=tx, label_smoothing=0.0, use_sizes=False
        )
    )
    losses, params = [], []
    for _ in range(4):
        params.append(jax.device_get(state["params"]))
        state, metrics = fn(state, train_batch())
        losses.append(float(metrics["loss"]))
    bad = int(state["bad_step"])
    assert bad >= 2 and np.isfinite(losses[0]) and not np.isfinite(losses[bad - 1])
    assert np.isfinite(losses[: bad - 1]).all()
    assert same(jax.device_get(state["params"]), params[bad - 1])  # the last good params
    assert int(state["step"]) == 4


# --- compilation accounting -------------------------------------------------------------------


def spec(batch) -> dict:
    return {k: jax.ShapeDtypeStruct(v.shape, v.dtype) for k, v in batch.items()}


def test_one_compile_per_batch_shape(setup):
    step = make_train_step(
        setup["graphdef"],
        setup["tx"],
        label_smoothing=0.0,
        use_sizes=True,
        treedef=setup["treedef"],
        **setup["kw"],
    )
    assert (step.compiles, step.shapes, step.compile_seconds) == (0, [], 0.0)
    leaves = fresh_leaves(setup)
    leaves, _ = step(leaves, train_batch())
    leaves, _ = step(leaves, train_batch(seed=1))  # same shapes, other values
    assert step.compiles == 1 and step.shapes == [(4, *SIZE, 1)]
    first = step.compile_seconds
    assert first > 0
    leaves, _ = step(leaves, train_batch(size=(12, 8)))
    assert step.compiles == 2 and step.shapes == [(4, *SIZE, 1), (4, 12, 8, 1)]
    assert step.compile_seconds > first
    # Ahead of time (--precompile): abstract shapes, then real arrays of them compile nothing.
    ahead = train_batch(n=2)
    executable = step.compile(leaves, spec(ahead))
    assert step.compiles == 3 and step.shapes[-1] == (2, *SIZE, 1)
    assert step.compile(leaves, ahead) is executable
    seconds = step.compile_seconds
    leaves, metrics = step(leaves, ahead)
    assert np.isfinite(float(metrics["loss"]))
    assert step.compiles == 3 and step.compile_seconds == seconds and len(step.shapes) == 3
    assert int(host_tree(setup, leaves)["step"]) == 4


def test_dtype_is_part_of_the_shape_key():
    """A batch that differs only in a dtype is another executable (no silent retrace)."""
    mesh = sharding.make_mesh()
    step = CompiledStep(
        lambda state, batch: (state, {"sum": batch["image"].sum() + state["x"]}),
        "toy",
        sharding.replicated(mesh),
        sharding.batch_sharded(mesh),
        donate=False,
    )
    state = {"x": jnp.float32(1)}
    _, out = step(state, {"image": np.ones((2, 3), np.float32)})
    assert float(out["sum"]) == 7
    step(state, {"image": np.ones((2, 3), np.float32)})
    assert step.compiles == 1
    _, out = step(state, {"image": np.ones((2, 3), np.int32)})
    assert step.compiles == 2 and step.shapes == [(2, 3), (2, 3)] and step.name == "toy"


# --- the leaves form --------------------------------------------------------------------------


def test_over_leaves_is_the_tree_function_on_flat_leaves():
    def fn(state, batch):
        return {"a": state["a"] + batch, "b": {"c": state["b"]["c"] * 2}}, {"n": batch.sum()}

    state = {"a": jnp.arange(3.0), "b": {"c": jnp.ones((2, 2))}}
    treedef = jax.tree.structure(state)
    tree_state, tree_out = fn(state, jnp.float32(5))
    flat_state, flat_out = over_leaves(fn, treedef)(jax.tree.leaves(state), jnp.float32(5))
    assert isinstance(flat_state, list) and len(flat_state) == 2
    assert same(jax.tree.unflatten(treedef, flat_state), tree_state)
    assert same(flat_out, tree_out) and float(flat_out["n"]) == 5
    np.testing.assert_array_equal(flat_state[0], [5, 6, 7])


def test_the_train_step_on_leaves_equals_it_on_the_state(setup):
    tree_step = make_train_step(
        setup["graphdef"], setup["tx"], label_smoothing=0.0, use_sizes=True, **setup["kw"]
    )
    batch = train_batch(seed=3)
    state = jax.tree.unflatten(setup["treedef"], fresh_leaves(setup))
    tree_state, tree_metrics = tree_step(state, batch)
    leaves, metrics = setup["step"](fresh_leaves(setup), batch)
    assert isinstance(leaves, list)
    flat_state = jax.tree.unflatten(setup["treedef"], leaves)
    assert jax.tree.structure(flat_state) == jax.tree.structure(tree_state)
    for a, b in zip(jax.tree.leaves(flat_state), jax.tree.leaves(tree_state)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(float(metrics["loss"]), float(tree_metrics["loss"]), rtol=1e-6)
    assert int(flat_state["step"]) == 1


# --- eval and logits --------------------------------------------------------------------------


def eval_batch() -> dict[str, np.ndarray]:
    """A 16x16 bucket: a full-size row, a 12x10 row padded with zeros, and a padding row
    (valid 0, zeros at the bucket's size, as the eval loader writes them)."""
    rng = np.random.default_rng(4)
    image = np.zeros((3, 16, 16, 1), np.float32)
    image[0] = rng.uniform(0, 1, (16, 16, 1))
    image[1, :12, :10] = rng.uniform(0, 1, (12, 10, 1))
    return {
        "image": image,
        "label": np.zeros(3, np.int32),  # set from the logits below
        "sizes": np.array([[16, 16], [12, 10], [16, 16]], np.int32),
        "valid": np.array([True, True, False]),
    }


def test_logits_and_eval_steps_on_a_padded_batch(setup):
    state = jax.tree.unflatten(setup["treedef"], fresh_leaves(setup))
    kw = setup["kw"]
    batch = eval_batch()
    logits_step = make_logits_step(setup["eval_graphdef"], **kw)
    logits = np.asarray(logits_step(state, {k: batch[k] for k in ("image", "sizes")})["logits"])
    assert logits.shape == (3, CLASSES) and logits.dtype == np.float32
    # The model itself, in eval mode, gives these logits (its BatchNorm uses the statistics).
    want = np.asarray(setup["model"](batch["image"], batch["sizes"]))
    np.testing.assert_allclose(logits, want, rtol=1e-5, atol=1e-6)

    # Row 0 labelled right, row 1 wrong, the padding row right: only row 0 counts as correct,
    # and the padding row adds no loss.
    predicted = logits.argmax(-1)
    batch["label"] = np.array([predicted[0], (predicted[1] + 1) % CLASSES, predicted[2]], np.int32)
    plain = make_eval_step(setup["eval_graphdef"], with_maps=False, **kw)
    out = jax.device_get(plain(state, batch))
    assert set(out) == {"correct", "loss"}
    np.testing.assert_array_equal(out["correct"], [1, 0, 0])
    assert out["correct"].dtype == np.float32 and out["correct"].sum() == 1
    ce = np.asarray(cross_entropy(jnp.asarray(logits), jnp.asarray(batch["label"])))
    np.testing.assert_allclose(out["loss"][:2], ce[:2], rtol=1e-5)
    assert out["loss"][1] > 0 and out["loss"][2] == 0 and ce[2] > 0

    maps = make_eval_step(setup["eval_graphdef"], with_maps=True, **kw)
    out_maps = jax.device_get(maps(state, batch))
    assert set(out_maps) == {"correct", "loss", "cmap", "out_sizes"}
    np.testing.assert_array_equal(out_maps["correct"], out["correct"])
    np.testing.assert_allclose(out_maps["loss"], out["loss"], rtol=1e-6)
    # Three stride-2 stages: 16 -> 8 -> 4 -> 2; 12x10 -> 6x5 -> 3x2 -> 1x1.
    assert out_maps["cmap"].shape == (3, 2, 2, CLASSES)
    np.testing.assert_array_equal(out_maps["out_sizes"], [[2, 2], [1, 1], [2, 2]])
    assert not out_maps["cmap"][1, 1:].any() and not out_maps["cmap"][1, :, 1:].any()
    assert plain.compiles == maps.compiles == logits_step.compiles == 1
