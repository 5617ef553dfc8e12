"""Checkpoints (fcn_jax.checkpoint): a save/restore round trip of state and metadata, the
newest kept, a failed save that keeps the last good checkpoint, a corrupt one moved aside by
the writer (an error for readers), and a run's model and class names read back."""

import dataclasses
import errno
import json
import os

import jax
import numpy as np
import pytest
from flax import nnx

from fcn_jax.checkpoint import (
    Checkpointer,
    CheckpointError,
    restore_model,
    restore_run,
    run_class_names,
)
from fcn_jax.models import ModelSpec
from fcn_jax.models.presets import abstract_model
from fcn_jax.outputs import WriteError


def state_of(k: float) -> dict:
    return {"params": {"w": np.full((2, 3), k, np.float32)}, "step": np.int32(k)}


def random_model(spec: ModelSpec):
    """A model of ``spec`` with random values (no initializers to compile: a few seconds)."""
    model, rng = abstract_model(spec), np.random.default_rng(0)
    nnx.update(model, jax.tree.map(lambda a: rng.normal(size=a.shape).astype(a.dtype),
                                   nnx.state(model)))  # fmt: skip
    return model


def truncate(checkpoint) -> None:
    for root, _, files in os.walk(checkpoint / "state"):
        for f in files:
            open(os.path.join(root, f), "wb").close()


def test_the_newest_checkpoint_restores_as_saved_and_only_the_newest_are_kept(tmp_path):
    saver = Checkpointer(str(tmp_path), max_to_keep=2, writer=True)
    assert saver.latest_step() is None and saver.restore() is None  # nothing yet
    for step in (1, 2, 3):
        saver.save(step, state_of(step), {"loader": {"step": step}, "seed": 0})
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["2", "3"]
    reader = Checkpointer(str(tmp_path))  # another process: reads, never writes
    assert reader.latest_step() == 3
    state, meta = reader.restore()
    assert meta == {"loader": {"step": 3}, "seed": 0}
    np.testing.assert_array_equal(state["params"]["w"], np.full((2, 3), 3, np.float32))
    abstract = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), state_of(0))
    typed, _ = reader.restore(abstract)
    assert jax.tree.structure(typed) == jax.tree.structure(abstract)
    assert typed["params"]["w"].dtype == np.float32 and int(typed["step"]) == 3
    wrong = {**abstract, "params": {"w": jax.ShapeDtypeStruct((3, 2), np.float32)}}
    with pytest.raises(CheckpointError, match=r"checkpoint .*3 does not match this model"):
        reader.restore(wrong)


def test_a_corrupt_checkpoint_is_moved_aside_by_the_writer_and_an_error_for_readers(tmp_path):
    saver = Checkpointer(str(tmp_path), writer=True)
    for step in (1, 2):
        saver.save(step, state_of(step), {"step": step})
    directory = tmp_path / "checkpoints"
    truncate(directory / "2")
    with pytest.raises(CheckpointError, match=r"^cannot restore checkpoint .*2: "):
        Checkpointer(str(tmp_path)).restore()  # a reader leaves it where it is
    assert (directory / "2").is_dir()
    state, meta = Checkpointer(str(tmp_path), writer=True).restore()
    assert meta == {"step": 1} and int(state["step"]) == 1
    assert sorted(os.listdir(directory)) == ["1", "2.unusable"]  # kept, never deleted
    truncate(directory / "1")
    with pytest.raises(CheckpointError, match=r"^no checkpoint in .* restores \(cannot restore"):
        Checkpointer(str(tmp_path), writer=True).restore()
    assert sorted(os.listdir(directory)) == ["1.unusable", "2.unusable"]


def test_a_failed_save_is_one_line_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    saver = Checkpointer(str(tmp_path), writer=True)
    saver.save(1, state_of(1), {"step": 1})
    real_save = saver._manager.save

    def full_disk(step, *args, **kw):
        os.makedirs(tmp_path / "checkpoints" / f"{step}.orbax-checkpoint-tmp-7" / "state")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(saver._manager, "save", full_disk)
    with pytest.raises(WriteError) as e:
        saver.save(2, state_of(2), {"step": 2})
    message = str(e.value)
    assert message.startswith(f"cannot save checkpoint 2 in {tmp_path / 'checkpoints'}: No space")
    assert message.endswith("checkpoint 1 is kept: rerun the same command once there is room to "
                            "resume from it") and "\n" not in message  # fmt: skip
    assert os.listdir(tmp_path / "checkpoints") == ["1"]  # the partial save is gone
    monkeypatch.setattr(saver._manager, "save", real_save)
    saver.save(2, state_of(2), {"step": 2})  # once there is room
    assert Checkpointer(str(tmp_path)).restore()[1] == {"step": 2}


def test_a_save_failing_after_its_rename_keeps_the_finished_checkpoint(tmp_path, monkeypatch):
    # As when a peer process is lost in the barrier that closes a multi-process save.
    saver = Checkpointer(str(tmp_path), writer=True)
    real_save = saver._manager.save

    def lost_peer(*args, **kw):
        real_save(*args, **kw)
        raise RuntimeError("barrier: peer process lost")

    monkeypatch.setattr(saver._manager, "save", lost_peer)
    with pytest.raises(WriteError, match="^cannot save checkpoint 1 in .*barrier: peer"):
        saver.save(1, state_of(1), {"step": 1})
    assert os.listdir(tmp_path / "checkpoints") == ["1"]
    assert Checkpointer(str(tmp_path)).restore()[1] == {"step": 1}


def test_a_run_s_model_and_class_names_are_read_back(tmp_path):
    model = random_model(ModelSpec("seed", 3, 1, 2, 0.125))
    with pytest.raises(CheckpointError, match="no checkpoint in"):
        (tmp_path / "config.json").write_text(json.dumps({"model_spec": model.spec.to_dict()}))
        restore_model(str(tmp_path))
    _, params, rest = nnx.split(model, nnx.Param, ...)
    Checkpointer(str(tmp_path), writer=True).save(1, {"params": params, "rest": rest}, {})
    restored = restore_model(str(tmp_path))
    assert restored.spec == model.spec
    for a, b in zip(jax.tree.leaves(nnx.state(model)), jax.tree.leaves(nnx.state(restored)),
                    strict=True):  # fmt: skip
        np.testing.assert_array_equal(a, b)
    other = dataclasses.replace(model.spec, num_classes=5).to_dict()
    (tmp_path / "config.json").write_text(json.dumps({"model_spec": other}))
    with pytest.raises(ValueError, match="does not fit its config: .* is .*3.* there") as e:
        restore_run(str(tmp_path))  # 3 classes saved, 5 in the config: not a model to use
    assert "\n" not in str(e.value)

    assert run_class_names(str(tmp_path)) is None
    (tmp_path / "config.json").write_text(json.dumps({"dataset": {"class_names": ["a", 2]}}))
    assert run_class_names(str(tmp_path)) == ["a", "2"]
    (tmp_path / "config.json").write_text(json.dumps({"class_names": ["x"], "dataset": {}}))
    assert run_class_names(str(tmp_path)) == ["x"]
    (tmp_path / "config.json").write_text("{not json")
    assert run_class_names(str(tmp_path)) is None
    assert run_class_names(str(tmp_path / "nowhere")) is None
