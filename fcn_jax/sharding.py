"""Data parallelism: one mesh over every device, the batch split over it, the state replicated."""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"


def make_mesh() -> Mesh:
    """A 1-D mesh over all devices of all processes."""
    return Mesh(np.asarray(jax.devices()), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def batch_sharded(mesh: Mesh) -> NamedSharding:
    """Leading (batch) axis split over the devices."""
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def to_global(batch: dict[str, np.ndarray], mesh: Mesh, keys=None) -> dict[str, jax.Array]:
    """This process's rows of a batch (its ``keys`` that it has; default: all) → global arrays
    split over every device.

    Each host feeds its own shard (rows ``process_index::process_count`` of the global batch);
    the global batch size is the local one times the process count. Values that already are
    ``jax.Array`` (batches built on the devices) pass through.
    """
    sharding = batch_sharded(mesh)
    with planned_copies():
        return {
            k: v
            if isinstance(v, jax.Array)
            else jax.make_array_from_process_local_data(sharding, np.ascontiguousarray(v))
            for k, v in batch.items()
            if keys is None or k in keys
        }


def replicate(x: np.ndarray, mesh: Mesh) -> jax.Array:
    """A host array (the same in every process) copied to every device of ``mesh``."""
    with planned_copies():
        return jax.make_array_from_callback(x.shape, replicated(mesh), lambda index: x[index])


def planned_copies():
    """Host-to-device copies made on purpose (the loaders' uploads): allowed under a
    ``jax.transfer_guard`` that disallows the others, which the training loop must not make."""
    return jax.transfer_guard_host_to_device("allow")


def check_batch_size(batch_size: int, devices: int) -> None:
    """A global batch is split evenly over the devices: else a one-line error naming the
    nearest sizes that are."""
    if batch_size % devices:
        below, above = batch_size // devices * devices, (batch_size // devices + 1) * devices
        nearest = " or ".join(str(v) for v in (below, above) if v > 0)
        raise ValueError(
            f"--batch_size={batch_size}: not divisible by {devices} devices; use {nearest}"
        )
