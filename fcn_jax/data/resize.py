"""Resizing examples on the host (numpy and PIL): to a size, up to the model's minimum, onto
a canvas, or pasted at an offset (the Grain loader, augmentation, ``predict``)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image

from fcn_jax.sizes import Size


def resize(image: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """Resize ``(*spatial, C)`` float data to ``(*size, C)`` with bilinear interpolation.

    PIL's resampling filters widen their support when shrinking, so downsizing is antialiased.
    1-D signals ``(L, C)`` are treated as 1xL images.
    """
    image = np.asarray(image, np.float32)
    size = tuple(int(s) for s in size)
    if image.shape[:-1] == size:
        return image
    flat = image[None] if image.ndim == 2 else image  # 1-D -> (1, L, C)
    out_hw = (1, *size) if image.ndim == 2 else size
    channels = [
        np.asarray(
            Image.fromarray(np.ascontiguousarray(flat[..., c]), mode="F").resize(
                out_hw[::-1], Image.Resampling.BILINEAR
            )
        )
        for c in range(image.shape[-1])
    ]
    out = np.stack(channels, -1)
    return out[0] if image.ndim == 2 else out


def fit_min_size(image: np.ndarray, min_size: Sequence[int]) -> np.ndarray:
    """Upsize (:func:`resize`, only) the axes of ``(*spatial, C)`` shorter than ``min_size``;
    the aspect ratio changes. The eval loader and ``predict`` bring small inputs up so."""
    target = tuple(max(s, m) for s, m in zip(image.shape[:-1], min_size, strict=True))
    return resize(image, target) if target != image.shape[:-1] else image


def canvas_offsets(in_size: Sequence[int], out_size: Sequence[int]) -> tuple[Size, Size]:
    """Per-axis ``(src_start, dst_start)`` that center ``in_size`` content on an ``out_size``
    canvas: content ``[src_start, src_start + n)`` lands at ``[dst_start, dst_start + n)``."""
    src = tuple(max(0, (i - o) // 2) for i, o in zip(in_size, out_size, strict=True))
    dst = tuple(max(0, (o - i) // 2) for i, o in zip(in_size, out_size, strict=True))
    return src, dst


def place_on_canvas(image: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """Keep content scale: center ``(*spatial, C)`` on a zero canvas ``(*size, C)``, cropping the
    center where the content is larger."""
    return paste_centered(image, size, (0,) * len(size))


def paste_centered(image: np.ndarray, size: Sequence[int], shift: Sequence[int]) -> np.ndarray:
    """``(*spatial, C)`` content centered on a zero canvas ``(*size, C)`` (as
    :func:`canvas_offsets`), moved by ``shift`` positions per axis, cropped to the canvas."""
    src, dst = canvas_offsets(image.shape[:-1], size)
    out = np.zeros((*size, image.shape[-1]), np.float32)
    src_sl, dst_sl = [], []
    for i, o, s0, d0, t in zip(image.shape[:-1], size, src, dst, shift, strict=True):
        start = d0 - s0 + t  # canvas position of content index 0
        lo, hi = max(0, start), min(o, start + i)
        if hi <= lo:
            return out
        dst_sl.append(slice(lo, hi))
        src_sl.append(slice(lo - start, hi - start))
    out[tuple(dst_sl)] = image[tuple(src_sl)]
    return out
