"""Training-size policies, shape buckets and the resizing that serves them.

A *size policy* says which spatial size each training example gets:

* ``fixed:HxW`` (``fixed:N`` = NxN in 2-D, ``fixed:L`` in 1-D): every example is resized to it.
* ``mixed_step:LO-HI[:STEP][:scale]`` (``mixed:`` is the same): one size per training step
  (Mix & Match), each axis drawn independently from ``LO, LO+STEP, ..., HI`` (STEP defaults to
  8; in 2-D LO and HI may be ``HxW``); one compile per grid size. With the ``:scale`` suffix
  the batch size is scaled so pixels per step stay about constant (see
  :meth:`SizePolicy.batch_size`).
* ``mixed_example:LO-HI[:log][:aspect=R]``: every example gets its own size, each axis an
  integer in ``[LO, HI]`` (uniform, or log-uniform with ``:log``; with ``:aspect=R`` the longer
  side is at most R times the shorter). Sizes are packed into at most K padded buckets
  (``--buckets=auto:K``, as native) with the true sizes carried, so any range compiles at most
  K times (see :class:`ExampleSizes`).
* ``native``: every example keeps its own size; batches are grouped into shape buckets and
  zero-padded at the end of each axis, with the true sizes carried along.

Every batch shape is in a declared finite set (the *buckets*), so a jitted step compiles a
bounded number of times.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Sequence

import numpy as np
from absl import logging

from fcn_jax.sizes import Size, format_size, parse_size

DEFAULT_STEP = 8
DEFAULT_AUTO_BUCKETS = 8
_MAX_CANDIDATES = 2500

_POLICY_FORMS = (
    "expected 'fixed:HxW', 'fixed:N', 'mixed_step:LO-HI[:STEP][:scale]', "
    "'mixed_example:LO-HI[:log][:aspect=R]' or 'native'"
)
_BUCKET_FORMS = "expected 'auto:K' or a comma-separated list of shapes like '32x32,48x64'"


# Policy kinds whose batches hold examples of different sizes, zero-padded into buckets.
PADDED_KINDS = ("native", "mixed_example")
# Former names of policy kinds: mixed_step was `mixed` before mixed_example existed.
KIND_ALIASES = {"mixed": "mixed_step"}


@dataclasses.dataclass(frozen=True)
class SizePolicy:
    """A parsed size policy (see the module docstring for the spec strings).

    Attributes:
      kind: ``"fixed"``, ``"mixed_step"``, ``"mixed_example"`` or ``"native"``.
      spatial_dims: 1 or 2.
      size: the size of a fixed policy.
      low, high: the per-axis range of a mixed policy.
      step: mixed_step: the grid ``low, low+step, ..., high`` per axis.
      scale_batch: mixed_step only; scale batch size inversely with pixels per example.
      log_scale: mixed_example: log-uniform instead of uniform per axis.
      max_aspect: mixed_example: longest side / shortest side at most this (2-D).
    """

    kind: str
    spatial_dims: int
    size: Size | None = None
    low: Size | None = None
    high: Size | None = None
    step: int = DEFAULT_STEP
    scale_batch: bool = False
    log_scale: bool = False
    max_aspect: float | None = None

    def spec(self) -> str:
        """The policy string that parses back to this policy (``fixed:28x16``, ``native``,
        ``mixed_step:14-56:14``, ``mixed_example:16-56:log:aspect=1.25``)."""
        if self.kind == "native":
            return "native"
        if self.kind == "fixed":
            return f"fixed:{format_size(self.size)}"
        text = f"{self.kind}:{format_size(self.low)}-{format_size(self.high)}"
        if self.kind == "mixed_step":
            return text + f":{self.step}" + (":scale" if self.scale_batch else "")
        aspect = f":aspect={self.max_aspect!r}" if self.max_aspect is not None else ""
        return text + (":log" if self.log_scale else "") + aspect

    @property
    def pads(self) -> bool:
        """Whether batches hold examples of different sizes (zero-padded; masking needed)."""
        return self.kind in PADDED_KINDS

    def axis_values(self) -> list[np.ndarray]:
        """Mixed per step: the allowed extents of each axis."""
        self._require("mixed_step")
        return [
            np.arange(lo, hi + 1, self.step) for lo, hi in zip(self.low, self.high, strict=True)
        ]

    def grid(self) -> list[Size]:
        """All sizes this policy can produce (fixed: one; mixed_step: the grid; mixed_example:
        every size of nonzero probability; native: none)."""
        if self.kind == "fixed":
            return [self.size]
        if self.kind == "mixed_step":
            mesh = np.meshgrid(*self.axis_values(), indexing="ij")
            return [tuple(int(v) for v in s) for s in zip(*(m.ravel() for m in mesh), strict=True)]
        if self.kind == "mixed_example":
            return [tuple(int(v) for v in s) for s in self.size_distribution()[0]]
        return []

    def size_distribution(self) -> tuple[np.ndarray, np.ndarray]:
        """Mixed per example: every possible size ``(N, D)`` and its probability ``(N,)``.

        Per axis the density is uniform over the integers ``[low, high]`` or, with
        ``log_scale``, proportional to ``1/n`` (uniform in log size); ``max_aspect`` removes the
        sizes whose longer side exceeds that multiple of the shorter and renormalizes.
        """
        self._require("mixed_example")
        axes = [np.arange(lo, hi + 1) for lo, hi in zip(self.low, self.high, strict=True)]
        mesh = np.meshgrid(*axes, indexing="ij")
        sizes = np.stack([m.ravel() for m in mesh], -1).astype(np.int64)
        weight = 1.0 / np.prod(sizes, -1) if self.log_scale else np.ones(len(sizes))
        if self.max_aspect is not None:
            weight = weight * (sizes.max(-1) <= self.max_aspect * sizes.min(-1))
        keep = weight > 0
        return sizes[keep], weight[keep] / weight[keep].sum()

    def draw_size(self, seed: int, step: int) -> Size:
        """The size of training step ``step``: a pure function of ``(seed, step)``."""
        if self.kind == "fixed":
            return self.size
        self._require("mixed_step")
        rng = np.random.default_rng([seed, step])
        return tuple(int(v[rng.integers(len(v))]) for v in self.axis_values())

    def reference_size(self) -> tuple[float, ...]:
        """Mixed per step: the middle of the range, whose pixel count ``batch_size`` keeps."""
        self._require("mixed_step")
        return tuple((lo + hi) / 2 for lo, hi in zip(self.low, self.high, strict=True))

    def batch_size(self, base_batch: int, size: Size, batch_multiple: int = 1) -> int:
        """Batch size for a step of ``size``.

        Without ``scale_batch`` this is ``base_batch``. With it, it is
        ``round(base_batch * ref_pixels / pixels)`` rounded to a multiple of ``batch_multiple``
        (the number of devices) and at least ``batch_multiple``, where ``ref_pixels`` is the
        pixel count at the middle of the range: pixels per step stay about constant.
        """
        if not (self.kind == "mixed_step" and self.scale_batch):
            return base_batch
        ref = math.prod(self.reference_size())
        b = base_batch * ref / math.prod(size)
        return max(batch_multiple, int(round(b / batch_multiple)) * batch_multiple)

    def _require(self, kind: str) -> None:
        if self.kind != kind:
            raise ValueError(f"only defined for a {kind} policy, not {self.kind}")


def parse_size_policy(spec: str, spatial_dims: int) -> SizePolicy:
    """Parse a policy string (``fixed:...``, ``mixed_step:...`` (alias ``mixed:...``),
    ``mixed_example:...``, ``native``) for 1-D or 2-D data."""
    if spatial_dims not in (1, 2):
        raise ValueError(f"spatial_dims must be 1 or 2, got {spatial_dims}")
    kind, _, rest = spec.strip().partition(":")
    kind = KIND_ALIASES.get(kind, kind)
    try:
        if kind == "native" and not rest:
            return SizePolicy("native", spatial_dims)
        if kind == "fixed" and rest:
            return SizePolicy("fixed", spatial_dims, size=parse_size(rest, spatial_dims))
        if kind == "mixed_step" and rest:
            return _parse_mixed_step(rest, spatial_dims)
        if kind == "mixed_example" and rest:
            return _parse_mixed_example(rest, spatial_dims)
    except ValueError as e:
        raise ValueError(f"bad size policy {spec!r}: {e}; {_POLICY_FORMS}") from None
    raise ValueError(f"bad size policy {spec!r}: {_POLICY_FORMS}")


def _parse_range(text: str, spatial_dims: int) -> tuple[Size, Size]:
    """``"LO-HI"`` (each ``N`` or ``HxW``) → (low, high)."""
    if not re.fullmatch(r"[\dx]+-[\dx]+", text):
        raise ValueError("malformed range")
    lo, hi = (parse_size(t, spatial_dims) for t in text.split("-"))
    if any(h < lo_ for lo_, h in zip(lo, hi, strict=True)):
        raise ValueError("need LO <= HI")
    return lo, hi


def _parse_mixed_step(rest: str, spatial_dims: int) -> SizePolicy:
    fields = rest.split(":")
    scale = fields[-1] == "scale"
    if scale:
        fields = fields[:-1]
    if len(fields) not in (1, 2):
        raise ValueError("malformed range")
    lo, hi = _parse_range(fields[0], spatial_dims)
    step = int(fields[1]) if len(fields) == 2 and fields[1].isdigit() else DEFAULT_STEP
    if len(fields) == 2 and not fields[1].isdigit():
        raise ValueError(f"STEP {fields[1]!r} is not an integer")
    if step < 1:
        raise ValueError("need STEP >= 1")
    if any((h - lo_) % step for lo_, h in zip(lo, hi, strict=True)):
        raise ValueError(f"HI - LO must be a multiple of STEP={step}")
    return SizePolicy("mixed_step", spatial_dims, low=lo, high=hi, step=step, scale_batch=scale)


def _parse_mixed_example(rest: str, spatial_dims: int) -> SizePolicy:
    text, *options = rest.split(":")
    lo, hi = _parse_range(text, spatial_dims)
    log_scale, aspect = False, None
    for option in options:
        if option == "log":
            log_scale = True
        elif option.startswith("aspect=") and spatial_dims == 2:
            try:
                aspect = float(option[7:])
            except ValueError:
                aspect = 0.0
            if not aspect >= 1:
                raise ValueError(f"{option!r}: the aspect bound must be a number >= 1")
        else:
            raise ValueError(f"unknown option {option!r}")
    policy = SizePolicy(
        "mixed_example", spatial_dims, low=lo, high=hi, log_scale=log_scale, max_aspect=aspect
    )
    if not len(policy.size_distribution()[0]):
        raise ValueError(f"no size in the range has aspect ratio <= {aspect}")
    return policy


# --- buckets -------------------------------------------------------------------------------


def assign_buckets(sizes: np.ndarray, buckets: Sequence[Size]) -> np.ndarray:
    """Index of the smallest-area bucket each example fits in, -1 where none fits.

    Args:
      sizes: ``(N, D)`` example extents.
      buckets: ``K`` shapes of length ``D``.
    Returns:
      ``(N,)`` int array.
    """
    sizes = np.asarray(sizes).reshape(len(sizes), -1)
    b = np.asarray(buckets).reshape(len(buckets), -1)
    fits = (sizes[:, None, :] <= b[None, :, :]).all(-1)  # (N, K)
    area = np.where(fits, np.prod(b, -1)[None, :], np.iinfo(np.int64).max)
    return np.where(fits.any(1), area.argmin(1), -1)


def fitting_buckets(sizes, buckets, what: str = "examples", where: str | None = None):
    """:func:`assign_buckets`, or a one-line ValueError when some size fits no bucket: how
    many ``what``, one of them, and the buckets (``where``: how to name them)."""
    idx = assign_buckets(sizes, buckets)
    if (idx < 0).any():
        misfits = np.asarray(sizes).reshape(len(idx), -1)[idx < 0]
        big = tuple(int(v) for v in misfits[0])
        where = where or str([tuple(int(v) for v in b) for b in buckets])
        raise ValueError(f"{len(misfits)} {what} fit no bucket in {where} (e.g. size {big})")
    return idx


def padding_efficiency(
    sizes: np.ndarray, buckets: Sequence[Size], weights: np.ndarray | None = None
) -> float:
    """Valid positions / padded positions when each example goes to its smallest fitting bucket
    (``weights``: each size's probability or count; default 1 each)."""
    sizes = np.asarray(sizes).reshape(len(sizes), -1)
    w = np.ones(len(sizes)) if weights is None else np.asarray(weights, np.float64)
    idx = fitting_buckets(sizes, buckets)
    areas = np.prod(np.asarray(buckets).reshape(len(buckets), -1), -1)
    return float((w * np.prod(sizes, -1)).sum() / (w * areas[idx]).sum())


def resolve_buckets(
    spec: str | None,
    policy: SizePolicy,
    example_sizes: np.ndarray,
    *,
    min_size: Sequence[int] | None = None,
    batch_size: int | None = None,
) -> list[Size]:
    """The declared set of batch shapes.

    Fixed: the one size; mixed_step: the whole grid; native and mixed_example: ``auto:K``
    (default ``auto:8``) picks at most K shapes minimizing the expected padded area (native: over
    the data's sizes; mixed_example: over the policy's size distribution), or an explicit list
    ``"32x32,48x64"``. Every size (first raised to ``min_size`` per axis) must fit some bucket.

    Args:
      spec: bucket spec, or None.
      example_sizes: native: ``(N, D)`` extents (``Source.sizes()``); ignored otherwise.
      min_size: the model's minimum extent per axis.
      batch_size: native: a bucket of ``auto:K`` whose examples cannot fill one batch is
        merged into a larger one (its examples were never trained otherwise); an explicit
        list's is logged.
    """
    if not policy.pads:
        if spec is not None:
            raise ValueError(
                f"bucket spec {spec!r} only applies to the native and mixed_example policies"
            )
        return policy.grid()
    if policy.kind == "mixed_example":
        sizes, weights = policy.size_distribution()
    else:
        sizes = np.asarray(example_sizes, np.int64).reshape(len(example_sizes), -1)
        weights = None
    if min_size is not None:
        sizes = np.maximum(sizes, np.asarray(min_size))
    spec = spec or f"auto:{DEFAULT_AUTO_BUCKETS}"
    if spec.startswith("auto:"):
        k = spec[5:]
        if not k.isdigit() or int(k) < 1:
            raise ValueError(f"bad bucket spec {spec!r}: {_BUCKET_FORMS}")
        buckets = auto_buckets(sizes, int(k), weights)
        return merge_sparse(buckets, sizes, batch_size) if weights is None else buckets
    try:
        buckets = [parse_size(t, policy.spatial_dims) for t in spec.split(",")]
    except ValueError as e:
        raise ValueError(f"bad bucket spec {spec!r}: {e}; {_BUCKET_FORMS}") from None
    what = "examples" if weights is None else "sizes of the policy"
    assign = fitting_buckets(sizes, buckets, what, where=f"{spec!r} (add a larger bucket)")
    buckets = sorted(set(buckets))
    if weights is None and batch_size:
        counts = np.bincount(assign_buckets(sizes, buckets), minlength=len(buckets))
        if (sparse := [b for b, c in zip(buckets, counts) if c < batch_size]) and len(assign):
            logging.warning(
                "buckets %s hold fewer examples than one batch of %d: never trained on",
                sparse,
                batch_size,
            )
    return buckets


def merge_sparse(buckets: list[Size], sizes: np.ndarray, batch_size: int | None) -> list[Size]:
    """``buckets`` less those whose examples cannot fill one batch of ``batch_size`` (native
    batches are full batches of one bucket): each such bucket, or where it is the largest
    its next smaller one, is dropped and its examples go to the smallest that fits them."""
    buckets = sorted(buckets, key=lambda b: (int(np.prod(b)), b))
    while batch_size and len(buckets) > 1:
        counts = np.bincount(assign_buckets(sizes, buckets), minlength=len(buckets))
        sparse = [k for k in range(len(buckets)) if counts[k] < batch_size]
        if not sparse:
            break
        for k in [min(k, len(buckets) - 2) for k in sparse]:
            rest = buckets[:k] + buckets[k + 1 :]
            if (assign_buckets(sizes, rest) >= 0).all():
                buckets = rest
                break
        else:
            break
    return sorted(buckets)


def auto_buckets(sizes: np.ndarray, k: int, weights: np.ndarray | None = None) -> list[Size]:
    """At most ``k`` bucket shapes covering every size, chosen to minimize padded area.

    Greedy: start from the per-axis maximum (covers everything), repeatedly add the example
    shape that lowers the total padded area most, then shrink each bucket to the largest example
    assigned to it until stable. Within ~1% of a swap-based local search on uniform sizes.

    Args:
      sizes: ``(N, D)`` example extents.
      weights: ``(N,)`` weight of each size (default: 1 each, i.e. counts).
    Returns:
      Sorted list of shapes.
    """
    sizes = np.asarray(sizes, np.int64)
    w = np.ones(len(sizes)) if weights is None else np.asarray(weights, np.float64)
    shapes, inverse = np.unique(sizes, axis=0, return_inverse=True)
    counts = np.bincount(inverse.ravel(), weights=w)
    if len(shapes) > _MAX_CANDIDATES:
        # Keep the (U, U) cost matrix small: round each axis up to one of a few per-axis
        # quantiles. Buckets built from rounded shapes still fit the originals.
        q = np.linspace(0, 1, int(_MAX_CANDIDATES ** (1 / sizes.shape[1])))
        axes = [np.unique(np.quantile(col, q, method="higher")) for col in sizes.T]
        rounded = np.stack(
            [ax[np.searchsorted(ax, col)] for ax, col in zip(axes, shapes.T, strict=True)], -1
        )
        shapes, inverse = np.unique(rounded, axis=0, return_inverse=True)
        counts = np.bincount(inverse.ravel(), weights=counts)
    # cand_cost[c, u]: padded area of shape u in bucket c (huge where it does not fit).
    fits = (shapes[None, :, :] <= shapes[:, None, :]).all(-1)
    cand_cost = np.where(fits, np.prod(shapes, -1)[:, None], np.inf)
    buckets = [tuple(shapes.max(0))]
    cost = np.full(len(shapes), float(math.prod(buckets[0])))
    while len(buckets) < k:
        total = (np.minimum(cost[None, :], cand_cost) * counts).sum(1)  # (U,)
        best = int(total.argmin())
        if total[best] >= (cost * counts).sum() * (1 - 1e-12):
            break
        buckets.append(tuple(shapes[best]))
        cost = np.minimum(cost, cand_cost[best])
    for _ in range(10):  # shrink to fit the real sizes; never increases padded area
        idx = assign_buckets(sizes, buckets)
        shrunk = sorted({tuple(sizes[idx == j].max(0)) for j in np.unique(idx)})
        if shrunk == sorted(buckets):
            break
        buckets = shrunk
    return [tuple(int(v) for v in b) for b in sorted(buckets)]


class ExampleSizes:
    """The per-example sizes of a ``mixed_example`` policy, drawn one bucket per step.

    Every batch fills one bucket: a step first draws bucket ``k`` with the probability that a
    size of the policy lands in it (its smallest fitting bucket), then each example's size from
    the policy's distribution restricted to that bucket's sizes. Each example's size is therefore
    distributed exactly as the policy says, while a batch has one padded shape.
    """

    def __init__(self, policy: SizePolicy, buckets: Sequence[Size]):
        sizes, prob = policy.size_distribution()
        self.buckets = [tuple(int(v) for v in b) for b in buckets]
        assign = fitting_buckets(sizes, self.buckets, "sizes of the policy")
        self._members = [sizes[assign == k] for k in range(len(self.buckets))]
        mass = np.array([prob[assign == k].sum() for k in range(len(self.buckets))])
        # Cumulative distributions, normalized as Generator.choice(p=...) does, so that drawing
        # from them is that function's draw (the same sizes) without its checks of p each step.
        self._bucket_cdf = _cdf(mass)
        self._cdf = [_cdf(prob[assign == k]) if m > 0 else None for k, m in enumerate(mass)]

    def draw(self, seed: int, step: int, n: int) -> tuple[Size, np.ndarray]:
        """Step ``step``'s bucket and ``(n, D)`` example sizes: a pure function of (seed, step)."""
        rng = np.random.default_rng([seed, 3, step])
        k = int(self._bucket_cdf.searchsorted(rng.random(), side="right"))
        pick = self._cdf[k].searchsorted(rng.random(n), side="right")
        return self.buckets[k], self._members[k][pick]


def _cdf(weights: np.ndarray) -> np.ndarray:
    cdf = np.cumsum(weights / weights.sum())
    return cdf / cdf[-1]
