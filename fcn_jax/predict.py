"""Classify image files of any size: read each file, run it alone at its own size through an
exported model (or a run directory exported in memory), rank the classes, optionally write the
CAM overlay of the predicted class."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence

import numpy as np

from fcn_jax.cam import cam_overlay, save_png
from fcn_jax.checkpoint import restore_run, run_class_names
from fcn_jax.data.folder import decode_image
from fcn_jax.data.resize import (
    fit_min_size,
)
from fcn_jax.export import ExportedModel, load_exported
from fcn_jax.sizes import format_size


def load_predictor(model: str) -> ExportedModel:
    """An :class:`ExportedModel` from an export file, or from a run directory (restored and
    exported in memory, class names from its ``config.json`` when recorded)."""
    if os.path.isdir(model):
        return ExportedModel.from_model(restore_run(model), run_class_names(model))
    if not os.path.exists(model):
        raise ValueError(f"--model {model!r}: no such export file or run directory")
    return load_exported(model)


def load_image(path: str, channels: int) -> np.ndarray:
    """Read a PNG/JPEG (any mode) as (H, W, channels) float32 in [0, 1], exactly as training
    reads a folder dataset's files (:func:`fcn_jax.data.folder.decode_image`).

    ``channels`` 1 converts to grayscale (``L``), 3 to ``RGB``. ``ValueError`` naming the file
    when it cannot be read.
    """
    return decode_image(path, channels)


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
        size = format_size(self.size)
        note = f", resized to {format_size(self.resized_to)}" if self.resized_to else ""
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
    x = fit_min_size(image, predictor.min_size)
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
