"""The measurements behind ``python -m benchmarks.run``: six parts, each returning table rows.

Every part takes a :class:`Bench` (settings of the chosen level, data directory, mesh, caches)
and returns a list of :class:`~benchmarks.bench_table.Row`. All train-step measurements use
the ``seed`` model with parameters from seed 0 and the repository's own compiled train step
(:func:`fcn_jax.steps.make_train_step`).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from collections.abc import Callable

import jax
import numpy as np
import optax
from flax import nnx

import fcn_jax
from benchmarks import end_to_end
from benchmarks.bench_table import Row
from fcn_jax import sharding
from fcn_jax.config import TrainConfig
from fcn_jax.data import (
    Dataset,
    EvalLoader,
    Subset,
    TrainLoader,
    assign_buckets,
    load_dataset,
    padding_efficiency,
    parse_size_policy,
    resolve_buckets,
)
from fcn_jax.data.sources import ArraySource
from fcn_jax.steps import init_state, make_eval_step, make_train_step, train_step
from fcn_jax.train import make_optimizer

TRAIN_KEYS = ("image", "label", "sizes")
NUM_CLASSES = 10
COMPILE_EVENTS = (
    "/jax/core/compile/jaxpr_trace_duration",
    "/jax/core/compile/jaxpr_to_mlir_module_duration",
    "/jax/core/compile/backend_compile_duration",
)


@dataclasses.dataclass(frozen=True)
class Settings:
    """How much each part measures. ``policies``: label → (size policy, bucket spec)."""

    level: str
    variable: str  # dataset of varying sizes (padding, throughput, loader)
    padding_datasets: tuple[str, ...]
    fixed28: str  # dataset for time to accuracy
    batch_size: int = 64
    # 1. compile budget
    compile_range: tuple[int, int] = (14, 56)
    compile_examples: int = 4096
    compile_batch: int = 32
    compile_steps: int = 24
    compile_buckets: str = "auto:8"
    # 2. padding
    padding_specs: tuple[str, ...] = ("auto:4", "auto:8", "auto:16", "auto:32")
    padding_goal: float = 0.9
    padding_max_k: int = 256
    # 3. throughput
    policies: tuple[tuple[str, str, str | None], ...] = (
        ("fixed", "fixed:40", None),
        ("mixed", "mixed:16-64:16", None),
        ("mixed-scale", "mixed:16-64:16:scale", None),
        ("native", "native", "auto:8"),
        ("native-16", "native", "auto:16"),  # one bucket per shape of `variable`: no padding
        ("pad-to-max", "native", "max"),
    )
    rounds: int = 5
    reps: int = 3
    # 4. against PyTorch
    torch_sizes: tuple[int, ...] = (28, 64)
    torch_batch: int = 128
    torch_steps: int | None = None
    torch_quick: bool = False
    # 5. time to accuracy
    target_accuracy: float = 0.9
    tta_max_steps: int = 1500
    tta_eval_every: int = 25
    tta_eval_examples: int = 1000
    # 6. end to end against the step alone
    e2e_policies: tuple[str, ...] = ("fixed", "mixed_step", "mixed_example")
    e2e_steps: int = 300


FULL = Settings(
    level="full",
    variable="procedural_digits/variable",
    padding_datasets=("procedural_digits/variable", "procedural_digits/continuous"),
    fixed28="procedural_digits/fixed28",
)
QUICK = dataclasses.replace(
    FULL,
    level="quick",
    compile_steps=12,
    policies=tuple(p for p in FULL.policies if p[0] != "native-16"),
    rounds=3,
    reps=2,
    torch_quick=True,
    tta_max_steps=600,
    e2e_policies=("fixed", "mixed_example"),
    e2e_steps=150,
    padding_max_k=128,
)
# Only for tests: tiny data, a step or two per measurement, but every code path.
SMOKE = dataclasses.replace(
    FULL,
    level="smoke",
    variable="procedural_digits/tiny_variable",
    padding_datasets=("procedural_digits/tiny_variable",),
    fixed28="procedural_digits/tiny_fixed28",
    batch_size=16,
    compile_examples=128,
    compile_batch=8,
    compile_steps=1,
    padding_specs=("auto:2", "auto:4"),
    padding_max_k=8,
    policies=(
        ("fixed", "fixed:24", None),
        ("mixed", "mixed:16x16-16x32:16", None),
        ("mixed-scale", "mixed:16x16-16x32:16:scale", None),
        ("native", "native", "auto:2"),
        ("pad-to-max", "native", "max"),
    ),
    rounds=1,
    reps=1,
    torch_sizes=(28,),
    torch_batch=8,
    torch_steps=2,
    torch_quick=True,
    tta_max_steps=4,
    tta_eval_every=2,
    tta_eval_examples=32,
    e2e_policies=("fixed",),
    e2e_steps=2,
)
LEVELS = {s.level: s for s in (FULL, QUICK, SMOKE)}


class Bench:
    """Shared state of one benchmark run: settings, datasets (loaded once) and the mesh."""

    def __init__(self, settings: Settings, data_dir: str | None = None):
        self.settings, self.data_dir = settings, data_dir
        self.mesh = sharding.make_mesh()
        self._datasets: dict[str, Dataset] = {}

    def dataset(self, name: str) -> Dataset:
        if name not in self._datasets:
            self._datasets[name] = load_dataset(name, self.data_dir)
        return self._datasets[name]

    @property
    def shardings(self) -> dict:
        return dict(
            state_sharding=sharding.replicated(self.mesh),
            batch_sharding=sharding.batch_sharded(self.mesh),
        )

    def device_batch(self, batch: dict, keys=TRAIN_KEYS) -> dict:
        return sharding.to_global({k: batch[k] for k in keys}, self.mesh)

    @functools.cached_property
    def model(self):
        """The seed model with parameters from seed 0 (built once: building compiles)."""
        return fcn_jax.create_model("seed", num_classes=NUM_CLASSES, seed=0)

    def seed_model(self, tx: optax.GradientTransformation):
        """The seed model, its train graphdef and a fresh replicated train state (its own
        buffers, since train steps donate the state)."""
        model = self.model
        model.train()
        graphdef, state = init_state(model, tx)
        state = jax.tree.map(lambda a: a.copy(), state)
        return model, graphdef, jax.device_put(state, sharding.replicated(self.mesh))


def default_optimizer(steps: int) -> optax.GradientTransformation:
    """The training script's default optimizer (AdamW 3e-3) with a constant learning rate."""
    return make_optimizer(TrainConfig(schedule="constant", steps=steps).resolved(), steps)


