"""Checkpoints with orbax: train state (model, optimizer, step) plus JSON metadata (loader
position, seed, model spec). Orbax writes each step to a temporary directory and renames it
when complete, so a killed run leaves either a whole checkpoint or none; a save that fails
(a full disk) removes its partial directory and is one line, the last good checkpoint kept.

What loading one trusts: orbax reads tensors and JSON, never a pickle, so a checkpoint from
elsewhere runs no code when restored (its values are whatever its author saved)."""

from __future__ import annotations

import json
import os
import shutil
from typing import Any

import jax
import orbax.checkpoint as ocp
from absl import logging
from flax import nnx

from fcn_jax.logs import orbax_errors_dropped
from fcn_jax.models import FCN, ModelSpec
from fcn_jax.models.presets import abstract_model
from fcn_jax.outputs import WriteError, failure_reason, space_left


class CheckpointError(RuntimeError):
    """A checkpoint that exists but cannot be used (unreadable or from another setup)."""


class _Unreadable(CheckpointError):
    """A checkpoint whose files do not restore (truncated, corrupt)."""


def _one_line(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"[:300]


class Checkpointer:
    """Save/restore ``(state, meta)`` pairs under ``WORKDIR/checkpoints/<step>``."""

    def __init__(self, workdir: str, max_to_keep: int = 2, *, writer: bool = False):
        """``writer``: the training process, which also removes temporary directories left by
        a killed save (readers must not: a live run may be writing them)."""
        self.directory = os.path.join(os.path.abspath(workdir), "checkpoints")
        self._writer = writer
        self._manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(
                max_to_keep=max_to_keep,
                enable_async_checkpointing=False,
                cleanup_tmp_directories=writer,
                read_only=not writer,
            ),
        )

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def save(self, step: int, state: Any, meta: dict) -> None:
        """Save ``step``; a failure is a one-line :class:`~fcn_jax.outputs.WriteError` (what,
        where, the space left) after its partial directory is removed: the older
        checkpoints stay as they were, and a rerun resumes from the newest."""
        try:
            with orbax_errors_dropped():
                self._manager.save(
                    step,
                    args=ocp.args.Composite(
                        state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)
                    ),
                    force=True,
                )
                self._manager.wait_until_finished()
        except Exception as e:  # orbax raises many types: OSError, ValueError (tensorstore)...
            free = space_left(self.directory)
            if jax.process_index() == 0:
                self._remove_partial(step)
            kept = [s for s in self._saved_steps() if s < step]
            then = (
                f"checkpoint {max(kept)} is kept: rerun the same command once there is room to "
                "resume from it"
                if kept
                else "no earlier checkpoint: rerun the same command once there is room"
            )
            raise WriteError(
                f"cannot save checkpoint {step} in {self.directory}: {failure_reason(e)} "
                f"({free}); {then}"
            ) from e

    def _saved_steps(self) -> list[int]:
        """Steps of the finished checkpoint directories, read from the disk."""
        names = os.listdir(self.directory) if os.path.isdir(self.directory) else []
        return [int(n) for n in names if n.isdigit()]

    def _remove_partial(self, step: int) -> None:
        """The temporary directory a failed save of ``step`` left: gone, so its space is free
        and no rerun trips on it. The step's own directory stays: orbax renames the temporary
        one to it only once written, so a save that fails after that (a peer process lost in
        the closing barrier) has a finished checkpoint to keep."""
        for name in os.listdir(self.directory) if os.path.isdir(self.directory) else []:
            if name.startswith(f"{step}.orbax-checkpoint-tmp"):
                shutil.rmtree(os.path.join(self.directory, name), ignore_errors=True)

    def restore(self, abstract_state: Any | None = None) -> tuple[Any, dict] | None:
        """The newest ``(state, meta)`` that restores, or None when there is no checkpoint.

        With ``abstract_state`` the state is restored into that structure (shapes must match);
        without, as nested dicts of arrays. A writer moves a checkpoint that does not restore
        aside (``STEP.unusable``, logged, never deleted) and falls back to the next older one.
        """
        errors = []
        for step in sorted(self._manager.all_steps(), reverse=True):
            try:
                return self._restore_step(step, abstract_state)
            except _Unreadable as e:
                errors.append(str(e))
                if not self._writer:
                    raise
                where = os.path.join(self.directory, str(step))
                aside, k = f"{where}.unusable", 1
                while os.path.exists(aside):  # an earlier resume may have moved one already
                    aside, k = f"{where}.unusable{k + 1}", k + 1
                os.rename(where, aside)
                self._manager.reload()
                logging.warning("%s; moved it to %s, trying the previous one", e, aside)
        if errors:
            raise CheckpointError(
                f"no checkpoint in {self.directory} restores ({errors[0]}): move the directory "
                "aside to start over, or use a new --workdir"
            )
        return None

    def _restore_step(self, step: int, abstract_state: Any | None) -> tuple[Any, dict]:
        where = os.path.join(self.directory, str(step))
        try:
            with orbax_errors_dropped():  # a failed read logs tracebacks from its tasks and threads
                target = abstract_state if abstract_state is not None else _on_this_device(where)
                restored = self._manager.restore(
                    step,
                    args=ocp.args.Composite(
                        state=ocp.args.StandardRestore(target),
                        meta=ocp.args.JsonRestore(),
                    ),
                )
        except Exception as e:  # orbax raises many types; all mean "this can't be used"
            raise _Unreadable(f"cannot restore checkpoint {where}: {_one_line(e)}") from e
        if abstract_state is not None:
            want = jax.tree.map(lambda a: (tuple(a.shape), str(a.dtype)), abstract_state)
            got = jax.tree.map(lambda a: (tuple(a.shape), str(a.dtype)), restored.state)
            if want != got:
                raise CheckpointError(f"checkpoint {where} does not match this model/optimizer")
        return restored.state, restored.meta


