"""Shared fixtures: one TFDS data dir per session, tiny training configs.

The helper modules beside this file (``commands``, ``tiny``, ``training``, ``loaders``,
``batches``, ``series_data``) import by their names from ``tests/`` and from
``tests/integration/`` (the end-to-end runs): pytest's default import mode puts this
conftest's folder on ``sys.path``."""

import os
import tempfile

import numpy as np
import pytest

os.environ.setdefault("JAX_PLATFORMS", "cpu")
# The exactness tests promise padded = alone in float32: full-precision convolutions and
# matmuls wherever they run (the default on CPU; GPUs otherwise use TF32).
os.environ.setdefault("JAX_DEFAULT_MATMUL_PRECISION", "highest")
# One persistent compilation cache for the session: set by the first process that reads this
# file (pytest-xdist's controller), inherited by its workers and the processes they start; many
# tests compile the same tiny programs in new processes. Runs given their own
# --compilation_cache_dir (a comparison's, a sweep's) use theirs.
os.environ.setdefault(
    "JAX_COMPILATION_CACHE_DIR", os.path.join(tempfile.gettempdir(), f"fcn-jax-tests-{os.getpid()}")
)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
# The tests compile far more than they run: without LLVM's optimizations XLA:CPU compiles in
# about 60% of the time (the same HLO passes; the steps run no slower at these sizes).
# Inherited like the cache, also where a test sets a device count (commands.cpu_devices).
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0"
    ).strip()


@pytest.fixture(scope="session")
def tfds_dir(tmp_path_factory) -> str:
    """A TFDS data dir shared by the session (tiny builds take about a second each)."""
    return str(tmp_path_factory.mktemp("tfds"))


@pytest.fixture(scope="session")
def small(tmp_path_factory):
    """60 random 2-D uint8 examples of sizes in [4, 20] (npz), for fast loader tests."""
    from fcn_jax.data import load_dataset  # after JAX_PLATFORMS is set
    from fcn_jax.data.arrays import save_npz

    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, rng.integers(4, 21, 2), dtype=np.uint8) for _ in range(60)]
    path = str(tmp_path_factory.mktemp("npz") / "small.npz")
    save_npz(path, dict(train_images=images, train_labels=np.arange(60) % 5,
                        test_images=images[:7], test_labels=np.arange(7) % 5))  # fmt: skip
    return load_dataset(f"npz:{path}")


@pytest.fixture(scope="session")
def digits(tfds_dir):
    """procedural_digits/tiny_variable: same canvas-size distribution as `variable`."""
    from fcn_jax.data import load_dataset

    return load_dataset("procedural_digits/tiny_variable", tfds_dir)
