"""The training-batch plan shared by the host (Grain) and on-device loaders.

Global step ``i`` maps to a list of example indices, a batch shape (one of the buckets) and,
for ``mixed_example``, each example's own size: a pure function of ``(seed, i)`` given the
source, identical on every process. A loader (:class:`PlannedLoader`: the contract both
train loaders keep) holds a plan and turns planned batches into step inputs; its position is
the next global step, so a resumed loader yields exactly the batches an uninterrupted one
would.
"""

from __future__ import annotations

import bisect
import math
import threading
import time
from collections.abc import Sequence

import numpy as np

from fcn_jax.data.augment import Augmentation
from fcn_jax.data.buckets import ExampleSizes, fitting_buckets, padding_efficiency
from fcn_jax.data.policies import SizePolicy
from fcn_jax.data.sources import Source
from fcn_jax.sizes import check_min_size

# A planned global batch: example indices, the batch's spatial shape, and each example's own
# size (B, D) where examples differ (mixed_example), else None.
PlannedBatch = tuple[np.ndarray, tuple[int, ...], np.ndarray | None]
# The batch keys the train step takes (and BatchNorm recalibration, which runs its forward pass).
TRAIN_KEYS = ("image", "label", "sizes")


def effective_sizes(sizes: np.ndarray, min_size: Sequence[int]) -> np.ndarray:
    """Example extents after raising each axis to the model's minimum."""
    return np.maximum(sizes, np.asarray(min_size, np.int64))


