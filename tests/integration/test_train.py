"""Training: every dataset kind, compile counts, resume after SIGKILL, NaN guard, 4 devices."""

import json
import logging
import os
import signal
import struct
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image
from tiny import TINY_TRAIN

from fcn_jax.checkpoint import Checkpointer, CheckpointError, restore_model
from fcn_jax.config import TrainConfig
from fcn_jax.data import parse_size_policy
from fcn_jax.outputs import write_json
from fcn_jax.run import train_and_evaluate
from fcn_jax.setup import build
from fcn_jax.train import NonFiniteLossError, prepare_workdir

SUMMARY_KEYS = {
    "test_accuracy",
    "eval_accuracy",
    "train_compiles",
    "eval_compiles",
    "buckets",
    "padding_efficiency",
    "train_examples_per_sec",
    "wall_time_s",
    "steps",
    "final_loss",
}


def tiny(data_dir, **kw) -> TrainConfig:
    """A few steps of a narrow seed model on 32 test examples."""
    base = {**TINY_TRAIN, "data_dir": data_dir, "buckets": "auto:2", "checkpoint_every": 3}
    return TrainConfig(**{**base, **kw})


def run(config, workdir) -> dict:
    summary = train_and_evaluate(config, str(workdir))
    assert SUMMARY_KEYS <= set(summary)
    on_disk = json.load(open(os.path.join(workdir, "summary.json")))
    assert on_disk["eval_accuracy"] == summary["eval_accuracy"]
    assert np.isfinite(summary["final_loss"])
    return summary


def tensorboard_scalars(workdir) -> dict[str, dict[int, float]]:
    """tag -> {step: value} from the TensorBoard event files under ``workdir/tensorboard``
    (TFRecord framing: length, its CRC, an Event proto, its CRC)."""
    from tensorboardX.proto.event_pb2 import Event

    scalars = {}
    for path in sorted((workdir / "tensorboard").iterdir()):
        data, pos = path.read_bytes(), 0
        while pos + 12 <= len(data):
            (length,) = struct.unpack("<Q", data[pos : pos + 8])
            event = Event.FromString(data[pos + 12 : pos + 12 + length])
            pos += 16 + length
            for value in event.summary.value:
                scalars.setdefault(value.tag, {})[event.step] = value.simple_value
    return scalars


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


def test_changed_flags_refuse_to_resume(tfds_dir, tmp_path):
    run(tiny(tfds_dir, steps=3), tmp_path)
    with pytest.raises(CheckpointError, match="--width=0.25"):
        train_and_evaluate(tiny(tfds_dir, steps=3, width=0.5), str(tmp_path))


def _truncate(checkpoint) -> None:
    for root, _, files in os.walk(checkpoint / "state"):
        for f in files:
            open(os.path.join(root, f), "wb").close()


def test_corrupt_checkpoint_falls_back_or_is_an_error(tfds_dir, tmp_path):
    """A corrupt newest checkpoint is moved aside and the run resumes from the older one,
    ending as the uninterrupted run did; with none intact, one line says what to do."""
    config = tiny(tfds_dir, steps=6)  # checkpoints at steps 3 and 6
    uninterrupted = run(config, tmp_path)
    _truncate(tmp_path / "checkpoints" / "6")
    resumed = train_and_evaluate(config, str(tmp_path))
    assert resumed["resumed_from_step"] == 3 and (tmp_path / "checkpoints" / "6.unusable").is_dir()
    for key in ("eval_accuracy", "eval_loss", "test_accuracy", "final_loss", "train_examples"):
        assert resumed[key] == uninterrupted[key], key
    for step in ("3", "6"):
        _truncate(tmp_path / "checkpoints" / step)
    with pytest.raises(CheckpointError, match=r"^no checkpoint in .* restores \(cannot restore"):
        train_and_evaluate(config, str(tmp_path))


@pytest.mark.parametrize(
    "written, again, canonical",
    [
        ("fixed:20", "fixed:20x20", "fixed:20x20"),
        ("mixed:16-24:8", "mixed_step:16-24", "mixed_step:16x16-24x24:8"),
    ],
)
def test_an_equivalent_spelling_of_the_policy_resumes(
    tfds_dir, tmp_path, written, again, canonical
):
    """A run recorded with one spelling of its size policy (as written before spellings were
    canonical) resumes under another spelling of the same policy, and records the canonical
    one."""
    uninterrupted = run(tiny(tfds_dir, train_size=written, buckets=None), tmp_path)  # at 3, 6
    recorded = json.load(open(tmp_path / "config.json"))
    assert recorded["config"]["train_size"] == recorded["train_size"] == canonical
    recorded["config"]["train_size"] = written
    write_json(str(tmp_path / "config.json"), recorded)
    _truncate(tmp_path / "checkpoints" / "6")
    resumed = train_and_evaluate(tiny(tfds_dir, train_size=again, buckets=None), str(tmp_path))
    assert resumed["resumed_from_step"] == 3 and resumed["train_size"] == canonical
    for key in ("eval_accuracy", "test_accuracy", "final_loss", "train_examples"):
        assert resumed[key] == uninterrupted[key], key
    assert json.load(open(tmp_path / "config.json"))["config"]["train_size"] == canonical


