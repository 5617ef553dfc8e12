"""Shared fixtures: one TFDS data dir per session, tiny training configs."""

import os

import pytest

os.environ.setdefault("JAX_PLATFORMS", "cpu")


@pytest.fixture(scope="session")
def tfds_dir(tmp_path_factory) -> str:
    """A TFDS data dir shared by the session (tiny builds take about a second each)."""
    return str(tmp_path_factory.mktemp("tfds"))
