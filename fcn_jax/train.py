"""Training: ``build(config) -> Setup``, the loop ``train(setup, workdir) -> Trained``, and
``train_and_evaluate(config, workdir) -> summary`` (build, train, then
:func:`fcn_jax.evaluate.evaluate_run`).

Batches come in a declared, finite set of shapes (buckets); the train and eval steps are
compiled once per shape. The loop checkpoints model, optimizer, step and loader position,
resumes from ``workdir`` and stops on a non-finite loss. Outputs in ``workdir``: config.json,
metrics.jsonl, tensorboard/, checkpoints/, then (evaluation) summary.json and (2-D)
eval_heatmap.png.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import tempfile
import time

import jax
import numpy as np
import optax
from absl import logging
from flax import nnx

from fcn_jax import sharding
from fcn_jax.checkpoint import Checkpointer, CheckpointError
from fcn_jax.config import TrainConfig, fields_where, parse_eval_sizes, parse_tta_sizes
from fcn_jax.data import (
    Dataset,
    SizePolicy,
    TrainLoader,
    load_dataset,
    parse_size_policy,
    resolve_buckets,
)
from fcn_jax.data.augment import parse_augmentation
from fcn_jax.data.device_loader import DeviceLoader, device_data_problem
from fcn_jax.evaluate import evaluate_run
from fcn_jax.models import ModelSpec, build_model
from fcn_jax.models.strided_conv import set_conv_grad
from fcn_jax.optim import make_optimizer, make_schedule
from fcn_jax.outputs import MetricsWriter, read_json, write_json
from fcn_jax.sizes import format_size
from fcn_jax.steps import (
    TRAIN_KEYS,
    CompiledStep,
    init_state,
    make_eval_step,
    make_train_step,
)


class NonFiniteLossError(RuntimeError):
    """Training produced a non-finite loss; the last good checkpoint is kept."""


def default_train_size(dataset: Dataset) -> str:
    """``native`` for data of varying size, else ``fixed`` at the data's one size."""
    sizes = dataset.train.sizes()
    if (sizes == sizes[0]).all():
        return f"fixed:{format_size(sizes[0])}"
    return "native"


def open_dataset(config: TrainConfig) -> Dataset:
    """The dataset of a resolved ``config``, read with its options (corrupt files, pixels)."""
    return load_dataset(
        config.dataset,
        config.data_dir,
        skip_corrupt=config.skip_corrupt,
        pixel_range=config.pixel_bounds(),
    )


def model_spec(config: TrainConfig, dataset: Dataset) -> ModelSpec:
    """The spec of the model a resolved ``config`` builds for ``dataset`` (config.json's
    ``model_spec``)."""
    return ModelSpec(
        config.model,
        dataset.num_classes,
        dataset.in_channels,
        dataset.spatial_dims,
        config.width,
        config.depth,
        config.norm,
        config.pool,
        str(config.precision),
    )


def matmul_precision(config: TrainConfig, policy: SizePolicy) -> str | None:
    """The process-wide precision of float32 convolutions and matmuls (None: the backend's
    default, TF32 on recent GPUs; CPUs always compute in full float32). ``auto`` keeps
    float32 runs whose training batches are padded (native, mixed_example) exact: padded =
    alone needs full precision; unpadded runs take the faster default."""
    value = config.matmul_precision
    if value == "auto":
        value = "highest" if config.precision == "float32" and policy.pads else "default"
    return None if value == "default" else value


