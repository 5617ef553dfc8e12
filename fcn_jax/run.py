"""One run end to end: ``train_and_evaluate(config, workdir) -> summary`` builds the setup,
trains (evaluating every ``--eval_every`` steps), evaluates the finished state and writes
the run's summary (the flax examples' ``train_and_evaluate``).

Outputs in ``workdir``: config.json, metrics.jsonl, tensorboard/ and checkpoints/ (the loop,
:mod:`fcn_jax.train`), then summary.json and (2-D) eval_heatmap.png.
"""

from __future__ import annotations

import os
import time

import jax
from absl import logging

from fcn_jax.caveats import run_warning
from fcn_jax.config import TrainConfig
from fcn_jax.data import Dataset, Subset
from fcn_jax.evaluate import Evaluator
from fcn_jax.outputs import write_json
from fcn_jax.setup import Setup, build
from fcn_jax.train import Trained, prepare_workdir, train
from fcn_jax.workdir_lock import WorkdirLock


def train_and_evaluate(config: TrainConfig, workdir: str, dataset: Dataset | None = None) -> dict:
    """Train (or resume) in ``workdir``, evaluate, write the outputs, return the summary.

    ``config`` may leave fields unset (None): they are resolved first (recipe, defaults).
    ``dataset``: ``config.dataset`` when the caller has it open already (see
    :func:`~fcn_jax.setup.build`). A workdir another live run holds is a one-line
    :class:`~fcn_jax.workdir_lock.WorkdirBusy` (a ``ValueError``)."""
    start_time = time.perf_counter()
    # One run per workdir, held by process 0 for the run's lifetime (fcn_jax.workdir_lock).
    with WorkdirLock(workdir, holder=jax.process_index() == 0) as lock:
        lock.acquire()  # an existing workdir: a run already in it stops this one before building
        setup = build(config, dataset)
        prepare_workdir(workdir)
        lock.acquire()  # a workdir made just now
        evaluator = make_evaluator(setup)
        trained = train(setup, workdir, lambda state: evaluator.at_sizes(state, setup.eval_sizes))
        return evaluate_run(setup, trained, evaluator, workdir, start_time)


def make_evaluator(setup: Setup) -> Evaluator:
    """The evaluator of a run: its test split (the first ``--eval_examples``), test mode,
    batch size and BatchNorm recalibration."""
    config, test = setup.config, setup.dataset.test
    return Evaluator(
        setup.graphdef,
        setup.eval_graphdef,
        setup.state,
        train=setup.dataset.train,
        test=Subset(test, config.eval_examples) if config.eval_examples else test,
        mode=config.eval_mode,
        batch_size=config.eval_batch_size,
        min_size=setup.model.min_size,
        mesh=setup.mesh,
        recalibrate=bool(config.recalibrate_bn),
        steps_kw=setup.steps_kw,
    )


def evaluate_run(
    setup: Setup, trained: Trained, evaluator: Evaluator, workdir: str, start_time: float
) -> dict:
    """Evaluate a trained run: the test split at its own sizes, every test size, then
    (``--tta_sizes``) the logits averaged over sizes; write the eval records, summary.json
    and (2-D) eval_heatmap.png; return the summary. A run too short or too near chance for its
    numbers to mean much (:mod:`fcn_jax.caveats`) says so in one logged line and the summary's
    ``warning``."""
    state = trained.state
    native = evaluator.at_own_sizes(state)
    grid = evaluator.at_sizes(state, setup.eval_sizes)
    tta = evaluator.averaged(state, setup.tta_sizes) if setup.tta_sizes else {}
    for key, result in grid.items():
        trained.writer.write(setup.total_steps, "eval", {"size": key, **result})
    trained.writer.write(setup.total_steps, "test", native)
    if tta:
        trained.writer.write(setup.total_steps, "tta", tta)
    trained.writer.close()
    summary = run_summary(setup, trained, native, grid, evaluator.compiles)
    if tta:
        summary.update(tta_sizes=tta["sizes"], tta_accuracy=tta["accuracy"], tta_loss=tta["loss"])
    summary["wall_time_s"] = time.perf_counter() - start_time
    summary["warning"] = run_warning(
        setup.total_steps, summary["final_loss"], setup.dataset.num_classes
    )
    if jax.process_index() == 0:
        if summary["warning"]:
            logging.warning("%s: %s", workdir, summary["warning"])
        write_json(os.path.join(workdir, "summary.json"), summary)
        if setup.dataset.spatial_dims == 2 and len(grid) > 1:
            from fcn_jax.plots import heatmap

            title = f"{setup.config.model} trained on {setup.train_size}"
            heatmap(summary["eval_accuracy"], os.path.join(workdir, "eval_heatmap.png"), title)
    return summary


def run_summary(setup: Setup, trained: Trained, native: dict, grid: dict, eval_compiles: int):
    """The summary.json of a run: accuracies, compiles, throughput and what was trained."""
    train_step, loader, seen = setup.train_step, setup.loader, trained.seen
    seconds, examples = trained.train_seconds, trained.examples
    summary = {
        "test_accuracy": native["accuracy"],
        "test_loss": native["loss"],
        "eval_accuracy": {k: r["accuracy"] for k, r in grid.items()},
        "eval_loss": {k: r["loss"] for k, r in grid.items()},
        "eval_mode": setup.config.eval_mode,
        "train_compiles": train_step.compiles,
        "train_compile_seconds": train_step.compile_seconds,
        "train_compile_shapes": [list(s) for s in train_step.shapes],
        "eval_compiles": eval_compiles,
        "buckets": [list(b) for b in setup.buckets],
        "train_size": setup.train_size,
        "padding_efficiency": loader.padding_efficiency,
        "train_examples_per_sec": examples / seconds if examples and seconds > 0 else None,
        "loader_examples_per_sec": loader.examples_per_second,
        "checkpoint_seconds": trained.checkpoint_seconds,
        "input_pipeline": loader.pipeline,
        "steps": setup.total_steps,
        "resumed_from_step": trained.resumed_from,
        "final_loss": trained.final_loss,
        "train_examples": seen["examples"],
        "train_pixels": seen["pixels"],
        "train_padded_pixels": seen["padded_pixels"],
        "num_params": int(sum(p.size for p in jax.tree.leaves(trained.state["params"]))),
        "devices": setup.mesh.size,
        "device_kind": jax.devices()[0].device_kind,
        "dataset": setup.dataset.name,
        "model": setup.config.model,
    }
    if "pointing_game" in native:
        summary["pointing_game"] = native["pointing_game"]
        summary["eval_pointing_game"] = {k: r["pointing_game"] for k, r in grid.items()}
    return summary
