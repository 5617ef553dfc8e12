"""Scale and position augmentation: the content zoomed and shifted within its canvas.

An example resized to its training size ``s`` (per axis) is instead resized to ``z * s`` (the
same factor ``z`` on every axis, antialiased when shrinking) and pasted on a zero canvas of size
``s``, centered and then shifted by ``t * s`` per axis; what falls outside the canvas is cropped.
``z < 1`` leaves a smaller digit with more background, ``z > 1`` a larger, cropped one. The
factors are a pure function of ``(seed, step)``, so a resumed run draws the same ones.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np

from fcn_jax.data.resize import (
    paste_centered,
    resize,
)


@dataclasses.dataclass(frozen=True)
class Augmentation:
    """Random zoom in ``[zoom_low, zoom_high]`` (log-uniform) and shift in
    ``[-translate, translate]`` of the canvas side (uniform, per axis)."""

    zoom_low: float = 1.0
    zoom_high: float = 1.0
    translate: float = 0.0

    @property
    def active(self) -> bool:
        return self.zoom_low != 1.0 or self.zoom_high != 1.0 or self.translate != 0.0

    def draw(self, seed: int, step: int, n: int, spatial_dims: int):
        """Step ``step``'s zoom factors ``(n,)`` and shifts ``(n, D)`` (canvas fractions)."""
        rng = np.random.default_rng([seed, 4, step])
        log_zoom = rng.uniform(math.log(self.zoom_low), math.log(self.zoom_high), n)
        shift = rng.uniform(-self.translate, self.translate, (n, spatial_dims))
        return np.exp(log_zoom), shift

    def apply(self, image: np.ndarray, size: Sequence[int], zoom: float, shift) -> np.ndarray:
        """``(*spatial, C)`` content zoomed by ``zoom`` and shifted by ``shift`` on a zero canvas
        ``(*size, C)``."""
        content = tuple(max(1, round(zoom * s)) for s in size)
        offset = tuple(round(t * s) for t, s in zip(shift, size, strict=True))
        return paste_centered(resize(image, content), size, offset)

    def boxes(self, seed: int, step: int, sizes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Where :meth:`apply` puts each example of step ``step`` on its canvas of ``sizes``
        (B, D): the resized content's extent and the canvas position of its first element,
        both (B, D) int (the start may be negative: cropped)."""
        sizes = np.asarray(sizes, np.int64)
        if not self.active:
            return sizes, np.zeros_like(sizes)
        zooms, shifts = self.draw(seed, step, len(sizes), sizes.shape[1])
        content = np.maximum(1, np.rint(zooms[:, None] * sizes)).astype(np.int64)
        src = np.maximum(0, (content - sizes) // 2)  # as canvas_offsets: centered, then shifted
        dst = np.maximum(0, (sizes - content) // 2)
        return content, dst - src + np.rint(shifts * sizes).astype(np.int64)


def parse_augmentation(zoom: str | None, translate: float) -> Augmentation:
    """``zoom="0.7-1.2"`` (or one number, ``"1.1"`` meaning ``1/1.1-1.1``) and ``translate`` (a
    fraction of the canvas side in [0, 0.5]) → :class:`Augmentation`."""
    low = high = 1.0
    if zoom:
        try:
            parts = [float(p) for p in zoom.split("-")]
        except ValueError:
            parts = []
        if len(parts) == 1 and parts[0] >= 1:
            parts = [1 / parts[0], parts[0]]
        if len(parts) != 2 or not 0 < parts[0] <= parts[1]:
            raise ValueError(
                f"--zoom={zoom!r}: expected LO-HI with 0 < LO <= HI (e.g. 0.7-1.2) or one "
                "factor >= 1"
            )
        low, high = parts
    if not 0 <= translate <= 0.5:
        raise ValueError(f"--translate={translate}: expected a fraction in [0, 0.5]")
    return Augmentation(low, high, translate)
