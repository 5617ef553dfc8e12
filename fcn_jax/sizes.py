"""The one size type: a spatial size ``(H, W)`` or ``(L,)``, written ``"HxW"`` or ``"L"``
(``"N"`` = N along every axis), with its one parser and formatter."""

from __future__ import annotations

import dataclasses
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


def bind_size(size: Size, spatial_dims: int) -> Size:
    """A size as written (``(N,)``: N along every axis) for ``spatial_dims``-D data; ValueError
    naming both dimensionalities when it has other axes."""
    if len(size) == 1:
        return size * spatial_dims
    if len(size) != spatial_dims:
        raise ValueError(f"{format_size(size)!r} is {len(size)}-D, the data is {spatial_dims}-D")
    return size


def written_dims(sizes: Sequence[Size]) -> int | None:
    """The dimensionality sizes as written fix: that of the first with several axes (1 or 2;
    every other such size must agree), None when each is one number (it fits either)."""
    dims = {len(s) for s in sizes if len(s) > 1}
    if not dims:
        return None
    text = ", ".join(format_size(s) for s in sizes if len(s) > 1)
    if len(dims) > 1:
        raise ValueError(f"sizes of different dimensionality ({text})")
    if dims.pop() != 2:
        raise ValueError(f"{text}: expected 1-D or 2-D sizes")
    return 2


@dataclasses.dataclass(frozen=True)
class SizeList:
    """A parsed list of sizes, ``"28,28x16"`` or (2-D) ``"grid:16,28"`` (every HxW pair of the
    values), in order and without repeats.

    ``spatial_dims`` is None while nothing written fixes it: each size is then one number,
    that extent along every axis, until :meth:`bind` gives it the data's dimensionality.
    """

    sizes: tuple[Size, ...]
    spatial_dims: int | None = None
    grid: bool = False

    @classmethod
    def parse(cls, spec: str, *, flag: str, grid: bool = True) -> SizeList:
        """``"28,28x16"`` → sizes ((28,), (28, 16)), 2-D; ``"grid:16,28"`` → the four pairs.
        ``flag`` names the flag in the one-line errors; ``grid=False`` rejects ``grid:``."""
        is_grid = spec.startswith("grid:")
        items = [t.strip() for t in spec.removeprefix("grid:").split(",") if t.strip()]
        if not items or (is_grid and not grid):
            forms = "28,28x16 or grid:16,28,40" if grid else "28,42,56 (no grid:)"
            raise ValueError(f"--{flag}={spec!r}: expected a list like {forms}")
        try:
            if is_grid:
                if any("x" in t for t in items):
                    raise ValueError("grid: takes single numbers (every HxW pair is tested)")
                values = sorted({parse_size(t, 1)[0] for t in items})
                return cls(tuple((h, w) for h in values for w in values), 2, grid=True)
            sizes = [parse_size(t) for t in items]
            dims = written_dims(sizes)
            if dims is not None:
                sizes = [bind_size(s, dims) for s in sizes]
            return cls(tuple(dict.fromkeys(sizes)), dims)
        except ValueError as e:
            raise ValueError(f"--{flag}={spec!r}: {e}") from None

    def bind(self, spatial_dims: int, *, flag: str) -> SizeList:
        """These sizes for ``spatial_dims``-D data (one-line ValueError naming ``flag`` when
        they are of another dimensionality)."""
        if self.spatial_dims == spatial_dims:
            return self
        if self.spatial_dims is not None:
            kind = "a grid of 2-D sizes" if self.grid else f"{self.spatial_dims}-D sizes"
            raise ValueError(f"--{flag}={self.spec()!r}: {kind}, the data is {spatial_dims}-D")
        sizes = (bind_size(s, spatial_dims) for s in self.sizes)
        return SizeList(tuple(dict.fromkeys(sizes)), spatial_dims, self.grid)

    def spec(self) -> str:
        """The canonical spelling: ``grid:`` and its values, or every size in full
        (``28x28,28x16`` in 2-D); it parses back to an equal list."""
        if self.grid:
            return "grid:" + ",".join(str(v) for v in sorted({s[0] for s in self.sizes}))
        return ",".join(format_size(s) for s in self.sizes)

    def __iter__(self):
        return iter(self.sizes)

    def __len__(self) -> int:
        return len(self.sizes)


def parse_sizes(spec: str, spatial_dims: int, *, flag: str, grid: bool = True) -> list[Size]:
    """``"28,28x16"`` → [(28, 28), (28, 16)]; ``"grid:16,28"`` → every (h, w) pair (2-D),
    in order, without repeats (:class:`SizeList`, bound to ``spatial_dims``)."""
    return list(SizeList.parse(spec, flag=flag, grid=grid).bind(spatial_dims, flag=flag))


def check_min_size(sizes: Sequence[Sequence[int]], min_size: Sequence[int], what: str) -> None:
    """ValueError (one line) listing the ``sizes`` below ``min_size`` along some axis, e.g.
    ``"--eval_sizes: [(4, 4)] below the model's minimum size (8, 8)"`` for ``what`` =
    ``"--eval_sizes:"``."""
    small = [tuple(int(a) for a in s) for s in sizes if any(a < m for a, m in zip(s, min_size))]
    if small:
        minimum = tuple(int(m) for m in min_size)
        raise ValueError(f"{what} {small} below the model's minimum size {minimum}")
