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


def parse_sizes(spec: str, spatial_dims: int, *, flag: str, grid: bool = True) -> list[Size]:
    """``"28,28x16"`` → [(28, 28), (28, 16)]; ``"grid:16,28"`` → every (h, w) pair (2-D),
    in order, without repeats. ``flag`` names the flag in the one-line errors; ``grid=False``
    rejects the ``grid:`` form."""
    is_grid = spec.startswith("grid:")
    items = [t.strip() for t in spec.removeprefix("grid:").split(",") if t.strip()]
    if not items or (is_grid and (spatial_dims != 2 or not grid)):
        forms = "28,28x16 or grid:16,28,40" if grid else "28,42,56 (no grid:)"
        raise ValueError(f"--{flag}={spec!r}: expected a list like {forms}")
    try:
        if is_grid:
            if any("x" in t for t in items):
                raise ValueError("grid: takes single numbers (every HxW pair of them is tested)")
            values = sorted({parse_size(t, 1)[0] for t in items})
            return [(h, w) for h in values for w in values]
        return list(dict.fromkeys(parse_size(t, spatial_dims) for t in items))
    except ValueError as e:
        raise ValueError(f"--{flag}={spec!r}: {e}") from None


def check_min_size(sizes: Sequence[Sequence[int]], min_size: Sequence[int], what: str) -> None:
    """ValueError (one line) listing the ``sizes`` below ``min_size`` along some axis, e.g.
    ``"--eval_sizes: [(4, 4)] below the model's minimum size (8, 8)"`` for ``what`` =
    ``"--eval_sizes:"``."""
    small = [tuple(int(a) for a in s) for s in sizes if any(a < m for a, m in zip(s, min_size))]
    if small:
        minimum = tuple(int(m) for m in min_size)
        raise ValueError(f"{what} {small} below the model's minimum size {minimum}")