def _on_this_device(where: str):
    """The saved state's structure, shapes and dtypes, placed on this process's first device:
    a reader (export, predict) restores a run saved on other devices or several hosts."""
    tree = ocp.StandardCheckpointer().metadata(os.path.join(where, "state")).item_metadata
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    return jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device), tree)


def _unwrap_values(tree):
    """Raw restored ``nnx.State`` nests each array as ``{"value": array}``: drop that level."""
    if isinstance(tree, dict):
        if set(tree) == {"value"} and not isinstance(tree["value"], dict):
            return tree["value"]
        return {k: _unwrap_values(v) for k, v in tree.items()}
    return tree


def _shapes(state) -> dict[str, tuple[int, ...]]:
    """Each variable's shape, by its path (a restored value may have any shape)."""
    leaves = jax.tree_util.tree_flatten_with_path(state)[0]
    return {jax.tree_util.keystr(path): tuple(v.shape) for path, v in leaves}


def restore_model(workdir: str) -> FCN:
    """The trained model of a run directory, in eval mode; a one-line
    :class:`CheckpointError` when the directory is missing, is not a run, holds no checkpoint
    or one that does not fit its config."""
    config_path = os.path.join(workdir, "config.json")
    if not os.path.isdir(workdir):
        raise CheckpointError(f"run directory {workdir!r} does not exist")
    if not os.path.isfile(config_path):
        raise CheckpointError(f"{workdir!r} is not a training run directory (no config.json)")
    with open(config_path) as f:
        spec = ModelSpec(**json.load(f)["model_spec"])
    restored = Checkpointer(workdir).restore()
    if restored is None:
        raise CheckpointError(f"no checkpoint in {os.path.join(workdir, 'checkpoints')}")
    model = abstract_model(spec)  # every variable is overwritten: no initializer to compile
    for collection, values in (
        (nnx.Param, restored[0]["params"]),
        (nnx.Not(nnx.Param), restored[0]["rest"]),
    ):
        state = nnx.state(model, collection)
        want = _shapes(state)
        try:
            nnx.replace_by_pure_dict(state, _unwrap_values(values))
        except Exception as e:
            raise CheckpointError(f"checkpoint in {workdir} does not fit its config: {e}") from e
        if differ := [(k, want[k], v) for k, v in _shapes(state).items() if v != want[k]]:
            name, config_shape, saved = differ[0]
            raise CheckpointError(
                f"checkpoint in {workdir} does not fit its config: {name} is {saved} there, "
                f"{config_shape} in its model_spec"
            )
        nnx.update(model, state)
    if any(isinstance(v, jax.ShapeDtypeStruct) for v in jax.tree.leaves(nnx.state(model))):
        raise CheckpointError(f"checkpoint in {workdir} does not restore every model variable")
    model.eval()
    return model


def restore_run(workdir: str):
    """:func:`restore_model` for the commands: every failure a ``ValueError`` with a one-line
    message."""
    try:
        return restore_model(workdir)
    except CheckpointError as e:
        raise ValueError(str(e)) from None
    except (OSError, ValueError, KeyError, RuntimeError) as e:
        raise ValueError(f"cannot restore a model from {workdir!r}: {e}") from None


def run_class_names(workdir: str) -> list[str] | None:
    """Class names recorded in a run's ``config.json`` (``class_names`` at the top or under
    ``dataset``), if any; None otherwise (predictions then name classes by index)."""
    try:
        with open(os.path.join(workdir, "config.json")) as f:
            config = json.load(f)
        names = config.get("class_names") or config.get("dataset", {}).get("class_names")
    except (OSError, ValueError, AttributeError):
        return None
    return [str(n) for n in names] if isinstance(names, list) else None