def _setup_jax(config: TrainConfig) -> None:
    if config.distributed:
        jax.distributed.initialize()
    set_conv_grad(config.conv_grad)
    if config.compilation_cache_dir:
        jax.config.update("jax_compilation_cache_dir", config.compilation_cache_dir)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def make_train_loader(config: TrainConfig, dataset: Dataset, policy, buckets, mesh, min_size):
    """The device loader when ``--input_pipeline`` asks for it or (auto) the train split fits
    on the devices, else the host (Grain) loader, whose batches a Grain thread copies to the
    devices ahead of the step; both follow the same plan."""
    problem = device_data_problem(dataset.train, config.device_data_fraction)
    if config.input_pipeline == "device" and problem:
        raise ValueError(f"--input_pipeline=device: the train split of {dataset.name}: {problem}")
    kw = dict(
        min_size=min_size,
        batch_multiple=mesh.size,
        augmentation=parse_augmentation(config.zoom, config.translate),
    )
    args = (dataset.train, policy, buckets, config.batch_size, config.seed)
    if config.input_pipeline != "grain" and not problem:
        logging.info("input pipeline: device (the train split is held on the devices)")
        return DeviceLoader(*args, mesh=mesh, **kw)
    logging.info("input pipeline: grain (host)")
    return TrainLoader(
        *args,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
        worker_count=config.worker_count,
        mesh=mesh,
        **kw,
    )


def prepare_workdir(workdir: str) -> None:
    """Create the run directory (made only once the config and data are valid, so a run that
    fails validation leaves none behind) and check it is writable: any OS error is one line
    naming ``--workdir``."""
    try:
        os.makedirs(workdir, exist_ok=True)
        with tempfile.TemporaryFile(dir=workdir):
            pass
    except OSError as e:
        raise ValueError(f"--workdir={workdir}: {e.strerror or e}") from e


def _check_resumable(saved: dict, config: TrainConfig, workdir: str) -> None:
    current, resumable = config.to_dict(), fields_where("resumable")
    for key, value in saved.items():
        if key not in resumable and current.get(key) != value:
            raise CheckpointError(
                f"{workdir} holds a run with --{key}={value!r} but this run has "
                f"--{key}={current.get(key)!r}: use a new --workdir or the same flags"
            )


class _Progress:
    """A tqdm bar on a terminal, plain log lines otherwise."""

    def __init__(self, total: int, start: int):
        self._bar = None
        if sys.stderr.isatty():
            from tqdm import tqdm

            self._bar = tqdm(total=total, initial=start, unit="step", dynamic_ncols=True)

    def update(self, step: int, n: int, values: dict) -> None:
        text = " ".join(f"{k}={v:.4g}" for k, v in values.items())
        if self._bar is not None:
            self._bar.update(n)
            self._bar.set_postfix_str(text)
        else:
            logging.info("step %d: %s", step, text)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


@dataclasses.dataclass
class Setup:
    """Everything a run builds from its config before the first step (see :func:`build`)."""

    config: TrainConfig  # resolved
    dataset: Dataset
    train_size: str
    policy: SizePolicy
    eval_sizes: list[tuple[int, ...]]
    tta_sizes: list[tuple[int, ...]]  # [] without --tta_sizes
    model: nnx.Module
    buckets: list[tuple[int, ...]]
    mesh: jax.sharding.Mesh
    loader: TrainLoader | DeviceLoader
    total_steps: int
    tx: optax.GradientTransformation
    schedule: optax.Schedule
    graphdef: nnx.GraphDef
    eval_graphdef: nnx.GraphDef
    state: dict  # on the host; train_and_evaluate restores or places it
    train_step: CompiledStep  # takes and returns jax.tree.leaves(state)
    eval_step: CompiledStep
    steps_kw: dict  # the state and batch shardings of the compiled steps