# --- 1. compile budget -----------------------------------------------------------------------


class CompileTimer:
    """Counts and times XLA compilations of functions whose name contains ``name`` through
    JAX's monitoring events (tracing + lowering + backend compile)."""

    def __init__(self, name: str):
        self.name, self.seconds, self.count = name, 0.0, 0

    def _listen(self, event: str, duration: float, **kwargs) -> None:
        if event in COMPILE_EVENTS and self.name in str(kwargs.get("fun_name", "")):
            self.seconds += duration
            self.count += event == COMPILE_EVENTS[-1]

    def __enter__(self) -> CompileTimer:
        jax.monitoring.register_event_duration_secs_listener(self._listen)
        return self

    def __exit__(self, *exc) -> None:
        jax.monitoring.unregister_event_duration_listener(self._listen)


def synthetic_source(n: int, lo: int, hi: int, seed: int = 0) -> ArraySource:
    """``n`` random images whose height and width are each uniform in ``[lo, hi]``."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(lo, hi + 1, size=(n, 2))
    images = [rng.integers(0, 256, (h, w, 1), dtype=np.uint8) for h, w in sizes]
    return ArraySource(images, rng.integers(0, NUM_CLASSES, n), spatial_dims=2)


def _train_loop(bench: Bench, step: Callable, state, loader, steps: int) -> tuple[float, set]:
    """Run ``steps`` steps; return (wall seconds, image shapes seen)."""
    shapes, start = set(), time.perf_counter()
    for _ in range(steps):
        batch = next(loader)
        shapes.add(batch["image"].shape)
        state, _ = step(state, bench.device_batch(batch))
    jax.block_until_ready(state)
    return time.perf_counter() - start, shapes


def run_bucketed(bench: Bench, source: ArraySource) -> dict:
    """Native sizes in ``auto:K`` buckets through ``CompiledStep`` (one compile per bucket)."""
    s = bench.settings
    tx = default_optimizer(s.compile_steps)
    model, graphdef, state = bench.seed_model(tx)
    policy = parse_size_policy("native", 2)
    buckets = resolve_buckets(s.compile_buckets, policy, source.sizes(), min_size=model.min_size)
    loader = TrainLoader(source, policy, buckets, s.compile_batch, 0, min_size=model.min_size)
    step = make_train_step(graphdef, tx, label_smoothing=0.0, use_sizes=True, **bench.shardings)
    wall, shapes = _train_loop(bench, step, state, loader, s.compile_steps)
    return {
        "compiles": step.compiles,
        "compile_seconds": step.compile_seconds,
        "wall": wall,
        "shapes": len(shapes),
        "buckets": len(buckets),
        "padding": loader.padding_efficiency,
    }


def run_naive(bench: Bench, source: ArraySource) -> dict:
    """A plain ``jax.jit`` train step fed batches whose (H, W) is drawn per step from every
    integer size in the range (``mixed:LO-HI:1``): it compiles for each new shape."""
    s = bench.settings
    lo, hi = s.compile_range
    tx = default_optimizer(s.compile_steps)
    model, graphdef, state = bench.seed_model(tx)
    policy = parse_size_policy(f"mixed:{lo}-{hi}:1", 2)
    loader = TrainLoader(source, policy, policy.grid(), s.compile_batch, 0, min_size=model.min_size)
    fn = functools.partial(
        train_step, graphdef=graphdef, tx=tx, label_smoothing=0.0, use_sizes=False
    )
    jitted = jax.jit(fn, donate_argnums=0)
    with CompileTimer("train_step") as timer:
        wall, shapes = _train_loop(bench, jitted, state, loader, s.compile_steps)
    return {
        "compiles": timer.count,
        "compile_seconds": timer.seconds,
        "wall": wall,
        "shapes": len(shapes),
        "possible_sizes": len(policy.grid()),
    }


def compile_budget(bench: Bench) -> list[Row]:
    """Part 1: train-step compiles with bucketing against a plain jit that sees every size."""
    s = bench.settings
    lo, hi = s.compile_range
    source = synthetic_source(s.compile_examples, lo, hi)
    bucketed, naive = run_bucketed(bench, source), run_naive(bench, source)
    part, what = "1 compile", f"{s.compile_steps} steps, batch {s.compile_batch}"
    mean = naive["compile_seconds"] / max(naive["compiles"], 1)
    projected = naive["possible_sizes"] * mean
    return [
        Row(
            part,
            f"train compiles, native {s.compile_buckets}",
            bucketed["compiles"],
            "compiles",
            f"<= {_bucket_count(s.compile_buckets)}",
            f"{what}, example sides uniform in [{lo},{hi}]; {bucketed['buckets']} buckets, "
            f"padding efficiency {bucketed['padding']:.2f}",
        ),
        Row(
            part,
            f"compile seconds, native {s.compile_buckets}",
            bucketed["compile_seconds"],
            "s",
            note=f"{_share(bucketed)} of {bucketed['wall']:.1f} s wall",
        ),
        Row(
            part,
            "train compiles, naive jax.jit",
            naive["compiles"],
            "compiles",
            note=f"{what}, one (H, W) per batch from {naive['possible_sizes']} sizes; "
            f"{naive['shapes']} distinct shapes seen; all sizes would take "
            f"~{projected / 60:.0f} min of compiling at {mean:.2f} s each",
        ),
        Row(
            part,
            "compile seconds, naive jax.jit",
            naive["compile_seconds"],
            "s",
            note=f"{_share(naive)} of {naive['wall']:.1f} s wall (trace+lower+compile events)",
        ),
    ]


def _bucket_count(spec: str) -> int:
    return int(spec.removeprefix("auto:")) if spec.startswith("auto:") else len(spec.split(","))


def _share(run: dict) -> str:
    return f"{run['compile_seconds'] / max(run['wall'], 1e-9):.0%}"


# --- 2. padding ------------------------------------------------------------------------------


def buckets_needed(
    sizes: np.ndarray, goal: float, max_k: int, min_size, known: dict[int, float]
) -> int | None:
    """Smallest K whose ``auto:K`` buckets reach padding efficiency ``goal`` (None if even
    ``max_k`` does not), assuming efficiency grows with K. ``known``: K → efficiency already
    measured (narrows the search, which is costly for large K)."""
    policy = parse_size_policy("native", sizes.shape[1])
    known = dict(known)

    def reaches(k: int) -> bool:
        if k not in known:
            buckets = resolve_buckets(f"auto:{k}", policy, sizes, min_size=min_size)
            known[k] = padding_efficiency(sizes, buckets)
        return known[k] >= goal

    lo = max([0] + [k for k, e in known.items() if e < goal])  # below the goal
    hi = min([k for k, e in known.items() if e >= goal], default=None)
    while hi is None:  # double until the goal is reached
        k = min(2 * max(lo, 1), max_k)
        if reaches(k):
            hi = k
        elif k == max_k:
            return None
        else:
            lo = k
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if reaches(mid) else (mid, hi)
    return hi


def padding_rows(name: str, sizes: np.ndarray, settings: Settings, min_size) -> list[Row]:
    """Padding efficiency of each bucket policy on one dataset's training sizes."""
    sizes = np.maximum(sizes, np.asarray(min_size))
    policy = parse_size_policy("native", sizes.shape[1])
    short = name.removeprefix("procedural_digits/")
    shapes = len(np.unique(sizes, axis=0))
    rows, known = [], {}
    for spec in settings.padding_specs:
        buckets = resolve_buckets(spec, policy, sizes, min_size=min_size)
        efficiency = padding_efficiency(sizes, buckets)
        if spec.startswith("auto:"):
            known[int(spec[5:])] = efficiency
        rows.append(
            Row(
                "2 padding",
                f"padding efficiency {spec}, {short}",
                efficiency,
                "valid/padded",
                f">= {settings.padding_goal}",
                f"{len(buckets)} buckets for {shapes} distinct shapes",
            )
        )
    top = tuple(int(v) for v in sizes.max(0))
    rows.append(
        Row(
            "2 padding",
            f"padding efficiency, one {'x'.join(map(str, top))} bucket, {short}",
            padding_efficiency(sizes, [top]),
            "valid/padded",
            note="pad every example to the largest size",
        )
    )
    k = buckets_needed(sizes, settings.padding_goal, settings.padding_max_k, min_size, known)
    rows.append(
        Row(
            "2 padding",
            f"auto:K buckets needed for {settings.padding_goal}, {short}",
            k,
            "buckets",
            note=f"none up to auto:{settings.padding_max_k}" if k is None else "",
        )
    )
    return rows


