"""Training: every dataset kind, compile counts, the NaN guard, 4 devices, TTA, bfloat16 and
BatchNorm recalibration (resuming: test_resume.py)."""

import json
import logging
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow_datasets as tfds
from commands import cpu_devices
from PIL import Image
from training import cli, run, tensorboard_scalars, tiny

from fcn_jax.checkpoint import Checkpointer
from fcn_jax.config import TrainConfig
from fcn_jax.data import parse_size_policy
from fcn_jax.run import train_and_evaluate
from fcn_jax.setup import build
from fcn_jax.train import NonFiniteLossError, prepare_workdir


def test_builtin_2d_outputs(tfds_dir, tmp_path):
    s = run(tiny(tfds_dir), tmp_path)
    assert set(s["eval_accuracy"]) == {"24x24", "28x16"}
    assert s["input_pipeline"] == "device"  # auto: the sizes vary, held padded, it fits
    assert 0 <= s["pointing_game"] <= 1  # the digits carry boxes
    for name in ("config.json", "metrics.jsonl", "summary.json", "eval_heatmap.png"):
        assert os.path.getsize(tmp_path / name) > 0
    assert os.listdir(tmp_path / "tensorboard")
    kinds = [json.loads(line)["kind"] for line in open(tmp_path / "metrics.jsonl")]
    assert kinds.count("train") == 2 and kinds.count("eval") == 2 and "test" in kinds
    on_disk = json.load(open(tmp_path / "summary.json"))
    assert "tta" not in kinds and not [k for k in on_disk if k.startswith("tta")]  # no flag
    tags = tensorboard_scalars(tmp_path)  # one tag per test size
    assert tags["eval/accuracy/24x24"] == {6: pytest.approx(s["eval_accuracy"]["24x24"])}
    assert set(tags["train/loss"]) == {3, 6} and "eval/accuracy" not in tags


