"""UCR/UEA datasets an installed aeon (or sktime) ships, for the time-series tests."""

import os

import pytest

from fcn_jax.data import series as series_lib


def shipped(name: str) -> str:
    """The folder an installed aeon/sktime ships NAME in, else skip (fail where required)."""
    directory = series_lib.shipped_dir(name)
    if directory is None:
        if os.environ.get("FCN_SERIES") == "required":
            pytest.fail(f"{name}: no installed aeon or sktime ships it (FCN_SERIES=required)")
        pytest.skip(f"{name}: not shipped here (pip install --no-deps aeon==1.6.0)")
    return directory