def padding(bench: Bench) -> list[Row]:
    """Part 2: padding efficiency of auto:K and pad-to-max buckets on real dataset sizes."""
    s = bench.settings
    min_size = bench.model.min_size
    rows = []
    for name in s.padding_datasets:
        rows += padding_rows(name, bench.dataset(name).train.sizes(), s, min_size)
    return rows


# --- 3. train-step throughput ----------------------------------------------------------------


@dataclasses.dataclass
class Shape:
    """One batch shape of a policy: its share of steps, examples and valid pixels per batch,
    one real batch from the policy's loader, and the step times measured on it."""

    size: tuple[int, ...]
    weight: float
    examples: int
    valid: float
    batch: dict
    times: list[float] = dataclasses.field(default_factory=list)


def policy_buckets(spec: str, bucket_spec: str | None, sizes: np.ndarray, min_size) -> list:
    """The batch shapes of a policy; bucket spec ``"max"`` is one bucket of the largest size."""
    policy = parse_size_policy(spec, sizes.shape[1])
    if bucket_spec == "max":
        bucket_spec = "x".join(str(int(v)) for v in np.maximum(sizes, min_size).max(0))
    return resolve_buckets(bucket_spec, policy, sizes, min_size=min_size)


def policy_shapes(bench: Bench, label: str, min_size) -> tuple[list[Shape], float]:
    """Each batch shape of ``label``'s policy with one real batch from its loader, weighted by
    how often training steps have that shape (fixed: 1; mixed: uniform over the grid;
    native: full batches per bucket per epoch). Also returns the padding efficiency."""
    s = bench.settings
    spec, bucket_spec = next((p, b) for name, p, b in s.policies if name == label)
    source = bench.dataset(s.variable).train
    sizes = np.maximum(source.sizes(), np.asarray(min_size))
    policy = parse_size_policy(spec, 2)
    buckets = policy_buckets(spec, bucket_spec, sizes, min_size)
    b = s.batch_size
    if policy.kind == "native":
        assign, area = assign_buckets(sizes, buckets), np.prod(sizes, -1)
        members = {tuple(bk): assign == k for k, bk in enumerate(buckets)}
        weights = {bk: m.sum() // b for bk, m in members.items() if m.sum() >= b}
        mean_area = {bk: area[members[bk]].mean() for bk in weights}
    else:
        weights = {tuple(bk): 1 for bk in buckets}
        mean_area = {bk: math.prod(bk) for bk in weights}
    loader = TrainLoader(source, policy, buckets, b, 0, min_size=min_size)
    found: dict[tuple, dict] = {}
    for _ in range(100 * len(weights)):
        batch = next(loader)
        found.setdefault(batch["image"].shape[1:-1], batch)
        if len(found) == len(weights):
            break
    shapes = []
    for size, weight in weights.items():
        n = len(found[size]["label"])  # mixed:...:scale batches vary in size
        shapes.append(Shape(size, weight, n, n * mean_area[size], bench.device_batch(found[size])))
    return shapes, loader.padding_efficiency


@dataclasses.dataclass
class PolicyRun:
    """A policy's compiled step, its shapes and its own train state (donated step to step)."""

    step: Callable
    shapes: list[Shape]
    state: dict


def time_shapes(runs: dict[str, PolicyRun], rounds: int, reps: int) -> None:
    """Interleaved timing: per round, every policy, every shape, ``reps`` steps."""
    for _ in range(rounds):
        for run in runs.values():
            for shape in run.shapes:
                jax.block_until_ready(run.state)
                start = time.perf_counter()
                for _ in range(reps):
                    run.state, _ = run.step(run.state, shape.batch)
                jax.block_until_ready(run.state)
                shape.times.append((time.perf_counter() - start) / reps)


def summarize(shapes: list[Shape]) -> dict:
    """Expected examples/s, valid and padded pixels/s over the policy's mix of shapes."""
    w = np.array([sh.weight for sh in shapes], float)
    t = np.array([np.median(sh.times) for sh in shapes])
    n = np.array([sh.examples for sh in shapes], float)
    padded = np.array([sh.examples * math.prod(sh.size) for sh in shapes], float)
    valid = np.array([sh.valid for sh in shapes])
    seconds = (w * t).sum()
    return {
        "examples": (w * n).sum() / seconds,
        "valid": (w * valid).sum() / seconds,
        "padded": (w * padded).sum() / seconds,
        "per_shape_px": {sh.size: p / tt for sh, p, tt in zip(shapes, padded, t)},
    }


def measure_steps(bench: Bench) -> dict[str, dict]:
    """Steady-state train-step throughput of every policy (compiles done beforehand)."""
    s = bench.settings
    tx = default_optimizer(1)
    model, graphdef, state0 = bench.seed_model(tx)
    runs, pads = {}, {}
    for label, spec, _ in s.policies:
        shapes, pads[label] = policy_shapes(bench, label, model.min_size)
        step = make_train_step(
            graphdef, tx, label_smoothing=0.0, use_sizes=spec == "native", **bench.shardings
        )
        state = jax.tree.map(lambda a: a.copy(), state0)
        for shape in shapes:  # compile and warm up every shape
            state, _ = step(state, shape.batch)
        runs[label] = PolicyRun(step, shapes, state)
    time_shapes(runs, s.rounds, s.reps)
    results = {}
    for label, run in runs.items():
        results[label] = {**summarize(run.shapes), "padding": pads[label]}
    return results


def throughput(bench: Bench) -> list[Row]:
    """Part 3: train-step examples/s and valid pixels/s per size policy, and ratios to fixed."""
    s = bench.settings
    results = measure_steps(bench)
    part, data = "3 throughput", s.variable.removeprefix("procedural_digits/")
    rows = []
    for label, spec, bucket_spec in s.policies:
        r = results[label]
        what = f"{spec} {bucket_spec or ''}".strip()
        batch = (
            f"{s.batch_size} scaled to constant px/step"
            if spec.endswith(":scale")
            else s.batch_size
        )
        rows.append(
            Row(
                part,
                f"train step examples/s, {label} ({what})",
                r["examples"],
                "ex/s",
                note=f"batch {batch}, {data}",
            )
        )
    for label, r in results.items():
        rows.append(
            Row(
                part,
                f"train step valid px/s, {label}",
                r["valid"],
                "px/s",
                note=f"padded px/s {r['padded']:,.0f}",
            )
        )
    fixed = results["fixed"]
    for label, r in results.items():
        if label != "fixed":
            target = None if label == "pad-to-max" else ">= 0.9"
            rows.append(
                Row(
                    part,
                    f"{label} ÷ fixed, valid px/s",
                    r["valid"] / fixed["valid"],
                    "×",
                    target,
                    _ratio_note(r, fixed),
                )
            )
    return rows


def _ratio_note(r: dict, fixed: dict) -> str:
    """What limits a ratio: padding, and the padded px/s at its shapes relative to fixed (for
    a grid of sizes, the square ones; else the smallest and largest shape)."""
    per, fixed_px = r["per_shape_px"], fixed["padded"]
    text = f"padding eff. {r['padding']:.2f}; padded px/s {r['padded'] / fixed_px:.2f}× fixed"
    squares = [size for size in per if len(set(size)) == 1]
    shown = (
        squares if len(squares) > 2 else sorted({min(per, key=math.prod), max(per, key=math.prod)})
    )
    if len(per) > 1:
        text += "; per shape " + ", ".join(
            f"{'x'.join(map(str, size))} {per[size] / fixed_px:.2f}×" for size in shown
        )
    return text


# --- 4. against PyTorch ----------------------------------------------------------------------


def against_torch(bench: Bench) -> list[Row]:
    """Part 4: images/s of the JAX train step against PyTorch eager (benchmarks.torch_compare)."""
    try:
        from benchmarks import torch_compare
    except ModuleNotFoundError as e:
        if e.name != "benchmarks.torch_compare":
            raise
        return [
            Row(
                "4 vs PyTorch",
                "JAX ÷ PyTorch eager",
                None,
                "×",
                ">= 1.0",
                "skipped: no torch_compare",
            )
        ]
    s = bench.settings
    kwargs = {"sizes": s.torch_sizes, "batch_size": s.torch_batch, "quick": s.torch_quick}
    if s.torch_steps is not None:
        kwargs["steps"] = s.torch_steps
    return [row for r in torch_compare.run(**kwargs) for row in torch_rows(r)]


def torch_rows(r: dict) -> list[Row]:
    """One ``torch_compare.run`` result → two rows: JAX against PyTorch with its default
    threads, and against PyTorch's faster setting (default or 1 thread). Skipped: no value."""
    size, part = f"{r['size']}x{r['size']}", "4 vs PyTorch"
    names = (
        f"JAX ÷ PyTorch eager images/s, {size}",
        f"JAX ÷ best PyTorch eager images/s, {size}",
    )
    if "skipped" in r:
        return [Row(part, name, None, "×", ">= 1.0", f"skipped: {r['skipped']}") for name in names]
    agree = "agree" if r["same_math"] else "DIFFER"
    default = (
        f"batch {r['batch_size']}: JAX {r['jax_images_per_s']:,.0f} vs PyTorch "
        f"{r['torch_images_per_s']:,.0f} img/s ({r['torch_threads']} threads); JAX compile "
        f"{r['jax_compile_s']:.1f} s; first losses {agree} (rel {r['first_losses_max_rel']:.0e})"
    )
    best = (
        f"PyTorch 1 thread {r['torch_1thread_images_per_s']:,.0f} img/s, "
        f"{r['torch_threads']} threads {r['torch_images_per_s']:,.0f} img/s"
    )
    return [
        Row(part, names[0], r["ratio"], "×", ">= 1.0", default),
        Row(part, names[1], r["ratio_vs_best_torch"], "×", ">= 1.0", best),
    ]


# --- 5. time to accuracy ---------------------------------------------------------------------


def eval_set(bench: Bench, dataset: Dataset, n: int) -> list[dict]:
    """The first ``n`` test examples at 28x28, as device batches with a ``valid`` mask."""
    test = Subset(dataset.test, min(n, len(dataset.test)))
    size = tuple(int(v) for v in test.sizes()[0])
    batch = min(500, len(test))
    keys = (*TRAIN_KEYS, "valid")
    return [bench.device_batch(b, keys) for b in EvalLoader(test, size, batch_size=batch)]


def time_to_accuracy(bench: Bench) -> list[Row]:
    """Part 5: wall seconds (model creation, compiles and evaluations included) until the test
    accuracy on ``tta_eval_examples`` examples reaches the target."""
    s = bench.settings
    dataset = bench.dataset(s.fixed28)
    evals = eval_set(bench, dataset, s.tta_eval_examples)
    count = sum(float(e["valid"].sum()) for e in evals)
    _ = bench.model  # built before the clock starts (other parts share it)
    start = time.perf_counter()
    tx = default_optimizer(s.tta_max_steps)
    model, graphdef, state = bench.seed_model(tx)
    model.eval()
    eval_graphdef = nnx.split(model, nnx.Param, ...)[0]
    step = make_train_step(graphdef, tx, label_smoothing=0.0, use_sizes=False, **bench.shardings)
    evaluate = make_eval_step(eval_graphdef, with_maps=False, **bench.shardings)
    size = tuple(int(v) for v in dataset.train.sizes()[0])
    policy = parse_size_policy("fixed:" + "x".join(map(str, size)), 2)
    loader = TrainLoader(dataset.train, policy, [size], s.batch_size, 0, min_size=model.min_size)
    best, reached, eval_seconds = 0.0, None, 0.0
    for i in range(1, s.tta_max_steps + 1):
        state, _ = step(state, bench.device_batch(next(loader)))
        if i % s.tta_eval_every and i != s.tta_max_steps:
            continue
        t = time.perf_counter()
        accuracy = sum(float(evaluate(state, e)["correct"]) for e in evals) / count
        eval_seconds += time.perf_counter() - t
        best = max(best, accuracy)
        if accuracy >= s.target_accuracy:
            reached = (time.perf_counter() - start, i)
            break
    wall = time.perf_counter() - start
    short = s.fixed28.removeprefix("procedural_digits/")
    setup = (
        f"{short}, batch {s.batch_size}, AdamW 3e-3, eval every {s.tta_eval_every} steps on "
        f"{int(count)} test examples"
    )
    spent = (
        f"compiles {step.compile_seconds + evaluate.compile_seconds:.1f} s, "
        f"evaluations {eval_seconds - evaluate.compile_seconds:.1f} s"
    )
    return [
        Row(
            "5 time to acc.",
            f"seconds to {s.target_accuracy} test accuracy",
            reached[0] if reached else None,
            "s",
            note=f"{setup}; {spent}"
            if reached
            else f"not reached in {s.tta_max_steps} steps ({wall:.1f} s); {setup}",
        ),
        Row(
            "5 time to acc.",
            f"steps to {s.target_accuracy} test accuracy",
            reached[1] if reached else None,
            "steps",
            note=f"{reached[1] * s.batch_size} examples" if reached else "not reached",
        ),
        Row(
            "5 time to acc.",
            "best test accuracy seen",
            best,
            "accuracy",
            f">= {s.target_accuracy}",
        ),
    ]


# --- 6. end to end against the step alone ----------------------------------------------------


def end_to_end_rows(bench: Bench) -> list[Row]:
    """Part 6: training examples/s end to end (the training loop) against the same step on
    batches already on the device, per policy and input pipeline (benchmarks.end_to_end)."""
    s = bench.settings
    rows = end_to_end.run(
        s.e2e_policies,
        ("device", "grain"),
        dataset=s.fixed28,
        data_dir=bench.data_dir,
        batch_size=s.batch_size,
        steps=s.e2e_steps,
    )
    return [
        Row(
            "6 end to end",
            f"end to end ÷ step alone, {r['policy']}, {r['pipeline']} pipeline",
            r["ratio"],
            "×",
            ">= 0.9",
            f"{r['end_to_end']:,.0f} vs {r['step_alone']:,.0f} ex/s, batch {s.batch_size}, "
            f"{r['train_size']}",
        )
        for r in rows
    ]


PARTS: tuple[tuple[str, Callable[[Bench], list[Row]]], ...] = (
    ("1 compile", compile_budget),
    ("2 padding", padding),
    ("3 throughput", throughput),
    ("4 vs PyTorch", against_torch),
    ("5 time to acc.", time_to_accuracy),
    ("6 end to end", end_to_end_rows),
)
