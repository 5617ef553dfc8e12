"""Shape buckets: the declared finite set of batch shapes of the padded policies (native,
mixed_example), so a jitted step compiles a bounded number of times; ``--buckets`` parsed
(:class:`BucketSpec`), resolved for a policy and its data (:func:`resolve_buckets`), and the
one "fits no bucket" check (:func:`fitting_buckets`)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np
from absl import logging

from fcn_jax.data.policies import SizePolicy
from fcn_jax.sizes import Size, bind_size, format_size, parse_size, written_dims

DEFAULT_AUTO_BUCKETS = 8
_MAX_CANDIDATES = 2500
_BUCKET_FORMS = "expected 'auto:K' or a comma-separated list of shapes like '32x32,48x64'"


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


@dataclasses.dataclass(frozen=True)
class BucketSpec:
    """A parsed ``--buckets``: ``auto:K`` (at most K shapes, chosen for the sizes) or a set of
    shapes (sorted; one number is that extent along every axis until :meth:`bind`)."""

    auto: int | None = None
    shapes: tuple[Size, ...] = ()
    spatial_dims: int | None = None

    def bind(self, spatial_dims: int) -> BucketSpec:
        if self.auto is not None or self.spatial_dims == spatial_dims:
            return self
        if self.spatial_dims is not None:
            raise ValueError(f"{self.spec()!r}: 2-D shapes, the data is {spatial_dims}-D")
        shapes = sorted({bind_size(s, spatial_dims) for s in self.shapes})
        return BucketSpec(shapes=tuple(shapes), spatial_dims=spatial_dims)

    def spec(self) -> str:
        """The canonical spelling: ``auto:K``, or the shapes in order (``32x32,48x64``)."""
        if self.auto is not None:
            return f"auto:{self.auto}"
        return ",".join(format_size(s) for s in self.shapes)


def parse_buckets(spec: str) -> BucketSpec:
    """``"auto:8"`` or ``"32x32,48x64"`` → a :class:`BucketSpec` (one-line ValueError)."""
    if spec.startswith("auto:"):
        if not spec[5:].isdigit() or int(spec[5:]) < 1:
            raise ValueError(f"bad bucket spec {spec!r}: {_BUCKET_FORMS}")
        return BucketSpec(auto=int(spec[5:]))
    try:
        shapes = [parse_size(t) for t in spec.split(",")]
        dims = written_dims(shapes)
    except ValueError as e:
        raise ValueError(f"bad bucket spec {spec!r}: {e}; {_BUCKET_FORMS}") from None
    shapes = [bind_size(s, dims) for s in shapes] if dims else shapes
    return BucketSpec(shapes=tuple(sorted(set(shapes))), spatial_dims=dims)


def resolve_buckets(
    spec: str | BucketSpec | None,
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
      spec: bucket spec (text or parsed), or None.
      policy: a bound size policy.
      example_sizes: native: ``(N, D)`` extents (``Source.sizes()``); ignored otherwise.
      min_size: the model's minimum extent per axis.
      batch_size: native: a bucket of ``auto:K`` whose examples cannot fill one batch is
        merged into a larger one (its examples were never trained otherwise); an explicit
        list's is logged.
    """
    spec = parse_buckets(spec) if isinstance(spec, str) else spec
    if not policy.pads:
        if spec is not None:
            raise ValueError(
                f"bucket spec {spec.spec()!r} only applies to the native and mixed_example policies"
            )
        return policy.grid()
    if policy.kind == "mixed_example":
        sizes, weights = policy.size_distribution()
    else:
        sizes = np.asarray(example_sizes, np.int64).reshape(len(example_sizes), -1)
        weights = None
    if min_size is not None:
        sizes = np.maximum(sizes, np.asarray(min_size))
    spec = spec or BucketSpec(auto=DEFAULT_AUTO_BUCKETS)
    if spec.auto is not None:
        buckets = auto_buckets(sizes, spec.auto, weights)
        return merge_sparse(buckets, sizes, batch_size) if weights is None else buckets
    try:
        spec = spec.bind(policy.spatial_dims)
    except ValueError as e:
        raise ValueError(f"bad bucket spec {e}") from None
    what = "examples" if weights is None else "sizes of the policy"
    where = f"{spec.spec()!r} (add a larger bucket)"
    assign = fitting_buckets(sizes, spec.shapes, what, where=where)
    counts = np.bincount(assign, minlength=len(spec.shapes))
    if weights is None and batch_size and (sparse := [
        b for b, c in zip(spec.shapes, counts) if c < batch_size
    ]):  # fmt: skip
        logging.warning(
            "buckets %s hold fewer examples than one batch of %d: never trained on",
            sparse,
            batch_size,
        )
    return list(spec.shapes)


def merge_sparse(buckets: list[Size], sizes: np.ndarray, batch_size: int | None) -> list[Size]:
    """``buckets`` less those whose examples cannot fill one batch of ``batch_size`` (native
    batches are full batches of one bucket): each such bucket, or where it is the largest
    its next smaller one, is dropped and its examples go to the smallest that fits them."""
    buckets = sorted(buckets, key=lambda b: (math.prod(b), b))
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
