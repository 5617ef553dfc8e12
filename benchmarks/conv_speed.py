"""Training-step speed of the ``seed`` FCN on CPU: ways to write the step and the strided conv.

    python -m benchmarks.conv_speed [--sizes 28,64] [--batch_size 128] [--steps 10]
        [--repeats 5] [--groups step,conv,dtype,batch,chunks,flags,threads,scan] [--quick]

Every group prints images/second (median over ``--repeats`` timed windows of ``--steps``
steps each, after warm-up; one host sync per window), compile seconds and the first step's
loss. In-process variants of a group are timed interleaved (round-robin, the order reversed
every other round) so that load from other processes hits them alike. Process-level variants
(XLA flags, thread count) run as child processes, one after another for each round.

Groups:
  step     the same model step as ``nnx.jit`` + ``nnx.Optimizer``, as a pure ``jax.jit``
           function over ``nnx.split`` state (with and without ``donate_argnums``), as
           ``fcn_jax.steps.train_step``;
  conv     the stride-2 convolutions written as ``lax`` autodiff (NHWC, NCHW), space-to-depth,
           im2col + dot, and ``fcn_jax.models.layers.strided_conv`` (custom input gradient);
  dtype    float32 vs bfloat16 computation;
  batch    images/second at batch sizes 32, 128, 256;
  chunks   one batch of 128 cut into 1, 4 or 8 chunks whose gradients are summed (same math);
  flags    XLA:CPU flags (child processes);
  threads  the XLA:CPU thread pool on 1 core vs 2 (child processes pinned with affinity);
  scan     4 steps per call with ``lax.scan`` (not run by default: inside a while loop XLA:CPU
           runs the backward convolutions without its fast conv library, ~15x slower).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable

import numpy as np

NUM_CLASSES = 10
ADAMW = dict(learning_rate=3e-3, b1=0.9, b2=0.999, eps=1e-8, weight_decay=1e-4)
FLAG_VARIANTS = {
    "default": "",
    "no multi-thread Eigen": "--xla_cpu_multi_thread_eigen=false",
    "fast math": "--xla_cpu_enable_fast_math=true",
    "oneDNN dots": "--xla_cpu_use_onednn=true "
    "--xla_cpu_experimental_onednn_fusion_type=individual_dot",
    "YNN +dot,+eltwise,+reduce": "--xla_cpu_experimental_ynn_fusion_type=+dot,+eltwise,+reduce",
    "no YNN convs (Eigen)": "--xla_cpu_experimental_ynn_fusion_type=-individual_convolution",
    "no XNNPACK": "--xla_cpu_use_xnnpack=false",
}


# ----------------------------------------------------------------------------- data, optimizer


def make_batches(size: int, batch_size: int, n: int = 4, seed: int = 0) -> list[tuple]:
    """``n`` batches of (images (B, size, size, 1) float32, labels (B,) int32) as numpy."""
    rng = np.random.default_rng(seed)
    return [
        (
            rng.standard_normal((batch_size, size, size, 1)).astype(np.float32),
            rng.integers(0, NUM_CLASSES, batch_size).astype(np.int32),
        )
        for _ in range(n)
    ]


def make_tx():
    import optax

    return optax.adamw(**ADAMW)


def loss_fn(logits, labels):
    import optax

    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def create_seed(dtype: str = "float32", seed: int = 0):
    import fcn_jax

    return fcn_jax.create_model(
        "seed", num_classes=NUM_CLASSES, in_channels=1, spatial_dims=2, seed=seed, dtype=dtype
    )


# ----------------------------------------------------------------------------- runners


class Runner:
    """A compiled training step with its own state and device-resident batches.

    ``run(n)`` does ``n`` steps (cycling through the batches), blocks once at the end and
    returns the seconds taken. ``compile_seconds`` and ``first_loss`` come from the first
    step, done at construction.
    """

    def __init__(self, step: Callable, state, batches: list, batch_size: int, per_call: int = 1):
        self.step, self.state, self.batches = step, state, batches
        self.images_per_call = batch_size * per_call
        start = time.perf_counter()
        self.state, loss = step(self.state, *batches[0])
        self.first_loss = float(np.asarray(loss).reshape(-1)[0])
        self.compile_seconds = time.perf_counter() - start

    def run(self, n: int) -> float:
        import jax

        start = time.perf_counter()
        loss = None
        for i in range(n):
            self.state, loss = self.step(self.state, *self.batches[i % len(self.batches)])
        jax.block_until_ready(loss)
        return time.perf_counter() - start


def device_batches(batches: list) -> list:
    import jax.numpy as jnp

    return [(jnp.asarray(x), jnp.asarray(y)) for x, y in batches]


def pure_step(graphdef, tx, forward=None) -> Callable:
    """``step((params, opt_state), x, y) -> ((params, opt_state), loss)`` over split state."""
    import jax
    import optax
    from flax import nnx

    forward = forward or (lambda params, x: nnx.merge(graphdef, params)(x))

    def step(state, x, y):
        params, opt_state = state
        loss, grads = jax.value_and_grad(lambda p: loss_fn(forward(p, x), y))(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), loss

    return step


def chunked_step(graphdef, tx, chunks: int) -> Callable:
    """The pure step with the batch cut into ``chunks`` equal parts whose gradients are summed
    (a Python loop, unrolled under jit): the same mean loss and gradient, smaller activations."""
    import jax
    import optax
    from flax import nnx

    def chunk_loss(params, x, y):
        return loss_fn(nnx.merge(graphdef, params)(x), y) / chunks

    def step(state, x, y):
        params, opt_state = state
        xs, ys = x.reshape(chunks, -1, *x.shape[1:]), y.reshape(chunks, -1)
        loss, grads = jax.value_and_grad(chunk_loss)(params, xs[0], ys[0])
        for i in range(1, chunks):
            more, g = jax.value_and_grad(chunk_loss)(params, xs[i], ys[i])
            loss, grads = loss + more, jax.tree.map(jax.numpy.add, grads, g)
        updates, opt_state = tx.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), loss

    return step


def chunked_runner(model, batches, batch_size, chunks: int) -> Runner:
    import jax
    from flax import nnx

    graphdef, params = nnx.split(model)
    params = jax.tree.map(lambda a: a.copy(), params)
    tx = make_tx()
    step = jax.jit(chunked_step(graphdef, tx, chunks), donate_argnums=(0,))
    return Runner(step, (params, tx.init(params)), device_batches(batches), batch_size)


def jit_runner(model, batches, batch_size, *, donate=True, forward=None) -> Runner:
    """The pure step over ``nnx.split(model)`` under ``jax.jit`` (the default variant)."""
    import jax
    from flax import nnx

    graphdef, params = nnx.split(model)
    tx = make_tx()
    params = jax.tree.map(lambda a: a.copy(), params)  # donation must not delete model arrays
    step = pure_step(graphdef, tx, forward)
    step = jax.jit(step, donate_argnums=(0,) if donate else ())
    return Runner(step, (params, tx.init(params)), device_batches(batches), batch_size)


def nnx_runner(model, batches, batch_size) -> Runner:
    """``nnx.jit`` over the module and an ``nnx.Optimizer`` (the tutorial style)."""
    from flax import nnx

    model = copied(model)
    optimizer = nnx.Optimizer(model, make_tx(), wrt=nnx.Param)

    @nnx.jit
    def train(model, optimizer, x, y):
        loss, grads = nnx.value_and_grad(lambda m: loss_fn(m(x), y))(model)
        optimizer.update(model, grads)
        return loss

    def step(state, x, y):
        return state, train(model, optimizer, x, y)

    return Runner(step, None, device_batches(batches), batch_size)


def project_step_runner(model, batches, batch_size) -> Runner:
    """``fcn_jax.steps.train_step`` (the training loop's step, with its non-finite guard)."""
    import jax

    from fcn_jax import steps

    tx = make_tx()
    graphdef, state = steps.init_state(copied(model), tx)
    fn = functools.partial(
        steps.train_step, graphdef=graphdef, tx=tx, label_smoothing=0.0, use_sizes=False
    )
    jitted = jax.jit(fn, donate_argnums=(0,))

    def step(state, x, y):
        state, metrics = jitted(state, {"image": x, "label": y, "sizes": None})
        return state, metrics["loss"]

    return Runner(step, state, device_batches(batches), batch_size)


def copied(model):
    """The model with its own copies of every array (donating one must not delete another's)."""
    import jax
    from flax import nnx

    graphdef, state = nnx.split(model)
    return nnx.merge(graphdef, jax.tree.map(lambda a: a.copy(), state))


def scan_runner(model, batches, batch_size, per_call: int = 4) -> Runner:
    """``per_call`` steps per dispatch with ``lax.scan`` over stacked batches."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    graphdef, params = nnx.split(model)
    params = jax.tree.map(lambda a: a.copy(), params)
    tx = make_tx()
    one = pure_step(graphdef, tx)

    @functools.partial(jax.jit, donate_argnums=(0,))
    def step(state, xs, ys):
        state, losses = jax.lax.scan(lambda s, b: one(s, *b), state, (xs, ys))
        return state, losses

    stacked = [
        tuple(jnp.stack([jnp.asarray(b[k]) for b in batches[i : i + per_call]]) for k in (0, 1))
        for i in range(0, len(batches), per_call)
    ]
    return Runner(step, (params, tx.init(params)), stacked, batch_size, per_call)


# ----------------------------------------------------------------------------- conv variants


def _pad_even(x, lo=1):
    """Pad (B, H, W, C) by ``lo`` in front and enough behind for a k4 s2 conv (2m + 2)."""
    import jax.numpy as jnp

    _, h, w, _ = x.shape
    mh, mw = (h - 2) // 2 + 1, (w - 2) // 2 + 1
    return jnp.pad(x, ((0, 0), (lo, 2 * mh + 1 - h), (lo, 2 * mw + 1 - w), (0, 0))), mh, mw


def conv_lax(x, w, stride, pad):
    from jax import lax

    dims = ("NHWC", "HWIO", "NHWC")
    return lax.conv_general_dilated(x, w, (stride,) * 2, [pad] * 2, dimension_numbers=dims)


def conv_lax_nchw(x, w, stride, pad):
    from jax import lax

    y = lax.conv_general_dilated(
        x.transpose(0, 3, 1, 2),
        w,
        (stride,) * 2,
        [pad] * 2,
        dimension_numbers=("NCHW", "HWIO", "NCHW"),
    )
    return y.transpose(0, 2, 3, 1)


def conv_space_to_depth(x, w, stride, pad):
    """k4 s2 p1 conv = space-to-depth (H, W, C) → (H/2, W/2, 4C), then a 2×2 stride-1 conv."""
    from jax import lax

    if stride == 1:
        return conv_lax(x, w, stride, pad)
    xp, mh, mw = _pad_even(x)
    b, c, o = x.shape[0], x.shape[-1], w.shape[-1]
    xs = xp.reshape(b, mh + 1, 2, mw + 1, 2, c).transpose(0, 1, 3, 2, 4, 5)
    xs = xs.reshape(b, mh + 1, mw + 1, 4 * c)
    k = w.reshape(2, 2, 2, 2, c, o).transpose(0, 2, 1, 3, 4, 5).reshape(2, 2, 4 * c, o)
    return lax.conv_general_dilated(
        xs, k, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )


def conv_im2col(x, w, stride, pad):
    """k4 s2 p1 conv as 16 strided slices concatenated (patches) times the flat kernel."""
    import jax.numpy as jnp

    if stride == 1:
        return conv_lax(x, w, stride, pad)
    xp, mh, mw = _pad_even(x)
    cols = [xp[:, i : i + 2 * mh : 2, j : j + 2 * mw : 2] for i in range(4) for j in range(4)]
    return jnp.concatenate(cols, axis=-1) @ w.reshape(-1, w.shape[-1])


def conv_strided_vjp(x, w, stride, pad):
    from fcn_jax.models.layers import strided_conv

    if stride == 1:
        return conv_lax(x, w, stride, pad)
    return strided_conv(x, w, (stride, stride), (pad, pad))


CONV_VARIANTS = {
    "lax NHWC (autodiff)": conv_lax,
    "lax NCHW (autodiff)": conv_lax_nchw,
    "space-to-depth + 2x2 conv": conv_space_to_depth,
    "im2col + dot": conv_im2col,
    "strided_conv (custom vjp)": conv_strided_vjp,
}


def seed_params(model) -> list:
    """[(kernel, bias)] of the body convs and the head, copied out of the model."""
    return [(layer.conv.kernel[...], layer.conv.bias[...]) for layer in (*model.body, model.head)]


def seed_forward(params, x, conv: Callable):
    """The ``seed`` FCN on fixed-size batches (no masking): convs, ReLU, 1×1 head, mean."""
    import jax

    for w, b in params[:-1]:
        x = jax.nn.relu(conv(x, w, 2, (1, 1)) + b)
    w, b = params[-1]
    return (conv(x, w, 1, (0, 0)) + b).mean((1, 2))


def conv_runner(model, batches, batch_size, conv: Callable) -> Runner:
    import jax

    params = jax.tree.map(lambda a: a.copy(), seed_params(model))
    tx = make_tx()
    step = jax.jit(pure_step(None, tx, lambda p, x: seed_forward(p, x, conv)), donate_argnums=(0,))
    return Runner(step, (params, tx.init(params)), device_batches(batches), batch_size)


def conv_gradient_errors(model, batch) -> dict[str, float]:
    """Max relative difference of each conv variant's loss gradient from ``lax`` autodiff."""
    import jax
    import jax.numpy as jnp

    params, (x, y) = seed_params(model), (jnp.asarray(batch[0]), jnp.asarray(batch[1]))

    def grads(conv):
        return jax.jit(jax.grad(lambda p: loss_fn(seed_forward(p, x, conv), y)))(params)

    ref = jax.tree.leaves(grads(conv_lax))
    out = {}
    for name, conv in CONV_VARIANTS.items():
        got = jax.tree.leaves(grads(conv))
        out[name] = max(float(jnp.abs(a - b).max() / jnp.abs(b).max()) for a, b in zip(got, ref))
    return out


# ----------------------------------------------------------------------------- timing


def time_interleaved(runners: dict[str, Runner], steps: int, repeats: int) -> dict[str, float]:
    """Median images/second of each runner; one warm-up window, then ``repeats`` rounds."""
    names = list(runners)
    for name in names:
        runners[name].run(max(1, steps // 4))
    rates: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        for name in names if r % 2 == 0 else names[::-1]:
            runner = runners[name]
            rates[name].append(steps * runner.images_per_call / runner.run(steps))
    return {name: float(np.median(v)) for name, v in rates.items()}


def rows_for(group: str, size: int, batch_size: int, runners: dict, rates: dict) -> list[dict]:
    return [
        {
            "group": group,
            "variant": name,
            "size": size,
            "batch_size": batch_size,
            "images_per_s": rates[name],
            "compile_s": runners[name].compile_seconds,
            "first_loss": runners[name].first_loss,
        }
        for name in runners
    ]


def group_runners(group: str, size: int, batch_size: int) -> list[tuple[int, dict]]:
    """[(batch_size, {variant: Runner})] for an in-process group at one image size."""
    model = create_seed()
    batches = make_batches(size, batch_size)
    if group == "step":
        return [
            (
                batch_size,
                {
                    "nnx.jit + nnx.Optimizer": nnx_runner(model, batches, batch_size),
                    "jax.jit(split), no donation": jit_runner(
                        model, batches, batch_size, donate=False
                    ),
                    "jax.jit(split) + donate": jit_runner(model, batches, batch_size),
                    "fcn_jax.steps.train_step": project_step_runner(model, batches, batch_size),
                },
            )
        ]
    if group == "chunks":
        return [
            (
                batch_size,
                {
                    f"{k} chunk(s) of {batch_size // k}": chunked_runner(
                        model, batches, batch_size, k
                    )
                    for k in (1, 4, 8)
                },
            )
        ]
    if group == "scan":
        return [
            (
                batch_size,
                {
                    "jax.jit(split) + donate": jit_runner(model, batches, batch_size),
                    "lax.scan, 4 steps per call": scan_runner(model, batches, batch_size),
                },
            )
        ]
    if group == "conv":
        return [
            (
                batch_size,
                {n: conv_runner(model, batches, batch_size, c) for n, c in CONV_VARIANTS.items()},
            )
        ]
    if group == "dtype":
        return [
            (
                batch_size,
                {
                    "float32": jit_runner(model, batches, batch_size),
                    "bfloat16 compute": jit_runner(create_seed("bfloat16"), batches, batch_size),
                },
            )
        ]
    if group == "batch":
        runners = {}
        for b in (32, 128, 256):
            runners[f"batch {b}"] = jit_runner(model, make_batches(size, b), b)
        return [(0, runners)]
    raise ValueError(f"unknown group {group!r}")


def run_group(group: str, sizes, batch_size: int, steps: int, repeats: int) -> list[dict]:
    rows = []
    for size in sizes:
        for b, runners in group_runners(group, size, batch_size):
            rates = time_interleaved(runners, steps, repeats)
            for row in rows_for(group, size, b, runners, rates):
                if group == "batch":
                    row["batch_size"] = int(row["variant"].split()[-1])
                rows.append(row)
    return rows


# ----------------------------------------------------------------------------- child processes


def child_env(flags: str = "", one_core: bool = False) -> dict:
    env = dict(os.environ)
    env["XLA_FLAGS"] = flags
    env["CONV_SPEED_ONE_CORE"] = "1" if one_core else ""
    return env


def worker(sizes, batch_size: int, steps: int, repeats: int) -> None:
    """Child process: time the default step at each size, print one JSON line."""
    out = {}
    for size in sizes:
        runner = jit_runner(create_seed(), make_batches(size, batch_size), batch_size)
        rate = time_interleaved({"step": runner}, steps, repeats)["step"]
        out[str(size)] = {"images_per_s": rate, "compile_s": runner.compile_seconds}
    print(json.dumps(out), flush=True)


def run_children(configs: dict[str, dict], sizes, batch_size, steps, repeats, group) -> list[dict]:
    """Each config's child once per round (configs take turns); medians over rounds."""
    args = [sys.executable, "-m", "benchmarks.conv_speed", "--worker"]
    args += ["--sizes", ",".join(map(str, sizes)), "--batch_size", str(batch_size)]
    args += ["--steps", str(steps), "--repeats", "3"]
    results: dict[str, list[dict]] = {name: [] for name in configs}
    for _ in range(repeats):
        for name, env in configs.items():
            proc = subprocess.run(args, env=env, capture_output=True, text=True, check=False)
            lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
            if proc.returncode or not lines:
                results[name].append({"error": proc.stderr.strip().splitlines()[-1:]})
                continue
            results[name].append(json.loads(lines[-1]))
    return [
        child_row(group, name, size, batch_size, results[name])
        for size in sizes
        for name in configs
    ]


def child_row(group, name, size, batch_size, runs: list[dict]) -> dict:
    ok = [r[str(size)] for r in runs if str(size) in r]
    row = {"group": group, "variant": name, "size": size, "batch_size": batch_size}
    if not ok:
        return {**row, "skipped": str(runs[0].get("error")) if runs else "no result"}
    row["images_per_s"] = float(np.median([r["images_per_s"] for r in ok]))
    row["compile_s"] = float(np.median([r["compile_s"] for r in ok]))
    return row


def process_configs(group: str) -> dict[str, dict]:
    if group == "flags":
        return {name: child_env(flags) for name, flags in FLAG_VARIANTS.items()}
    if group == "threads":
        return {"2 cores (default)": child_env(), "1 core (affinity)": child_env(one_core=True)}
    raise ValueError(f"unknown group {group!r}")


# ----------------------------------------------------------------------------- entry point


def run(
    sizes=(28, 64), batch_size=128, steps=10, repeats=5, groups=None, quick=False
) -> list[dict]:
    """All rows of the chosen groups (default: all). ``quick`` shortens every measurement."""
    if quick:
        steps, repeats = max(2, steps // 3), 3
    groups = groups or ["step", "conv", "dtype", "batch", "chunks", "flags", "threads"]
    rows = []
    for group in groups:
        if group in ("flags", "threads"):
            rows += run_children(process_configs(group), sizes, batch_size, steps, repeats, group)
        else:
            rows += run_group(group, sizes, batch_size, steps, repeats)
        print_rows([r for r in rows if r["group"] == group])
    return rows


def print_rows(rows: list[dict]) -> None:
    print(f"{'group':8s} {'variant':32s} {'size':>5s} {'batch':>5s} {'img/s':>8s} {'compile':>8s}")
    for r in rows:
        if "skipped" in r:
            head = f"{r['group']:8s} {r['variant']:32s} {r['size']:5d} {r['batch_size']:5d}"
            print(f"{head} skipped: {r['skipped']}")
            continue
        print(
            f"{r['group']:8s} {r['variant']:32s} {r['size']:5d} {r['batch_size']:5d} "
            f"{r['images_per_s']:8.0f} {r['compile_s']:7.2f}s"
        )
    print(flush=True)


def print_gradient_check(size: int = 28) -> None:
    errors = conv_gradient_errors(create_seed(), make_batches(size, 32, n=1)[0])
    print(f"gradient vs lax autodiff at {size}x{size} (max relative difference):")
    for name, err in errors.items():
        print(f"  {name:32s} {err:.1e}")
    print()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="28,64")
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--groups", default="step,conv,dtype,batch,chunks,flags,threads")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    if args.worker:
        worker(sizes, args.batch_size, args.steps, args.repeats)
        return
    groups = args.groups.split(",")
    if "conv" in groups:
        print_gradient_check()
    run(sizes, args.batch_size, args.steps, args.repeats, groups, args.quick)


if os.environ.get("CONV_SPEED_ONE_CORE"):
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})

if __name__ == "__main__":
    main()