def test_auto_pipeline_over_budget_takes_grain_and_says_why(tfds_dir, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    s = run(tiny(tfds_dir, steps=3, device_data_fraction=1e-9), tmp_path)
    assert s["input_pipeline"] == "grain"
    (line,) = [r.getMessage() for r in caplog.records if "input pipeline" in r.getMessage()]
    assert "grain (host): the train split of procedural_digits/tiny_variable" in line
    assert "more than 0 MiB (--device_data_fraction=1e-09" in line


def test_builtin_1d(tfds_dir, tmp_path):
    s = run(tiny(tfds_dir, dataset="mnist1d/tiny_variable", eval_sizes="32,48"), tmp_path)
    assert set(s["eval_accuracy"]) == {"32", "48"}


def test_npz_fixed_size(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (40, 20, 20), np.uint8)
    labels = rng.integers(0, 3, 40)
    path = tmp_path / "d.npz"
    np.savez(
        path,
        train_images=images,
        train_labels=labels,
        test_images=images[:8],
        test_labels=labels[:8],
    )
    s = run(tiny(None, dataset=f"npz:{path}", buckets=None, eval_sizes="20"), tmp_path / "run")
    assert s["train_size"] == "fixed:20x20" and s["train_compiles"] == 1
    assert s["input_pipeline"] == "device"  # auto: one size, fits


def test_folder(tmp_path):
    rng = np.random.default_rng(0)
    for c in ("cat", "dog"):
        os.makedirs(tmp_path / "data" / c)
        for i in range(30):
            h, w = rng.integers(12, 30, 2)
            Image.fromarray(rng.integers(0, 256, (h, w, 3), np.uint8)).save(
                tmp_path / "data" / c / f"{i}.png"
            )
    config = tiny(None, dataset=f"folder:{tmp_path / 'data'}", eval_sizes="16", batch_size=8)
    s = run(config, tmp_path / "run")
    assert set(s["eval_accuracy"]) == {"16x16"}


def test_tfds_name_under_mock_data(tmp_path):
    with tfds.testing.mock_data(num_examples=40, policy=tfds.testing.MockPolicy.USE_CODE):
        s = run(tiny(None, dataset="mnist", buckets=None, eval_sizes="28"), tmp_path)
    assert s["train_size"] == "fixed:28x28"


@pytest.mark.parametrize("train_size", ["fixed:20", "mixed:16-24:8", "native"])
def test_one_compile_per_bucket(tfds_dir, tmp_path, train_size):
    config = tiny(
        tfds_dir,
        train_size=train_size,
        steps=8,
        eval_sizes="24",
        buckets="auto:3" if train_size == "native" else None,
    )
    s = run(config, tmp_path)
    shapes = {tuple(x[1:3]) for x in s["train_compile_shapes"]}
    assert s["train_compiles"] == len(shapes)  # never twice for one shape
    assert shapes <= {tuple(b) for b in s["buckets"]}
    if train_size.startswith("mixed"):
        policy = parse_size_policy(train_size, 2)
        drawn = {policy.draw_size(config.seed, step) for step in range(8)}
        assert shapes == drawn
    if train_size == "fixed:20":
        assert s["train_compiles"] == 1


def test_precompile_compiles_every_bucket(tfds_dir, tmp_path):
    s = run(tiny(tfds_dir, precompile=True, steps=2, buckets="auto:3"), tmp_path)
    assert s["train_compiles"] == len(s["buckets"]) == 3


def test_non_finite_loss_stops_with_step(tfds_dir, tmp_path):
    config = tiny(
        tfds_dir,
        optimizer="sgd",
        learning_rate=1e12,
        schedule="constant",
        steps=30,
        log_every=1,
        checkpoint_every=1,
    )
    with pytest.raises(NonFiniteLossError, match=r"non-finite loss at step (\d+)") as e:
        train_and_evaluate(config, str(tmp_path))
    bad = int(e.value.args[0].split("step ")[1].split(";")[0])
    assert Checkpointer(str(tmp_path)).latest_step() == bad - 1  # the last good one is kept
    assert not os.path.exists(tmp_path / "summary.json")


def test_workdir_errors_are_one_line_and_validation_leaves_no_directory(tfds_dir, tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match=r"^--workdir=.*/file/run: Not a directory$"):
        prepare_workdir(str(tmp_path / "file" / "run"))
    with pytest.raises(ValueError, match=r"^--eval_sizes='0x5': '0x5' has a zero side$"):
        TrainConfig(eval_sizes="0x5").resolved()
    with pytest.raises(ValueError, match="below the model's minimum size"):
        train_and_evaluate(tiny(tfds_dir, eval_sizes="2"), str(tmp_path / "never"))
    assert not (tmp_path / "never").exists()


def test_bad_flag_fails_fast_with_one_line(tmp_path):
    for flag, text in [
        ("--model=lenet", "--model='lenet'"),
        ("--steps=-3", "--steps=-3"),
        ("--train_size=mixed:abc", "mixed:abc"),
        ("--dataset=no_such_dataset_xyz", "no_such_dataset_xyz"),
    ]:
        proc = cli([f"--workdir={tmp_path}", flag])
        _, err = proc.communicate(timeout=120)
        lines = [line for line in err.splitlines() if line.startswith("error:")]
        assert proc.returncode != 0 and len(lines) == 1 and text in lines[0], err[-1500:]
        assert "Traceback" not in err


FOUR_DEVICES = """
import json, sys, jax, numpy as np
from flax import nnx
from fcn_jax.config import TrainConfig
from fcn_jax.checkpoint import restore_model
from fcn_jax.run import train_and_evaluate
# eval_batch_size and eval_examples divide neither each other nor 4 devices.
cfg = TrainConfig(dataset="procedural_digits/tiny_variable", data_dir=sys.argv[1], width=0.25,
                  steps=4, batch_size=16, eval_batch_size=10, eval_examples=18, eval_sizes="24",
                  buckets="auto:2", log_every=1, checkpoint_every=4)
train_and_evaluate(cfg, sys.argv[2])
params = jax.tree.leaves(nnx.state(restore_model(sys.argv[2]), nnx.Param))
np.savez(sys.argv[2] + "/params.npz", *[np.asarray(p) for p in params])
print(json.dumps({"devices": jax.device_count()}))
"""


def test_four_devices_match_one(tfds_dir, tmp_path):
    """(Two devices: the comparison test in test_compare.py.)"""
    results = {}
    for n in (1, 4):
        env = {**os.environ, **cpu_devices(n), "JAX_PLATFORMS": "cpu"}  # on any machine
        out = subprocess.run(
            [sys.executable, "-c", FOUR_DEVICES, tfds_dir, str(tmp_path / str(n))],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert out.returncode == 0, out.stderr[-2000:]
        assert json.loads(out.stdout.splitlines()[-1])["devices"] == n
        records = [json.loads(line) for line in open(tmp_path / str(n) / "metrics.jsonl")]
        losses = [r["loss"] for r in records if r["kind"] == "train"]
        evals = [r for r in records if r["kind"] in ("eval", "test")]
        # Eval batches of 10 (12 on 4 devices) over 18 examples: each counted exactly once.
        assert len(evals) == 2 and all(r["examples"] == 18 for r in evals)
        params = np.load(tmp_path / str(n) / "params.npz")
        results[n] = (losses, [params[k] for k in sorted(params.files)], evals)
    np.testing.assert_allclose(results[1][0], results[4][0], rtol=1e-5)
    for a, b in zip(results[1][1], results[4][1], strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    for one, four in zip(results[1][2], results[4][2], strict=True):
        assert one["accuracy"] == four["accuracy"]
        np.testing.assert_allclose(one["loss"], four["loss"], rtol=1e-4)


def test_tta_of_one_size_equals_that_test_size(tfds_dir, tmp_path):
    s = run(tiny(tfds_dir, tta_sizes="24"), tmp_path)
    assert s["tta_sizes"] == ["24x24"]
    assert s["tta_accuracy"] == s["eval_accuracy"]["24x24"]
    assert s["tta_loss"] == pytest.approx(s["eval_loss"]["24x24"], rel=1e-5)
    assert json.load(open(tmp_path / "summary.json"))["tta_accuracy"] == s["tta_accuracy"]
    records = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    (tta,) = [r for r in records if r["kind"] == "tta"]
    assert tta["sizes"] == ["24x24"] and tta["examples"] == 32
    assert tta["accuracy"] == s["tta_accuracy"]


def test_bad_tta_sizes_are_one_line_errors(tfds_dir):
    for value, text in [("abc", "'abc' is not a size"), ("grid:28", "expected a list like")]:
        with pytest.raises(ValueError, match=f"^--tta_sizes='{value}': {text}") as e:
            tiny(tfds_dir, tta_sizes=value).resolved()
        assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match=r"^--tta_sizes: \[\(4, 4\)\] below the model's min"):
        build(tiny(tfds_dir, tta_sizes="24,4"))


def test_bfloat16_canvas_and_bn_recalibration(tfds_dir, tmp_path):
    config = tiny(
        tfds_dir,
        model="resnet",
        depth=1,
        precision="bfloat16",
        eval_mode="canvas",
        eval_sizes="24,32",
    )
    plain = run(config, tmp_path)
    assert plain["eval_mode"] == "canvas"
    # Re-evaluating the finished run with BatchNorm statistics re-estimated at each test size
    # trains nothing and changes the evaluation.
    config.recalibrate_bn = True
    config.tta_sizes = "24"  # tested at 24x24 with the statistics recalibrated there too
    recal = run(config, tmp_path)
    assert recal["resumed_from_step"] == config.steps
    assert recal["eval_compiles"] > plain["eval_compiles"]  # the statistics pass compiles too
    assert recal["eval_loss"] != plain["eval_loss"]
    assert recal["test_loss"] == plain["test_loss"]  # native test: no recalibration
    loss = recal["eval_loss"]["24x24"]  # bfloat16 inside: another executable may round apart
    assert recal["tta_loss"] == pytest.approx(loss, rel=1e-3)
    assert abs(recal["tta_loss"] - loss) < abs(recal["tta_loss"] - plain["eval_loss"]["24x24"])