def build(config: TrainConfig, dataset: Dataset | None = None) -> Setup:
    """Resolve ``config`` (unset fields: recipe, defaults), set up JAX, open the dataset
    (unless the caller opened ``config.dataset`` already and passes it) and make the model,
    buckets, mesh, train loader, optimizer, state and compiled steps."""
    config = config.resolved()
    _setup_jax(config)
    dataset = dataset or open_dataset(config)
    d = dataset.spatial_dims
    eval_sizes = parse_eval_sizes(config.eval_sizes, d)
    tta_sizes = parse_tta_sizes(config.tta_sizes, d)
    train_size = config.train_size or default_train_size(dataset)
    policy = parse_size_policy(train_size, d)
    if jax.default_backend() != "cpu":  # CPUs compute float32 in full at every setting
        jax.config.update("jax_default_matmul_precision", matmul_precision(config, policy))
    model = build_model(model_spec(config, dataset), config.seed)
    min_size = model.min_size
    for flag, sizes in (("eval_sizes", eval_sizes), ("tta_sizes", tta_sizes)):
        too_small = [s for s in sizes if any(a < m for a, m in zip(s, min_size))]
        if too_small:
            raise ValueError(f"--{flag}: {too_small} below the model's minimum size {min_size}")
    example_sizes = dataset.train.sizes() if policy.kind == "native" else np.zeros((0, d))
    buckets = resolve_buckets(config.buckets, policy, example_sizes, min_size=min_size)
    mesh = sharding.make_mesh()
    sharding.check_batch_size(config.batch_size, mesh.size)
    loader = make_train_loader(config, dataset, policy, buckets, mesh, min_size)
    total_steps = config.steps or loader.steps_for(config.epochs)
    tx = make_optimizer(config, total_steps)
    model.train()
    graphdef, state = init_state(model, tx)
    model.eval()
    eval_graphdef = nnx.split(model, nnx.Param, ...)[0]
    steps_kw = dict(
        state_sharding=sharding.replicated(mesh), batch_sharding=sharding.batch_sharded(mesh)
    )
    train_step = make_train_step(
        graphdef,
        tx,
        label_smoothing=config.label_smoothing,
        use_sizes=policy.pads,
        treedef=jax.tree.structure(state),
        **steps_kw,
    )
    eval_step = make_eval_step(eval_graphdef, with_maps=dataset.test.has_bbox, **steps_kw)
    return Setup(
        config=config,
        dataset=dataset,
        train_size=train_size,
        policy=policy,
        eval_sizes=eval_sizes,
        tta_sizes=tta_sizes,
        model=model,
        buckets=buckets,
        mesh=mesh,
        loader=loader,
        total_steps=total_steps,
        tx=tx,
        schedule=make_schedule(config, total_steps),
        graphdef=graphdef,
        eval_graphdef=eval_graphdef,
        state=state,
        train_step=train_step,
        eval_step=eval_step,
        steps_kw=steps_kw,
    )


def train_and_evaluate(config: TrainConfig, workdir: str, dataset: Dataset | None = None) -> dict:
    """Train (or resume) in ``workdir``, evaluate, write the outputs, return the summary.

    ``config`` may leave fields unset (None): they are resolved first (recipe, defaults).
    ``dataset``: ``config.dataset`` when the caller has it open already (see :func:`build`)."""
    start_time = time.perf_counter()
    setup = build(config, dataset)
    prepare_workdir(workdir)
    trained = train(setup, workdir)
    return evaluate_run(setup, trained, workdir, start_time)


@dataclasses.dataclass
class Trained:
    """What the training loop hands to evaluation."""

    state: dict  # on the devices
    writer: MetricsWriter  # still open: evaluation adds its records
    resumed_from: int | None
    final_loss: float | None
    seen: dict[str, int]  # examples, pixels, padded_pixels over the whole run
    examples: int  # trained by this loop (after a resume: since it)
    train_seconds: float  # the loop, without compiles
    checkpoint_seconds: float


