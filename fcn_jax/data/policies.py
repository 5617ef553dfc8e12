"""Training-size policies: which spatial size each training example gets.

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

Every batch shape is in a declared finite set (the *buckets*, :mod:`fcn_jax.data.buckets`),
so a jitted step compiles a bounded number of times.
"""

from __future__ import annotations

import dataclasses
import math
import re

import numpy as np

from fcn_jax.sizes import Size, bind_size, format_size, parse_size, written_dims

DEFAULT_STEP = 8

_POLICY_FORMS = (
    "expected 'fixed:HxW', 'fixed:N', 'mixed_step:LO-HI[:STEP][:scale]', "
    "'mixed_example:LO-HI[:log][:aspect=R]' or 'native'"
)


# Policy kinds whose batches hold examples of different sizes, zero-padded into buckets.
PADDED_KINDS = ("native", "mixed_example")
# Former names of policy kinds: mixed_step was `mixed` before mixed_example existed.
KIND_ALIASES = {"mixed": "mixed_step"}


@dataclasses.dataclass(frozen=True)
class SizePolicy:
    """A parsed size policy (see the module docstring for the spec strings).

    Attributes:
      kind: ``"fixed"``, ``"mixed_step"``, ``"mixed_example"`` or ``"native"``.
      spatial_dims: 1 or 2; None while nothing written fixes it (``fixed:28``): the sizes are
        then one number, that extent along every axis, until :meth:`bind`.
      size: the size of a fixed policy.
      low, high: the per-axis range of a mixed policy.
      step: mixed_step: the grid ``low, low+step, ..., high`` per axis.
      scale_batch: mixed_step only; scale batch size inversely with pixels per example.
      log_scale: mixed_example: log-uniform instead of uniform per axis.
      max_aspect: mixed_example: longest side / shortest side at most this (2-D).
    """

    kind: str
    spatial_dims: int | None
    size: Size | None = None
    low: Size | None = None
    high: Size | None = None
    step: int = DEFAULT_STEP
    scale_batch: bool = False
    log_scale: bool = False
    max_aspect: float | None = None

    def bind(self, spatial_dims: int) -> SizePolicy:
        """This policy for ``spatial_dims``-D data (ValueError naming both dimensionalities
        when it is of another)."""
        if self.spatial_dims == spatial_dims:
            return self
        if self.spatial_dims is not None:
            raise ValueError(f"a {self.spatial_dims}-D policy, the data is {spatial_dims}-D")
        sizes = {k: getattr(self, k) for k in ("size", "low", "high") if getattr(self, k)}
        bound = {k: bind_size(v, spatial_dims) for k, v in sizes.items()}
        return dataclasses.replace(self, spatial_dims=spatial_dims, **bound)

    def spec(self) -> str:
        """The canonical policy string, which parses back to this policy (``fixed:28x16``,
        ``native``, ``mixed_step:14x14-56x56:14``, ``mixed_example:16x16-56x56:log:aspect=1.25``;
        unbound: ``fixed:28``)."""
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
            self._require("fixed")
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
        if self.spatial_dims is None:
            raise ValueError(f"{self.spec()!r}: bind it to the data's dimensionality first")
        if self.kind != kind:
            raise ValueError(f"only defined for a {kind} policy, not {self.kind}")


def parse_size_policy(spec: str, spatial_dims: int | None = None) -> SizePolicy:
    """Parse a policy string (``fixed:...``, ``mixed_step:...`` (alias ``mixed:...``),
    ``mixed_example:...``, ``native``), for 1-D or 2-D data, or (``spatial_dims`` None) for
    the dimensionality it fixes, if any (:meth:`SizePolicy.bind` gives it the data's)."""
    if spatial_dims not in (None, 1, 2):
        raise ValueError(f"spatial_dims must be 1 or 2, got {spatial_dims}")
    kind, _, rest = spec.strip().partition(":")
    kind = KIND_ALIASES.get(kind, kind)
    try:
        policy = None
        if kind == "native" and not rest:
            policy = SizePolicy("native", None)
        elif kind == "fixed" and rest:
            size = parse_size(rest)
            policy = SizePolicy("fixed", written_dims([size]), size=size)
        elif kind == "mixed_step" and rest:
            policy = _parse_mixed_step(rest)
        elif kind == "mixed_example" and rest:
            policy = _parse_mixed_example(rest)
    except ValueError as e:
        raise ValueError(f"bad size policy {spec!r}: {e}; {_POLICY_FORMS}") from None
    if policy is None:
        raise ValueError(f"bad size policy {spec!r}: {_POLICY_FORMS}")
    try:
        return policy if spatial_dims is None else policy.bind(spatial_dims)
    except ValueError as e:
        raise ValueError(f"bad size policy {spec!r}: {e}") from None


def _parse_range(text: str) -> tuple[Size, Size, int | None]:
    """``"LO-HI"`` (each ``N`` or ``HxW``) → (low, high, the dimensionality they fix)."""
    if not re.fullmatch(r"[\dx]+-[\dx]+", text):
        raise ValueError("malformed range")
    lo, hi = (parse_size(t) for t in text.split("-"))
    dims = written_dims([lo, hi])
    if dims is not None:
        lo, hi = bind_size(lo, dims), bind_size(hi, dims)
    if any(h < lo_ for lo_, h in zip(lo, hi, strict=True)):
        raise ValueError("need LO <= HI")
    return lo, hi, dims


def _parse_mixed_step(rest: str) -> SizePolicy:
    fields = rest.split(":")
    scale = fields[-1] == "scale"
    if scale:
        fields = fields[:-1]
    if len(fields) not in (1, 2):
        raise ValueError("malformed range")
    lo, hi, dims = _parse_range(fields[0])
    step = int(fields[1]) if len(fields) == 2 and fields[1].isdigit() else DEFAULT_STEP
    if len(fields) == 2 and not fields[1].isdigit():
        raise ValueError(f"STEP {fields[1]!r} is not an integer")
    if step < 1:
        raise ValueError("need STEP >= 1")
    if any((h - lo_) % step for lo_, h in zip(lo, hi, strict=True)):
        raise ValueError(f"HI - LO must be a multiple of STEP={step}")
    return SizePolicy("mixed_step", dims, low=lo, high=hi, step=step, scale_batch=scale)


def _parse_mixed_example(rest: str) -> SizePolicy:
    text, *options = rest.split(":")
    lo, hi, dims = _parse_range(text)
    log_scale, aspect = False, None
    for option in options:
        if option == "log":
            log_scale = True
        elif option.startswith("aspect="):  # a bound on H / W: 2-D
            if dims is None:
                lo, hi, dims = bind_size(lo, 2), bind_size(hi, 2), 2
            try:
                aspect = float(option[7:])
            except ValueError:
                aspect = 0.0
            if not aspect >= 1:
                raise ValueError(f"{option!r}: the aspect bound must be a number >= 1")
        else:
            raise ValueError(f"unknown option {option!r}")
    policy = SizePolicy(
        "mixed_example", dims, low=lo, high=hi, log_scale=log_scale, max_aspect=aspect
    )
    if aspect is not None and not len(policy.size_distribution()[0]):
        raise ValueError(f"no size in the range has aspect ratio <= {aspect}")
    return policy
