"""A run's setup: ``build(config) -> Setup`` resolves a config and makes everything a run
needs before its first step (dataset, model, buckets, mesh, train loader, optimizer, state,
compiled train step); the process-wide settings are :func:`fcn_jax.process.setup_process`'s.
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
import optax
from absl import logging
from flax import nnx

from fcn_jax import sharding
from fcn_jax.config import ResolvedConfig, TrainConfig
from fcn_jax.data import Dataset, SizePolicy, TrainLoader, load_dataset, resolve_buckets
from fcn_jax.data.augment import parse_augmentation
from fcn_jax.data.device_loader import DeviceLoader, device_data_problem, device_layout
from fcn_jax.data.plan import BatchPlan
from fcn_jax.models import PRESETS, ModelSpec, abstract_model, build_model
from fcn_jax.optim import make_optimizer, make_schedule
from fcn_jax.process import setup_process
from fcn_jax.sizes import check_min_size
from fcn_jax.steps import CompiledStep, init_state, make_train_step


def default_policy(dataset: Dataset) -> SizePolicy:
    """``native`` for data of varying size, else ``fixed`` at the data's one size."""
    size, d = dataset.train.common_size(), dataset.spatial_dims
    return SizePolicy("native", d) if size is None else SizePolicy("fixed", d, size=size)


def open_dataset(config: TrainConfig) -> Dataset:
    """The dataset of ``config``, read with its options (corrupt files, pixels, splits)."""
    return load_dataset(
        config.dataset,
        config.data_dir,
        skip_corrupt=config.skip_corrupt,
        pixel_range=config.pixel_bounds(),
        normalize=config.normalize,
        allow_pickle=config.allow_pickle,
        train_split=config.train_split,
        test_split=config.test_split,
    )


def check_series_lengths(dataset: Dataset, config: TrainConfig, min_size) -> None:
    """ValueError (one line) when a series of either split is shorter than the model's
    minimum length, naming it and the presets that accept it: series are not stretched to
    fit, and padding one would be masked away to nothing by the model's strided layers."""
    spec = model_spec(config, dataset)
    for split, source in (("train", dataset.train), ("test", dataset.test)):
        lengths = source.sizes()[:, 0]
        if lengths.min() >= min_size[0]:
            continue
        shortest = int(lengths.min())
        accept = [
            name
            for name in sorted(PRESETS)
            if abstract_model(dataclasses.replace(spec, name=name)).min_size[0] <= shortest
        ]
        raise ValueError(
            f"{dataset.name}: {split} series {int(lengths.argmin())} has length {shortest}, "
            f"below --model={config.model}'s minimum length {min_size[0]} (series are not "
            f"stretched to fit); presets that accept it: {', '.join(accept) or 'none'}"
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
    """The precision of a run's float32 convolutions and matmuls, set on its compiled steps
    (None: the backend's default, TF32 on recent GPUs; always on CPUs, which compute float32
    in full at every setting). ``auto`` keeps float32 runs whose training batches are padded
    (native, mixed_example) exact: padded = alone needs full precision; unpadded runs take
    the faster default."""
    if jax.default_backend() == "cpu":
        return None
    value = config.matmul_precision
    if value == "auto":
        value = "highest" if config.precision == "float32" and policy.pads else "default"
    return None if value == "default" else value


def make_train_loader(config: TrainConfig, dataset: Dataset, policy, buckets, mesh, min_size):
    """The device loader when ``--input_pipeline`` asks for it or (auto) the train split fits
    on the devices, else the host (Grain) loader, whose batches a Grain thread copies to the
    devices ahead of the step; both follow the same plan."""
    layout = device_layout(dataset.train, policy, buckets, min_size)
    problem = device_data_problem(dataset.train, config.device_data_fraction, layout)
    if config.input_pipeline == "device" and problem:
        raise ValueError(f"--input_pipeline=device: the train split of {dataset.name}: {problem}")
    plan = BatchPlan(
        dataset.train,
        policy,
        buckets,
        config.batch_size,
        config.seed,
        process_count=jax.process_count(),
        min_size=min_size,
        batch_multiple=mesh.size,
        augmentation=parse_augmentation(config.zoom, config.translate),
    )
    if config.input_pipeline != "grain" and not problem:
        logging.info("input pipeline: device (the train split is held on the devices)")
        return DeviceLoader(plan, mesh=mesh)
    if config.input_pipeline == "grain":
        logging.info("input pipeline: grain (host), as --input_pipeline asks")
    else:
        logging.info(
            "input pipeline: grain (host): the train split of %s: %s", dataset.name, problem
        )
    return TrainLoader(
        plan, process_index=jax.process_index(), worker_count=config.worker_count, mesh=mesh
    )


@dataclasses.dataclass
class Setup:
    """Everything a run builds from its config before the first step (see :func:`build`)."""

    config: ResolvedConfig  # bound to the dataset (ResolvedConfig.for_data)
    dataset: Dataset
    train_size: str  # the policy's canonical spelling
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
    state: dict  # the fresh state, on the host (the loop restores or places it)
    train_step: CompiledStep  # takes and returns jax.tree.leaves(state)
    steps_kw: dict  # the compiled steps' shardings and trace settings (CompiledStep)


def build(config: TrainConfig, dataset: Dataset | None = None) -> Setup:
    """Set up JAX, open the dataset (unless the caller opened ``config.dataset`` already and
    passes it), bind ``config`` to it and make the model, buckets, mesh, train loader,
    optimizer, state and compiled train step. A :class:`ResolvedConfig` is taken as it is; a
    :class:`TrainConfig` is resolved first (unset fields: recipe, defaults)."""
    config = config.resolved()
    setup_process(config)
    dataset = dataset or open_dataset(config)
    d = dataset.spatial_dims
    config = config.for_data(d, len(dataset.train))
    eval_sizes, tta_sizes = list(config.eval_sizes), list(config.tta_sizes or ())
    policy = config.train_size or default_policy(dataset)
    model = build_model(model_spec(config, dataset), config.seed)
    min_size = model.min_size
    if dataset.series:
        check_series_lengths(dataset, config, min_size)
    for flag, sizes in (("eval_sizes", eval_sizes), ("tta_sizes", tta_sizes)):
        check_min_size(sizes, min_size, f"--{flag}:")
    example_sizes = dataset.train.sizes() if policy.kind == "native" else np.zeros((0, d))
    buckets = resolve_buckets(
        config.buckets, policy, example_sizes, min_size=min_size, batch_size=config.batch_size
    )
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
        state_sharding=sharding.replicated(mesh),
        batch_sharding=sharding.batch_sharded(mesh),
        matmul_precision=matmul_precision(config, policy),
        conv_grad=config.conv_grad,
    )
    train_step = make_train_step(
        graphdef,
        tx,
        label_smoothing=config.label_smoothing,
        use_sizes=policy.pads,
        treedef=jax.tree.structure(state),
        **steps_kw,
    )
    return Setup(
        config=config,
        dataset=dataset,
        train_size=policy.spec(),
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
        steps_kw=steps_kw,
    )
