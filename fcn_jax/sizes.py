"""The one size type: a spatial size ``(H, W)`` or ``(L,)``, written ``"HxW"`` or ``"L"``
(``"N"`` = N along every axis), with its one parser and formatter."""

from __future__ import annotations

import re
from collections.abc import Sequence

Size = tuple[int, ...]

_TEXT = re.compile(r"\d+(x\d+)*")


def parse_size(text: str, spatial_dims: int | None = None) -> Size:
    """``"28x16"`` → (28, 16); ``"N"`` → N per axis of ``spatial_dims`` (None: as written, the
    inverse of :func:`format_size`). ValueError for malformed text, a size with other than
    ``spatial_dims`` axes, or a zero side."""
    text = text.strip()
    if not _TEXT.fullmatch(text):
        raise ValueError(f"{text!r} is not a size like 28 or 28x16")
    size = tuple(int(p) for p in text.split("x"))
    if spatial_dims is not None and len(size) == 1:
        size *= spatial_dims
    if spatial_dims is not None and len(size) != spatial_dims:
        raise ValueError(f"{text!r} is not a {spatial_dims}-D size")
    if min(size) < 1:
        raise ValueError(f"{text!r} has a zero side")
    return size


def format_size(size: Sequence[int]) -> str:
    """(28, 16) → ``"28x16"``; (40,) → ``"40"`` (the keys of ``eval_accuracy``)."""
    return "x".join(str(int(s)) for s in size)
