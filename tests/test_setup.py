"""A run's setup (fcn_jax.setup): the default policy, the matmul precision per backend and
policy, the loader chosen, and what ``build`` makes of a config before the first step."""

import jax
import numpy as np
import pytest

from fcn_jax import setup
from fcn_jax.config import TrainConfig
from fcn_jax.data.arrays import ArraySource
from fcn_jax.data.device_loader import DeviceLoader
from fcn_jax.data.loader import TrainLoader
from fcn_jax.data.policies import SizePolicy
from fcn_jax.data.sources import Dataset


def varied(n=24, low=6, high=16, seed=0) -> ArraySource:
    rng = np.random.default_rng(seed)
    shapes = rng.integers(low, high + 1, (n, 2))
    return ArraySource(
        [rng.integers(0, 256, (*s, 1), np.uint8) for s in shapes], np.arange(n) % 3, 2
    )


def one_size(n=24, size=(12, 10)) -> ArraySource:
    return ArraySource(np.zeros((n, *size, 1), np.uint8), np.arange(n) % 3, 2)


def dataset(source) -> Dataset:
    return Dataset("mine", source, source, 3, 1, 2)


TINY = dict(dataset="mine", model="seed", width=0.125, batch_size=4, steps=5, eval_sizes="12")


def test_the_default_policy_is_native_for_varying_sizes_else_fixed_at_the_one_size():
    assert setup.default_policy(dataset(varied())) == SizePolicy("native", 2)
    assert setup.default_policy(dataset(one_size())) == SizePolicy("fixed", 2, size=(12, 10))


def test_matmul_precision_keeps_padded_float32_runs_exact_off_the_cpu(monkeypatch):
    native, fixed = SizePolicy("native", 2), SizePolicy("fixed", 2, size=(8, 8))
    assert setup.matmul_precision(TrainConfig(matmul_precision="highest"), native) is None  # CPU
    monkeypatch.setattr(setup.jax, "default_backend", lambda: "gpu")
    auto = TrainConfig(matmul_precision="auto")
    assert setup.matmul_precision(auto, native) == "highest"  # padded: exact
    assert setup.matmul_precision(auto, fixed) is None  # unpadded: the backend's default
    bf16 = TrainConfig(matmul_precision="auto", precision="bfloat16")
    assert setup.matmul_precision(bf16, native) is None
    assert setup.matmul_precision(TrainConfig(matmul_precision="high"), fixed) == "high"
    assert setup.matmul_precision(TrainConfig(matmul_precision="default"), native) is None


def test_build_binds_the_config_to_the_data_and_sets_up_the_run():
    """Without --train_size a varying dataset trains native in its declared buckets; --epochs
    is counted in the loader's steps; the state is a fresh one of the model on the host."""
    data = dataset(varied())
    built = setup.build(
        TrainConfig(**{**TINY, "steps": None, "epochs": 2.0}, buckets="auto:2"), data
    )
    per_epoch = built.loader.plan.batches_per_epoch
    assert built.dataset is data and built.train_size == "native"
    assert built.policy == SizePolicy("native", 2) and 1 <= len(built.buckets) <= 2
    assert built.total_steps == built.loader.steps_for(2.0) == 2 * per_epoch > 0
    assert isinstance(built.loader, DeviceLoader)  # auto: a small split is held on the devices
    assert built.mesh.size == jax.device_count() and built.eval_sizes == [(12, 12)]
    assert built.tta_sizes == [] and built.config.epochs == 2.0
    assert built.steps_kw["matmul_precision"] is None and built.train_step.compiles == 0
    params = jax.tree.leaves(built.state["params"])
    assert params and all(isinstance(p, np.ndarray | jax.Array) for p in params)
    grain = setup.build(TrainConfig(**TINY, input_pipeline="grain", train_size="fixed:12"), data)
    assert isinstance(grain.loader, TrainLoader) and grain.buckets == [(12, 12)]
    assert grain.train_size == "fixed:12x12" and grain.total_steps == 5


@pytest.mark.parametrize(
    "kw, message",
    [
        (dict(eval_sizes="12,6"), r"--eval_sizes:.*\(6, 6\)"),
        (dict(tta_sizes="4"), r"--tta_sizes:.*\(4, 4\)"),
        (dict(train_size="fixed:12", input_pipeline="device", device_data_fraction=1e-9),
         r"^--input_pipeline=device: the train split of mine: "),
    ],
)  # fmt: skip
def test_what_the_model_or_the_devices_cannot_take_is_refused_before_any_step(kw, message):
    with pytest.raises(ValueError, match=message):
        setup.build(TrainConfig(**{**TINY, **kw}), dataset(one_size()))
