"""The one check of a model's input (and per-example sizes), shared by the model and its
exported file: numpy only, on shapes and concrete values."""

from __future__ import annotations

import numpy as np

from fcn_jax.sizes import check_min_size


def axes(spatial_dims: int) -> list[str]:
    """Names of the spatial axes in messages: ``L``; ``H, W``; else ``S0, S1, ...``."""
    return {1: ["L"], 2: ["H", "W"]}.get(spatial_dims, [f"S{i}" for i in range(spatial_dims)])


def check_input_shape(shape, spatial_dims: int, in_channels: int, min_size) -> None:
    """``ValueError`` (one line) unless ``shape`` is ``(B >= 1, *S >= min_size, in_channels)``."""
    shape, d = tuple(shape), spatial_dims
    layout = f"(B, {', '.join(axes(d))}, C)"
    if len(shape) != d + 2:
        raise ValueError(f"input must have rank {d + 2} {layout}, got shape {shape}")
    if shape[-1] != in_channels:
        raise ValueError(f"input must have {in_channels} channels, got shape {shape}")
    if shape[0] < 1:
        raise ValueError(f"input batch is empty: shape {shape}")
    check_min_size([shape[1:-1]], min_size, "input spatial size")


def check_sizes_shape(sizes_shape, shape) -> None:
    """``ValueError`` unless ``sizes_shape`` is (B, D) for an input of ``shape`` (B, *S, C)."""
    want = (shape[0], len(shape) - 2)
    if tuple(sizes_shape) != want:
        raise ValueError(f"sizes must have shape (B, D) = {want}, got {tuple(sizes_shape)}")


def check_sizes(sizes, shape, min_size) -> np.ndarray:
    """``sizes`` as (B, D) int32 for an input of ``shape`` (B, *S, C); ``ValueError`` (one
    line, naming the first bad row) unless every row is within ``[min_size, S]``."""
    values = np.asarray(sizes)
    spatial = tuple(shape[1:-1])
    check_sizes_shape(values.shape, shape)
    if values.dtype.kind not in "iu":
        raise ValueError(f"sizes must be integers, got dtype {values.dtype}")
    for bad, what in (
        (values < np.asarray(min_size), f"is below the model's minimum size {tuple(min_size)}"),
        (values > np.asarray(spatial), f"exceeds the padded input's extent {spatial}"),
    ):
        rows = np.flatnonzero(bad.any(axis=1))
        if rows.size:
            i = int(rows[0])
            raise ValueError(f"sizes row {i} {values[i].tolist()} {what}")
    return values.astype(np.int32)
