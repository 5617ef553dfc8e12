"""Evaluation sharded over processes: each reads and evaluates its own rows, sums combined;
test-time averaging of logits over sizes."""

import jax
import numpy as np
import pytest
from tiny import TINY_TRAIN

from fcn_jax.config import TrainConfig
from fcn_jax.data import Subset
from fcn_jax.evaluate import (
    averaged_logits,
    evaluate,
    evaluate_tta,
    logit_totals,
    process_logits,
    process_totals,
    summarize,
)
from fcn_jax.setup import build
from fcn_jax.steps import make_eval_step, make_logits_step


@pytest.mark.parametrize("size", [None, (20, 20)])
def test_two_simulated_processes_equal_one(tfds_dir, size):
    setup = build(TrainConfig(**{**TINY_TRAIN, "data_dir": tfds_dir, "buckets": "auto:2"}))
    test = Subset(setup.dataset.test, 23)  # uneven: the last batch is part padding
    state = jax.device_put(setup.state, jax.sharding.NamedSharding(setup.mesh, jax.P()))
    kw = dict(mode="resize", batch_size=8, min_size=setup.model.min_size, mesh=setup.mesh)
    step = make_eval_step(setup.eval_graphdef, with_maps=True, **setup.steps_kw)
    alone = evaluate(step, state, test, size, **kw)
    parts = [process_totals(step, state, test, size, process=(p, 2), **kw) for p in (0, 1)]
    assert parts[0]["count"] > 0 and parts[1]["count"] > 0  # each process has rows of its own
    combined = summarize({k: parts[0][k] + parts[1][k] for k in parts[0]})
    assert alone["examples"] == combined["examples"] == 23
    assert "pointing_game" in alone  # the digits carry boxes: the host-side metric is covered
    for key in alone:
        np.testing.assert_allclose(combined[key], alone[key], rtol=1e-6)


def test_tta_averages_each_rows_logits_over_sizes(tfds_dir):
    """One size: the averaged logits are that size's own; two: their mean, row by row, on
    simulated processes whose sums combine to the one-process result."""
    setup = build(TrainConfig(**{**TINY_TRAIN, "data_dir": tfds_dir, "buckets": "auto:2"}))
    test = Subset(setup.dataset.test, 23)  # uneven: the last batch is part padding
    state = jax.device_put(setup.state, jax.sharding.NamedSharding(setup.mesh, jax.P()))
    step = make_logits_step(setup.eval_graphdef, **setup.steps_kw)
    # Batches of 4 rows alone and of 8 over 2 processes: one shape (one compile) per size.
    kw = dict(mode="resize", batch_size=4, min_size=setup.model.min_size, mesh=setup.mesh)
    one = dict(kw, process=(0, 1))
    each = {s: process_logits(step, state, test, s, **one) for s in [(20, 20), (24, 16)]}
    assert each[(20, 20)][0].shape == (24, setup.dataset.num_classes)
    assert each[(20, 20)][2].sum() == 23  # the padding row is there, marked invalid

    def state_at(size):
        return state

    mean = averaged_logits(step, state_at, test, [(20, 20)], **one)[0]
    np.testing.assert_allclose(mean, each[(20, 20)][0], rtol=1e-6)
    mean, labels, valid = averaged_logits(step, state_at, test, list(each), **one)
    np.testing.assert_array_equal(valid, each[(20, 20)][2])
    np.testing.assert_allclose(mean, (each[(20, 20)][0] + each[(24, 16)][0]) / 2, rtol=1e-6)
    np.testing.assert_array_equal(labels, each[(20, 20)][1])
    alone = evaluate_tta(step, state_at, test, list(each), **kw)
    two = dict(kw, batch_size=8)
    parts = [
        logit_totals(*averaged_logits(step, state_at, test, list(each), **two, process=(p, 2)))
        for p in (0, 1)
    ]
    assert step.compiles == 2
    combined = summarize({k: parts[0][k] + parts[1][k] for k in parts[0]})
    assert alone["examples"] == combined["examples"] == 23
    assert alone["accuracy"] == combined["accuracy"]
    np.testing.assert_allclose(combined["loss"], alone["loss"], rtol=1e-6)
