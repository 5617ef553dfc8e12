"""Resuming a run: after SIGKILL to identical parameters, from the older checkpoint when the
newest is corrupt, under an equivalent spelling of its policy, with its evaluation curves
continued; changed flags refuse to resume."""

import json
import os
import signal
import time

import numpy as np
import pytest
from training import cli, run, tensorboard_scalars, tiny

from fcn_jax.checkpoint import CheckpointError, restore_model
from fcn_jax.outputs import write_json
from fcn_jax.run import train_and_evaluate


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