def train(setup: Setup, workdir: str) -> Trained:
    """Run (or resume) the training loop of ``setup`` in ``workdir``: config.json, train
    metrics, checkpoints (model, optimizer, step, loader position)."""
    config, loader, mesh = setup.config, setup.loader, setup.mesh
    total_steps, train_step = setup.total_steps, setup.train_step
    checkpointer = Checkpointer(workdir, writer=True)
    state, start_step, seen = _restore_or_start(setup, checkpointer, workdir)
    resumed_from = start_step or None
    _write_config(setup, workdir)
    state = jax.device_put(state, sharding.replicated(mesh))
    treedef, leaves = jax.tree.structure(state), jax.tree.leaves(state)
    if config.precompile:
        for bucket in setup.buckets:
            batch = setup.policy.batch_size(config.batch_size, bucket, mesh.size)
            train_step.compile(leaves, _batch_spec(batch, bucket, setup.dataset.in_channels))

    writer = MetricsWriter(workdir, resume_step=start_step)
    meta = {"seed": config.seed, "model_spec": setup.model.spec.to_dict()}

    def seen_so_far() -> dict:
        """Examples and pixels over the whole run: before a resume plus this loader's."""
        return {k: seen[k] + loader.tally[k] for k in seen}

    def check_finite(step: int) -> None:
        bad = int(jax.tree.unflatten(treedef, leaves)["bad_step"])
        if bad:
            last = checkpointer.latest_step()
            raise NonFiniteLossError(
                f"non-finite loss at step {bad}; stopped at step {step}; the last good "
                f"checkpoint (step {last}) is kept in {checkpointer.directory}"
            )

    progress = _Progress(total_steps, start_step)
    loop_start, window, last_logged = time.perf_counter(), [], start_step
    compiled_before = train_step.compile_seconds + loader.compile_seconds  # --precompile's
    checkpoint_seconds = 0.0
    last_train = writer.last("train")  # when resuming a finished run there is no new loss
    final_loss = last_train["loss"] if last_train else None
    for step in range(start_step + 1, total_steps + 1):
        batch = next(loader)
        leaves, metrics = train_step(leaves, sharding.to_global(batch, mesh, TRAIN_KEYS))
        window.append(metrics)  # summed at log time: no per-step dispatch
        if step % config.log_every == 0 or step == total_steps:
            check_finite(step)
            window = jax.device_get(window)
            values = {k: float(sum(m[k] for m in window)) / len(window) for k in window[0]}
            values["learning_rate"] = float(setup.schedule(step))
            writer.write(step, "train", values)
            progress.update(step, step - last_logged, values)
            final_loss, window, last_logged = values["loss"], [], step
        if step % config.checkpoint_every == 0 or step == total_steps:
            check_finite(step)
            saving = time.perf_counter()
            checkpointer.save(
                step,
                jax.tree.unflatten(treedef, leaves),
                {**meta, "step": step, "loader": loader.get_state(), "seen": seen_so_far()},
            )
            checkpoint_seconds += time.perf_counter() - saving
    progress.close()
    state = jax.block_until_ready(jax.tree.unflatten(treedef, leaves))
    compile_seconds = train_step.compile_seconds + loader.compile_seconds - compiled_before
    return Trained(
        state=state,
        writer=writer,
        resumed_from=resumed_from,
        final_loss=final_loss,
        seen=seen_so_far(),
        examples=loader.tally["examples"],
        train_seconds=time.perf_counter() - loop_start - compile_seconds,
        checkpoint_seconds=checkpoint_seconds,
    )


def _restore_or_start(setup: Setup, checkpointer: Checkpointer, workdir: str):
    """(state, step, seen counts): the latest checkpoint's, the loader moved to its position;
    else the fresh state at step 0. A checkpoint made with other flags is an error."""
    seen = {"examples": 0, "pixels": 0, "padded_pixels": 0}
    if checkpointer.latest_step() is None:
        return setup.state, 0, seen
    config_path = os.path.join(workdir, "config.json")
    if os.path.exists(config_path):
        _check_resumable(read_json(config_path)["config"], setup.config, workdir)
    abstract = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), setup.state)
    state, meta = checkpointer.restore(abstract)
    setup.loader.set_state(meta["loader"])
    logging.info("resumed from step %d of %s", meta["step"], checkpointer.directory)
    return state, int(meta["step"]), meta.get("seen", seen)


def _write_config(setup: Setup, workdir: str) -> None:
    """config.json: the resolved config and what it resolved to (model, sizes, dataset)."""
    write_json(
        os.path.join(workdir, "config.json"),
        {
            "config": setup.config.to_dict(),
            "model_spec": setup.model.spec.to_dict(),
            "train_size": setup.train_size,
            "buckets": [list(b) for b in setup.buckets],
            "dataset": setup.dataset.facts(),
            "total_steps": setup.total_steps,
        },
    )


def _batch_spec(batch: int, size, channels: int) -> dict:
    """Abstract global train batch of ``batch`` examples of spatial ``size``."""
    return {
        "image": jax.ShapeDtypeStruct((batch, *size, channels), np.float32),
        "label": jax.ShapeDtypeStruct((batch,), np.int32),
        "sizes": jax.ShapeDtypeStruct((batch, len(size)), np.int32),
    }
