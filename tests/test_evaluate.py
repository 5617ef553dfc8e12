"""Evaluation sharded over processes: each reads and evaluates its own rows, sums combined."""

import jax
import numpy as np
import pytest
from tiny import TINY_TRAIN

from fcn_jax.config import TrainConfig
from fcn_jax.data import Subset
from fcn_jax.evaluate import evaluate, process_totals, summarize
from fcn_jax.train import build


@pytest.mark.parametrize("size", [None, (20, 20)])
def test_two_simulated_processes_equal_one(tfds_dir, size):
    setup = build(TrainConfig(**{**TINY_TRAIN, "data_dir": tfds_dir, "buckets": "auto:2"}))
    test = Subset(setup.dataset.test, 23)  # uneven: the last batch is part padding
    state = jax.device_put(setup.state, jax.sharding.NamedSharding(setup.mesh, jax.P()))
    kw = dict(mode="resize", batch_size=8, min_size=setup.model.min_size, mesh=setup.mesh)
    alone = evaluate(setup.eval_step, state, test, size, **kw)
    parts = [
        process_totals(setup.eval_step, state, test, size, process=(p, 2), **kw) for p in (0, 1)
    ]
    assert parts[0]["count"] > 0 and parts[1]["count"] > 0  # each process has rows of its own
    combined = summarize({k: parts[0][k] + parts[1][k] for k in parts[0]})
    assert alone["examples"] == combined["examples"] == 23
    assert "pointing_game" in alone  # the digits carry boxes: the host-side metric is covered
    for key in alone:
        np.testing.assert_allclose(combined[key], alone[key], rtol=1e-6)
