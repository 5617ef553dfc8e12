"""Data parallelism (fcn_jax.sharding) on this process's devices: the mesh, the batch split
over it, the state replicated, the planned copies the transfer guard lets through, and the
batch size check."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec

from fcn_jax import sharding


def test_one_mesh_over_every_device_with_the_batch_split_and_the_state_replicated():
    mesh = sharding.make_mesh()
    assert mesh.axis_names == (sharding.DATA_AXIS,) and mesh.size == jax.device_count()
    assert list(mesh.devices.flat) == jax.devices()
    assert sharding.replicated(mesh).spec == PartitionSpec()
    assert sharding.batch_sharded(mesh).spec == PartitionSpec(sharding.DATA_AXIS)
    assert sharding.replicated(mesh).mesh == mesh == sharding.batch_sharded(mesh).mesh


def test_to_global_places_the_rows_split_over_the_mesh_and_passes_device_arrays_on():
    mesh = sharding.make_mesh()
    n = 2 * jax.device_count()
    on_device = jnp.arange(n)
    batch = {
        "image": np.arange(n * 6, dtype=np.float32).reshape(n, 3, 2, 1)[:, ::-1],  # a view
        "label": np.arange(n) % 3,
        "index": on_device,
    }
    placed = sharding.to_global(batch, mesh)
    assert placed.keys() == batch.keys() and placed["index"] is on_device
    for key in ("image", "label"):
        assert isinstance(placed[key], jax.Array)
        assert placed[key].sharding == sharding.batch_sharded(mesh)
        np.testing.assert_array_equal(placed[key], batch[key])
    assert sharding.to_global(batch, mesh, keys=("label",)).keys() == {"label"}


def test_replicate_copies_a_host_array_to_every_device():
    mesh = sharding.make_mesh()
    x = np.arange(12, dtype=np.int32).reshape(3, 4)
    out = sharding.replicate(x, mesh)
    assert out.sharding == sharding.replicated(mesh) and out.is_fully_replicated
    for shard in out.addressable_shards:
        np.testing.assert_array_equal(shard.data, x)


def test_planned_copies_pass_a_guard_that_stops_the_others():
    mesh = sharding.make_mesh()
    x = np.ones((jax.device_count(), 2), np.float32)
    with jax.transfer_guard("disallow"):
        sharding.replicate(x, mesh)
        sharding.to_global({"x": x}, mesh)
        with pytest.raises(Exception, match="[Dd]isallowed host-to-device transfer"):
            jnp.add(x, 1)  # an implicit copy, as a stray host value in the loop makes


@pytest.mark.parametrize(
    "batch_size, devices, nearest",
    [(6, 4, "use 4 or 8"), (3, 4, "use 4"), (10, 3, "use 9 or 12")],
)
def test_a_batch_that_does_not_split_evenly_names_the_nearest_sizes(batch_size, devices, nearest):
    with pytest.raises(ValueError) as e:
        sharding.check_batch_size(batch_size, devices)
    assert (
        str(e.value) == f"--batch_size={batch_size}: not divisible by {devices} devices; {nearest}"
    )


def test_a_batch_that_splits_evenly_passes():
    for batch_size, devices in [(8, 4), (8, 1), (5, 5)]:
        sharding.check_batch_size(batch_size, devices)


def test_batch_size_must_split_over_the_devices():
    from fcn_jax.sharding import check_batch_size

    check_batch_size(64, 8)
    with pytest.raises(
        ValueError, match=r"^--batch_size=30: not divisible by 4 devices; use 28 or 32$"
    ):
        check_batch_size(30, 4)
    with pytest.raises(ValueError, match=r"use 8$"):
        check_batch_size(3, 8)
