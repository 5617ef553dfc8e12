"""Class activation maps: CAM overlays and the pointing game (prediction on image files is in
:mod:`fcn_jax.predict`).

The class map ``(h', w', K)`` of an FCN is the input to its global pooling; cell ``p`` of an
axis with class-map extent ``n'`` and input extent ``n`` is centered on input coordinate
``(p + 0.5) * n / n'``. Both the overlays (bilinear upsampling with half-pixel centers) and the
pointing game use that correspondence.

Pure numpy + PIL + matplotlib colormaps (no pyplot); training's evaluation can call
:func:`pointing_game` on every eval batch.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
from PIL import Image

from fcn_jax.outputs import write_atomic

# --- localization metric -------------------------------------------------------------------


def pointing_game(cmap, out_sizes, labels, bboxes, in_sizes, tolerance: float = 0.0) -> np.ndarray:
    """Whether each example's class-map peak for its true class falls inside its box.

    For example ``i``, take the map of class ``labels[i]`` over its valid extent
    ``out_sizes[i]`` only (cells beyond it, e.g. batch padding, are ignored whatever they hold),
    find the argmax cell ``p`` (first in row-major order on ties), map it to input pixel
    coordinates ``(p + 0.5) * in_sizes[i] / out_sizes[i]`` per axis, and count a hit when that
    point lies in the half-open box ``[y0, y1) x [x0, x1)``, or, with ``tolerance > 0``, within
    ``tolerance`` pixels (Euclidean distance) of the box (the pointing game of Zhang et al.
    2016 uses 15 pixels at ImageNet resolution). Works for any number of spatial axes D.

    Args:
      cmap: (B, *S', K) class maps (``model.features``'s first output).
      out_sizes: (B, D) valid class-map extents (``model.features``'s second output).
      labels: (B,) int true classes.
      bboxes: (B, 2D) int boxes ``[y0, x0, y1, x1)`` in input pixels (2-D; 1-D: ``[l0, l1)``).
      in_sizes: (B, D) input extents the boxes refer to (the batch's ``sizes``).
      tolerance: distance in input pixels still counted as a hit (default 0: strictly inside).
    Returns:
      (B,) bool hits.
    """
    cmap = np.asarray(cmap, np.float32)
    b, spatial = cmap.shape[0], cmap.shape[1:-1]
    d = len(spatial)
    out_sizes = np.asarray(out_sizes, np.int64).reshape(b, d)
    in_sizes = np.asarray(in_sizes, np.float64).reshape(b, d)
    boxes = np.asarray(bboxes, np.float64).reshape(b, 2 * d)
    labels = np.asarray(labels, np.int64).reshape(b)
    if (out_sizes < 1).any():
        raise ValueError(f"out_sizes must be >= 1, got {out_sizes.tolist()}")

    maps = cmap[np.arange(b), ..., labels]  # (B, *S')
    valid = np.ones((b, *spatial), bool)
    for axis, length in enumerate(spatial):
        inside = np.arange(length)[None, :] < out_sizes[:, axis : axis + 1]  # (B, length)
        shape = [b] + [1] * d
        shape[1 + axis] = length
        valid &= inside.reshape(shape)
    flat = np.where(valid, maps, -np.inf).reshape(b, -1)
    peak = np.stack(np.unravel_index(flat.argmax(axis=1), spatial), axis=1)  # (B, D)
    point = (peak + 0.5) * in_sizes / out_sizes  # (B, D) input coordinates

    lo, hi = boxes[:, :d], boxes[:, d:]
    inside = ((point >= lo) & (point < hi)).all(axis=1)
    gap = np.maximum(np.maximum(lo - point, point - hi), 0.0)
    near = np.sqrt((gap**2).sum(axis=1)) <= tolerance if tolerance > 0 else False
    return inside | near


# --- images and overlays -------------------------------------------------------------------


def resize_map(values: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """Bilinear resize of a 2-D float map to ``size`` (H, W), half-pixel centers (PIL)."""
    im = Image.fromarray(np.ascontiguousarray(values, np.float32), mode="F")
    return np.asarray(im.resize((int(size[1]), int(size[0])), Image.Resampling.BILINEAR))


def cam_overlay(
    image: np.ndarray, cam: np.ndarray, alpha: float = 0.5, colormap: str = "jet"
) -> np.ndarray:
    """Blend a class map onto its image.

    Args:
      image: (H, W, C) float in [0, 1], C 1 or 3.
      cam: (h', w') class map of one class over the image's valid extent.
      alpha: weight of the heat map (0: image only, 1: heat map only).
      colormap: a matplotlib colormap name.
    Returns:
      (H, W, 3) uint8 RGB: the map, min-max normalized, bilinearly upsampled to (H, W),
      colormapped and alpha-blended over the image.
    """
    from matplotlib import colormaps

    image = np.asarray(image, np.float32)
    rgb = np.broadcast_to(image[..., :1], (*image.shape[:2], 3)) if image.shape[-1] == 1 else image
    cam = np.asarray(cam, np.float32)
    span = float(cam.max() - cam.min())
    cam = (cam - cam.min()) / span if span > 0 else np.zeros_like(cam)
    heat = colormaps[colormap](np.clip(resize_map(cam, image.shape[:2]), 0, 1))[..., :3]
    out = (1 - alpha) * np.clip(rgb, 0, 1) + alpha * heat
    return np.round(out * 255).astype(np.uint8)


def save_png(array: np.ndarray, path: str) -> None:
    """Write a uint8 (H, W, 3) array as PNG, atomically (a failure leaves no partial file)."""
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    write_atomic(path, buffer.getvalue())