def test_eval_every_curves_continue_across_a_resume(tfds_dir, tmp_path):
    """--eval_every=3 of 6 steps: per-size eval records and TensorBoard points at steps 3 and
    6 (the final evaluation), training unchanged, each shape compiled once; resuming from step
    3, or rerunning the finished run, continues the curve without repeating a point."""
    plain = run(tiny(tfds_dir), tmp_path / "plain")
    config, workdir = tiny(tfds_dir, eval_every=3), tmp_path / "curve"
    first = run(config, workdir)
    assert first["eval_compiles"] == plain["eval_compiles"]
    for key in ("eval_accuracy", "eval_loss", "final_loss", "test_accuracy"):
        assert first[key] == plain[key], key

    def curve():
        records = [json.loads(line) for line in open(workdir / "metrics.jsonl")]
        return [(r["step"], r["size"], r["accuracy"]) for r in records if r["kind"] == "eval"]

    points = curve()
    assert [(step, size) for step, size, _ in points] == [
        (3, "24x24"),
        (3, "28x16"),
        (6, "24x24"),
        (6, "28x16"),
    ]
    assert set(tensorboard_scalars(workdir)["eval/accuracy/28x16"]) == {3, 6}
    _truncate(workdir / "checkpoints" / "6")
    assert train_and_evaluate(config, str(workdir))["resumed_from_step"] == 3
    assert curve() == points
    train_and_evaluate(config, str(workdir))  # finished: evaluated again, not appended
    assert curve() == points


def cli(args, env=None, **kw):
    return subprocess.Popen(
        [sys.executable, "-m", "experiments.train", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
        **kw,
    )


def cli_flags(tfds_dir, workdir, steps):
    return [
        f"--workdir={workdir}",
        f"--data_dir={tfds_dir}",
        "--dataset=procedural_digits/tiny_variable",
        "--width=0.25",
        f"--steps={steps}",
        "--batch_size=16",
        "--buckets=auto:2",
        "--checkpoint_every=2",
        "--log_every=2",
        "--eval_examples=16",
        "--eval_batch_size=16",
        "--eval_sizes=24",
    ]


def params_of(workdir):
    from flax import nnx

    return [
        np.asarray(p)
        for p in __import__("jax").tree.leaves(nnx.state(restore_model(str(workdir)), nnx.Param))
    ]


def saved_steps(workdir) -> list[int]:
    """Finished checkpoint steps, read from the directory (not via orbax: a run is writing)."""
    directory = workdir / "checkpoints"
    return [int(d) for d in os.listdir(directory) if d.isdigit()] if directory.exists() else []


def test_resume_after_sigkill_gives_identical_params(tfds_dir, tmp_path):
    steps, killed = 16, tmp_path / "killed"
    flags = cli_flags(tfds_dir, killed, steps) + [f"--compilation_cache_dir={tmp_path / 'cache'}"]
    proc = cli(flags)
    # Kill at a random moment after the first checkpoint, while training goes on.
    deadline = time.time() + 240
    while not saved_steps(killed) and time.time() < deadline:
        time.sleep(0.1)
    time.sleep(float(np.random.default_rng().uniform(0, 0.3)))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert max(saved_steps(killed)) < steps  # it really was interrupted
    # TensorBoard kept every step logged up to the last checkpoint (logs and saves every 2).
    logged = set(tensorboard_scalars(killed)["train/loss"])
    assert set(range(2, max(saved_steps(killed)) + 1, 2)) <= logged
    finish = cli(flags)
    _, err = finish.communicate(timeout=300)
    assert finish.returncode == 0, err[-2000:]
    # The reference runs uninterrupted, in this process.
    config = tiny(
        tfds_dir,
        steps=steps,
        checkpoint_every=2,
        log_every=2,
        eval_examples=16,
        eval_batch_size=16,
        eval_sizes="24",
    )
    train_and_evaluate(config, str(tmp_path / "ref"))
    for a, b in zip(params_of(tmp_path / "ref"), params_of(killed), strict=True):
        np.testing.assert_array_equal(a, b)
    summary = json.load(open(killed / "summary.json"))
    assert summary["steps"] == steps and summary["resumed_from_step"] > 0


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
        flags = f"--xla_force_host_platform_device_count={n}"  # n CPU devices, on any machine
        env = {**os.environ, "XLA_FLAGS": flags, "JAX_PLATFORMS": "cpu"}
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
