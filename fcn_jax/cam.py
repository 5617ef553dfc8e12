"""Class activation maps: reading images, CAM overlays, prediction on files, pointing game.

The class map ``(h', w', K)`` of an FCN is the input to its global pooling; cell ``p`` of an
axis with class-map extent ``n'`` and input extent ``n`` is centered on input coordinate
``(p + 0.5) * n / n'``. Both the overlays (bilinear upsampling with half-pixel centers) and the
pointing game use that correspondence.

Pure numpy + PIL + matplotlib colormaps (no pyplot); training's evaluation can call
:func:`pointing_game` on every eval batch.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence

import numpy as np
from PIL import Image, UnidentifiedImageError

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


def load_image(path: str, channels: int) -> np.ndarray:
    """Read a PNG/JPEG (any mode) as (H, W, channels) float32 in [0, 1].

    ``channels`` 1 converts to grayscale (``L``), 3 to ``RGB``. ``ValueError`` naming the file
    when it cannot be read.
    """
    modes = {1: "L", 3: "RGB"}
    if channels not in modes:
        raise ValueError(f"image files can feed 1- or 3-channel models, not {channels} channels")
    try:
        with Image.open(path) as im:
            array = np.asarray(im.convert(modes[channels]), np.float32) / 255.0
    except (OSError, UnidentifiedImageError, ValueError) as e:
        reason = "not a readable image" if isinstance(e, UnidentifiedImageError) else str(e)
        raise ValueError(f"cannot read image {path}: {reason}") from None
    return array.reshape(*array.shape[:2], channels)


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
    """Write a uint8 (H, W, 3) array as PNG (atomically: temp file + rename)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    Image.fromarray(array).save(tmp, format="PNG")
    os.replace(tmp, path)


# --- prediction on files -------------------------------------------------------------------


@dataclasses.dataclass
class Prediction:
    """One file's result: ``top`` [(class index, class name, probability)], best first;
    ``size`` the image's (H, W); ``resized_to`` the size it was raised to when below the
    model's minimum; ``overlay`` the CAM file written; ``error`` a one-line message instead."""

    path: str
    size: tuple[int, ...] = ()
    top: list[tuple[int, str, float]] = dataclasses.field(default_factory=list)
    resized_to: tuple[int, ...] | None = None
    overlay: str | None = None
    error: str | None = None

    def format(self) -> str:
        """Printable lines: the file and size, then one ``rank. name  probability`` per class."""
        if self.error:
            return f"error: {self.error}"
        size = "x".join(map(str, self.size))
        note = f", resized to {'x'.join(map(str, self.resized_to))}" if self.resized_to else ""
        lines = [f"{self.path} ({size}{note}):"]
        lines += [f"  {r}. {name:<12s} {p:.4f}" for r, (_, name, p) in enumerate(self.top, 1)]
        if self.overlay:
            lines.append(f"  cam: {self.overlay}")
        return "\n".join(lines)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Softmax over the last axis, in float64."""
    z = np.asarray(logits, np.float64)
    z = np.exp(z - z.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


def _fit_min_size(image: np.ndarray, min_size: Sequence[int]) -> np.ndarray:
    """Upsize (bilinear) only the axes below ``min_size``, as the eval loader does."""
    target = tuple(max(s, m) for s, m in zip(image.shape[:2], min_size))
    if target == image.shape[:2]:
        return image
    return np.stack([resize_map(image[..., c], target) for c in range(image.shape[-1])], -1)


def predict_file(predictor, path: str, top_k: int = 3, overlay: str | None = None) -> Prediction:
    """Classify one image file at its own size (axes below ``min_size`` are upsized first).

    ``predictor`` is an :class:`fcn_jax.export.ExportedModel` (or anything with its
    ``in_channels``, ``spatial_dims``, ``min_size``, ``class_names``, and ``__call__`` returning
    ``{"logits": (1, K), "class_map": (1, h', w', K)}``). With ``overlay`` (a PNG path), writes
    the predicted class's CAM overlay there, at the image's own H×W. Raises ``ValueError`` (one
    line, naming the file) for an unreadable image.
    """
    if predictor.spatial_dims != 2:
        raise ValueError(f"image files need a 2-D model; this one is {predictor.spatial_dims}-D")
    image = load_image(path, predictor.in_channels)
    x = _fit_min_size(image, predictor.min_size)
    out = predictor(x[None])
    probs = softmax(out["logits"][0])
    names = predictor.class_names or [str(k) for k in range(len(probs))]
    order = np.argsort(-probs, kind="stable")[: max(1, top_k)]
    top = [(int(k), str(names[k]), float(probs[k])) for k in order]
    pred = Prediction(path, tuple(image.shape[:2]), top)
    if x.shape != image.shape:
        pred.resized_to = tuple(x.shape[:2])
    if overlay is not None:
        save_png(cam_overlay(image, out["class_map"][0, ..., order[0]]), overlay)
        pred.overlay = overlay
    return pred


def overlay_paths(paths: Sequence[str], cam_dir: str) -> list[str]:
    """``cam_dir/<stem>.cam.png`` per input, with ``-2``, ``-3``... when stems repeat."""
    out, used = [], set()
    for path in paths:
        stem = os.path.splitext(os.path.basename(path))[0]
        name, n = stem, 1
        while name in used:
            n += 1
            name = f"{stem}-{n}"
        used.add(name)
        out.append(os.path.join(cam_dir, f"{name}.cam.png"))
    return out


def predict_files(
    predictor, paths: Sequence[str], top_k: int = 3, cam_dir: str | None = None
) -> list[Prediction]:
    """:func:`predict_file` for each path, one at a time at its own size, overlays (if
    ``cam_dir``) named by :func:`overlay_paths`. A file that fails gets a :class:`Prediction`
    with ``error`` set; the others still run."""
    overlays = overlay_paths(paths, cam_dir) if cam_dir is not None else [None] * len(paths)
    results = []
    for path, overlay in zip(paths, overlays):
        try:
            results.append(predict_file(predictor, path, top_k, overlay))
        except ValueError as e:
            message = str(e) if path in str(e) else f"{path}: {e}"
            results.append(Prediction(path, error=message))
    return results