class BatchPlan:
    """Deterministic plan of global training batches: a pure function of the step, with no
    position of its own (the loaders that follow it keep theirs).

    Plan per epoch (identical on every process): a permutation of the examples drawn from
    ``(seed, epoch)``, then

    * fixed / mixed_step / mixed_example: consecutive chunks of the permutation; the last partial
      chunk is dropped. mixed_step draws each step's size from ``(seed, step)``; with
      ``scale_batch`` the batch size follows :meth:`SizePolicy.batch_size` and the epoch ends
      when the next batch does not fit. mixed_example draws each step's bucket and every
      example's size within it from ``(seed, step)`` (:class:`ExampleSizes`).
    * native: examples are grouped by bucket (the smallest-area bucket they fit, after raising
      them to ``min_size``) in permutation order, chunked into full batches (each bucket's
      remainder is dropped for that epoch; the next permutation gives them another chance), and
      the batches shuffled.

    Examples smaller than ``min_size`` on some axis are upsized to it on that axis (native), and
    fixed/mixed sizes below ``min_size`` are an error. ``augmentation`` zooms and shifts every
    example within its canvas, drawn from ``(seed, step)``. The host loader
    (:class:`~fcn_jax.data.loader.TrainLoader`) and the device loader
    (:class:`~fcn_jax.data.device_loader.DeviceLoader`) make the same batches of a plan.

    Args:
      source: random-access examples with ``sizes()``.
      policy: a parsed size policy.
      buckets: the declared batch shapes (``resolve_buckets``); must cover the policy's sizes.
      batch_size: global batch size (the base batch size with ``scale_batch``).
      seed: plan seed.
      process_count: the processes that each read their rows of a batch.
      min_size: the model's smallest extent per axis.
      batch_multiple: ``scale_batch`` batch sizes are multiples of this (default
        ``process_count``; pass the global device count).
      augmentation: random zoom and shift (default: none).
    """

    def __init__(
        self,
        source: Source,
        policy: SizePolicy,
        buckets: Sequence[Sequence[int]],
        batch_size: int,
        seed: int,
        *,
        process_count: int = 1,
        min_size: Sequence[int] | None = None,
        batch_multiple: int | None = None,
        augmentation: Augmentation | None = None,
    ):
        d = source.spatial_dims
        if policy.spatial_dims != d:
            raise ValueError(f"policy is {policy.spatial_dims}-D but the data is {d}-D")
        if batch_size % process_count:
            raise ValueError(f"batch_size {batch_size} is not divisible by {process_count} hosts")
        self.batch_multiple = batch_multiple or process_count
        if self.batch_multiple % process_count:
            raise ValueError(
                f"batch_multiple {batch_multiple} is not a multiple of {process_count}"
            )
        self.source, self.policy, self.seed = source, policy, seed
        self.augmentation = augmentation or Augmentation()
        self.batch_size, self.process_count = batch_size, process_count
        self.min_size = tuple(min_size or (1,) * d)
        self.buckets = sorted({tuple(int(v) for v in b) for b in buckets})
        self._n = len(source)
        self._check_policy()
        self._lock = threading.Lock()
        self._plans: dict[int, list[PlannedBatch]] = {}
        self._offsets = [0]  # first global step of each epoch planned so far
        self.batches_per_epoch = None if self.variable_epochs else len(self.epoch(0))
        if not self.epoch(0):
            raise ValueError(self._no_full_batch())

    def _check_policy(self) -> None:
        policy = self.policy
        if policy.kind == "native":
            self._sizes = effective_sizes(self.source.sizes(), self.min_size)
            self._assign = fitting_buckets(self._sizes, self.buckets)
            return
        smallest = [policy.low] if policy.kind == "mixed_example" else policy.grid()
        check_min_size(smallest, self.min_size, "policy sizes")
        if policy.kind == "mixed_example":
            self._example_sizes = ExampleSizes(policy, self.buckets)
        elif missing := set(policy.grid()) - set(self.buckets):
            raise ValueError(f"sizes {sorted(missing)} of the policy are not in the buckets")

    def _no_full_batch(self) -> str:
        """Why an epoch holds no batch, and which flags change it. Native batches take the
        examples of one bucket, so the limit is the fullest bucket's count, not the split's."""
        b, n = self.batch_size, self._n
        if self.policy.kind != "native":
            return (
                f"--batch_size={b} leaves no full batch in the {n} training examples: use "
                f"--batch_size={n} or less"
            )
        counts = np.bincount(self._assign, minlength=len(self.buckets))
        fullest = int(np.argmax(counts))
        shape = "x".join(map(str, self.buckets[fullest]))
        text = (
            f"--batch_size={b} leaves no full batch: native training batches the examples of "
            f"one bucket, and the fullest of the {len(self.buckets)} buckets ({shape}) holds "
            f"{counts[fullest]} of the {n} training examples; use --batch_size={counts[fullest]} "
            "or less"
        )
        if n >= b and len(self.buckets) > 1:
            text += ", fewer buckets (--buckets=auto:1 puts them all in one)"
        return text + " or another --train_size (fixed:SIZE, mixed_example:LO-HI)"

    @property
    def variable_epochs(self) -> bool:
        """Whether batch sizes, and so epoch lengths, vary (``mixed_step:...:scale``)."""
        return self.policy.kind == "mixed_step" and self.policy.scale_batch

    def epoch(self, epoch: int) -> list[PlannedBatch]:
        """Epoch ``epoch``'s global batches."""
        with self._lock:
            if epoch not in self._plans:
                if len(self._plans) > 4:  # threads only look at neighbouring epochs
                    self._plans.pop(min(self._plans))
                self._plans[epoch] = self._make_plan(epoch)
            return self._plans[epoch]

    def _make_plan(self, epoch: int):
        perm = np.random.default_rng([self.seed, 1, epoch]).permutation(self._n)
        b = self.batch_size
        if self.policy.kind == "native":
            batches = []
            for k, bucket in enumerate(self.buckets):
                members = perm[self._assign[perm] == k]
                batches += [
                    (members[j : j + b], bucket, None) for j in range(0, len(members) - b + 1, b)
                ]
            order = np.random.default_rng([self.seed, 2, epoch]).permutation(len(batches))
            return [batches[i] for i in order]
        if not self.variable_epochs:
            first = epoch * (self._n // b)
            return [
                (perm[j * b : (j + 1) * b], *self._draw_shape(first + j, b))
                for j in range(self._n // b)
            ]
        step, pos, batches = self._offsets[epoch], 0, []
        while True:
            size = self.policy.draw_size(self.seed, step)
            n = self.policy.batch_size(b, size, self.batch_multiple)
            if pos + n > self._n:
                return batches
            batches.append((perm[pos : pos + n], size, None))
            pos, step = pos + n, step + 1

    def _draw_shape(self, step: int, n: int) -> tuple[tuple[int, ...], np.ndarray | None]:
        """Step ``step``'s batch shape and, for mixed_example, its ``n`` example sizes."""
        if self.policy.kind == "mixed_example":
            return self._example_sizes.draw(self.seed, step, n)
        return self.policy.draw_size(self.seed, step), None

    def planned(self, step: int) -> PlannedBatch:
        """Global step ``step``'s batch: indices, shape, per-example sizes (or None)."""
        epoch, j = self.locate(step)
        return self.epoch(epoch)[j]

    def example_sizes(self, plan: PlannedBatch) -> np.ndarray:
        """(B, D) int extent of each example of a planned batch (what the model masks to)."""
        indices, shape, sizes = plan
        if sizes is not None:
            return np.asarray(sizes, np.int64)
        if self.policy.kind == "native":
            return self._sizes[indices]
        return np.tile(np.asarray(shape, np.int64), (len(indices), 1))

    def steps_for(self, epochs: float) -> int:
        """Global steps in the first ``epochs`` epochs (a fraction takes that share of the last
        one's batches); epochs of ``scale_batch`` policies differ in length."""
        whole = int(epochs)
        lengths = []
        for epoch in range(whole + 1):
            while self.variable_epochs and len(self._offsets) <= epoch:  # planned in order
                self.locate(self._offsets[-1])
            lengths.append(len(self.epoch(epoch)))
        return max(1, math.ceil(sum(lengths[:whole]) + (epochs - whole) * lengths[whole]))

    def locate(self, step: int) -> tuple[int, int]:
        """(epoch, batch within epoch) of a global step."""
        if not self.variable_epochs:
            return divmod(step, self.batches_per_epoch)
        with self._lock:
            planned = len(self._offsets) - 1
        while self._offsets[-1] <= step:  # epochs' lengths vary: walk forward once
            n = len(self.epoch(planned))
            with self._lock:
                if len(self._offsets) == planned + 1:
                    self._offsets.append(self._offsets[-1] + n)
                planned = len(self._offsets) - 1
        epoch = bisect.bisect_right(self._offsets, step) - 1
        return epoch, step - self._offsets[epoch]

    def __getstate__(self) -> dict:
        """Picklable (for loader worker processes): without the lock and the plan cache."""
        return {k: v for k, v in self.__dict__.items() if k not in ("_lock", "_plans")}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, _lock=threading.Lock(), _plans={})

    def check_state(self, state: dict) -> None:
        """A loader position (:meth:`PlannedLoader.get_state`) is only valid for this plan's
        seed, examples and batch size."""
        for key in ("seed", "num_examples", "batch_size"):
            if state[key] != getattr(self, "_n" if key == "num_examples" else key):
                raise ValueError(f"loader state was saved with a different {key}: {state}")

    def counts(self, plan: PlannedBatch) -> dict[str, int]:
        """What a planned batch holds: ``examples``, valid ``pixels`` and ``padded_pixels``
        (positions of the batch arrays)."""
        n = len(plan[0])
        return {
            "examples": n,
            "pixels": int(np.prod(self.example_sizes(plan), -1).sum()),
            "padded_pixels": n * math.prod(plan[1]),
        }

    @property
    def padding_efficiency(self) -> float:
        """Valid / padded positions (1.0 for fixed and mixed_step, which resize instead of pad;
        mixed_example: expected over its size distribution)."""
        if self.policy.kind == "mixed_example":
            sizes, prob = self.policy.size_distribution()
            return padding_efficiency(sizes, self.buckets, prob)
        if self.policy.kind != "native":
            return 1.0
        return padding_efficiency(self._sizes, self.buckets)


class PlannedLoader:
    """The contract of both train loaders (host: :class:`~fcn_jax.data.loader.TrainLoader`;
    device: :class:`~fcn_jax.data.device_loader.DeviceLoader`), each holding a
    :class:`BatchPlan` (``plan``). The loop takes :meth:`step_input` each step: an input
    ready for the train step, whichever loader made it.

    ``tally`` counts what the loader has handed out since it was made or resumed, over every
    process: ``examples``, valid ``pixels`` and ``padded_pixels``. ``compile_seconds``: time
    the loader spent compiling (its batch assembly, when it has one).
    """

    pipeline = ""  # the summary's input_pipeline

    def __init__(self, plan: BatchPlan):
        self.plan = plan
        self.tally = {"examples": 0, "pixels": 0, "padded_pixels": 0}
        self.compile_seconds = 0.0
        self._next, self._t0 = 0, None

    def step_input(self):
        """The next step's input, ready for the train step (on the devices)."""
        raise NotImplementedError

    def abstract_input(self, canvas: Sequence[int], batch_size: int):
        """What :meth:`step_input` gives for ``batch_size`` examples of ``canvas``, abstract
        (``--precompile``)."""
        raise NotImplementedError

    def steps_for(self, epochs: float) -> int:
        return self.plan.steps_for(epochs)

    def _take(self) -> int:
        """Count the next planned batch and move past it; return its global step."""
        if self._t0 is None:
            self._t0 = time.perf_counter()
        step, self._next = self._next, self._next + 1
        for key, value in self.plan.counts(self.plan.planned(step)).items():
            self.tally[key] += value
        return step

    def _seek(self, step: int) -> None:
        """Hand out global step ``step`` next."""
        self._next = step

    def get_state(self) -> dict[str, int]:
        """JSON-serializable position: the next global step, plus what it is only valid for."""
        plan = self.plan
        return {
            "step": self._next,
            "seed": plan.seed,
            "num_examples": len(plan.source),
            "batch_size": plan.batch_size,
        }

    def set_state(self, state: dict[str, int]) -> None:
        """Resume at ``state["step"]`` (from :meth:`get_state`)."""
        self.plan.check_state(state)
        self._seek(int(state["step"]))

    @property
    def padding_efficiency(self) -> float:
        return self.plan.padding_efficiency

    @property
    def examples_per_second(self) -> float:
        """Examples (all processes) yielded per second since the first batch."""
        if self._t0 is None:
            return 0.0
        return self.tally["examples"] / max(time.perf_counter() - self._t0, 1e-9)
