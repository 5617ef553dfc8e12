"""Training images/second of the ``seed`` FCN in JAX and in PyTorch eager, on the same batches.

    python -m benchmarks.torch_compare [--sizes 28,64] [--batch_sizes 128,32] [--steps 10]
        [--repeats 5] [--quick] [--device cpu|cuda] [--conv_grad auto|custom|autodiff]

Both sides train the same network (Conv2d(1,32,4,2,1) ReLU, Conv2d(32,64,4,2,1) ReLU,
Conv2d(64,128,4,2,1) ReLU, Conv2d(128,10,1), mean over H, W) with AdamW (lr 3e-3, weight decay
1e-4, eps 1e-8) on the same numpy batches. JAX is the project's model in a pure ``jax.jit``
step over ``nnx.split`` state with donated buffers; PyTorch runs eager (no ``torch.compile``)
with its default thread count and, as a second column, with 1 thread. A last column times
the JAX step with the batch cut into 4 chunks whose gradients are summed (same mean loss and
gradient; smaller activations stay in cache). After one warm-up step
(JAX's compile time is reported apart) the sides take turns, ``--repeats`` windows of
``--steps`` steps each, one host sync per window; the table gives medians. Before timing, the
PyTorch initial weights are copied into the JAX model (OIHW → HWIO) and the losses of the
first two steps are compared (relative 1e-4). Needs the ``bench`` extra (``torch``); without it
every row says ``skipped: torch not installed``.
"""

from __future__ import annotations

import argparse
import time

from benchmarks.conv_speed import (
    ADAMW,
    chunked_runner,
    create_seed,
    jit_runner,
    make_batches,
    time_interleaved,
)
from fcn_jax.models.layers import set_conv_grad

RTOL = 1e-4
CHUNKS = 4  # the chunked JAX step: gradients of 4 quarter batches summed (same math)


def torch_available() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def torch_seed_model(seed: int = 0):
    import torch
    from torch import nn

    torch.manual_seed(seed)

    class Seed(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(
                nn.Conv2d(1, 32, 4, 2, 1),
                nn.ReLU(),
                nn.Conv2d(32, 64, 4, 2, 1),
                nn.ReLU(),
                nn.Conv2d(64, 128, 4, 2, 1),
                nn.ReLU(),
                nn.Conv2d(128, 10, 1),
            )

        def forward(self, x):
            return self.body(x).mean((2, 3))

    return Seed()


class TorchRunner:
    """Eager PyTorch training with AdamW; same interface as ``conv_speed.Runner``."""

    def __init__(
        self, batches: list, batch_size: int, threads: int | None = None, model=None, device="cpu"
    ):
        import torch

        self.threads = threads or torch.get_num_threads()
        self.model = (model or torch_seed_model()).to(device)
        self.opt = torch.optim.AdamW(
            self.model.parameters(),
            lr=ADAMW["learning_rate"],
            betas=(ADAMW["b1"], ADAMW["b2"]),
            eps=ADAMW["eps"],
            weight_decay=ADAMW["weight_decay"],
        )
        # NHWC numpy → NCHW tensors once, outside the timed steps (as JAX's device_put).
        self.batches = [
            (
                torch.from_numpy(x).permute(0, 3, 1, 2).contiguous().to(device),
                torch.from_numpy(y).long().to(device),
            )
            for x, y in batches
        ]
        self.images_per_call = batch_size
        start = time.perf_counter()
        self.first_loss = self.step(*self.batches[0])
        self.compile_seconds = time.perf_counter() - start

    def step(self, x, y):
        import torch

        with self.threads_set():
            self.opt.zero_grad(set_to_none=True)
            loss = torch.nn.functional.cross_entropy(self.model(x), y)
            loss.backward()
            self.opt.step()
        return loss.detach()

    def threads_set(self):
        return _Threads(self.threads)

    def run(self, n: int) -> float:
        start = time.perf_counter()
        loss = None
        with self.threads_set():
            for i in range(n):
                loss = self.step(*self.batches[i % len(self.batches)])
            float(loss)
        return time.perf_counter() - start


class _Threads:
    """Context manager setting ``torch.set_num_threads`` and restoring it."""

    def __init__(self, n: int):
        self.n = n

    def __enter__(self):
        import torch

        self.before = torch.get_num_threads()
        if self.n != self.before:
            torch.set_num_threads(self.n)

    def __exit__(self, *exc):
        import torch

        if torch.get_num_threads() != self.before:
            torch.set_num_threads(self.before)


def jax_model_from_torch(torch_model):
    """The project's ``seed`` FCN holding ``torch_model``'s weights (OIHW → HWIO)."""
    import jax.numpy as jnp

    model = create_seed()
    convs = [m for m in torch_model.body if m.__class__.__name__ == "Conv2d"]
    for layer, conv in zip((*model.body, model.head), convs):
        layer.conv.kernel[...] = jnp.asarray(conv.weight.detach().numpy().transpose(2, 3, 1, 0))
        layer.conv.bias[...] = jnp.asarray(conv.bias.detach().numpy())
    return model


def check_same_math(batches: list, batch_size: int, device: str = "cpu") -> dict:
    """Losses of the first two steps from the same initial weights on both sides."""
    torch_model = torch_seed_model()
    jax_model = jax_model_from_torch(torch_model)  # copy before PyTorch trains
    tr = TorchRunner(batches[:2], batch_size, model=torch_model, device=device)
    jr = jit_runner(jax_model, batches[:2], batch_size)
    torch_losses = [float(tr.first_loss), float(tr.step(*tr.batches[1]))]
    jr.state, loss = jr.step(jr.state, *jr.batches[1])
    jax_losses = [jr.first_loss, float(loss)]
    rel = max(abs(a - b) / abs(b) for a, b in zip(jax_losses, torch_losses))
    return {"jax_losses": jax_losses, "torch_losses": torch_losses, "max_rel": rel}


def compare(size: int, batch_size: int, steps: int, repeats: int, device: str = "cpu") -> dict:
    """JAX against PyTorch eager on ``device`` (cpu or cuda; on cuda, thread counts do not
    apply and the 1-thread column repeats the default one)."""
    batches = make_batches(size, batch_size)
    check = check_same_math(batches, batch_size, device)
    runners = {
        "jax": jit_runner(create_seed(), batches, batch_size),
        "jax_chunked": chunked_runner(create_seed(), batches, batch_size, CHUNKS),
        "torch": TorchRunner(batches, batch_size, device=device),
    }
    if device == "cpu":
        runners["torch_1thread"] = TorchRunner(batches, batch_size, threads=1)
    rates = time_interleaved(runners, steps, repeats)
    rates.setdefault("torch_1thread", rates["torch"])
    best_torch = max(rates["torch"], rates["torch_1thread"])
    return {
        "size": size,
        "batch_size": batch_size,
        "jax_images_per_s": rates["jax"],
        "torch_images_per_s": rates["torch"],
        "torch_threads": runners["torch"].threads,
        "torch_1thread_images_per_s": rates["torch_1thread"],
        "ratio": rates["jax"] / rates["torch"],
        "ratio_vs_best_torch": rates["jax"] / best_torch,
        "jax_compile_s": runners["jax"].compile_seconds,
        "jax_chunked_images_per_s": rates["jax_chunked"],
        "ratio_chunked": rates["jax_chunked"] / rates["torch"],
        "first_losses_max_rel": check["max_rel"],
        "same_math": check["max_rel"] < RTOL,
    }


def run(
    sizes=(28, 64),
    batch_size=128,
    steps=10,
    quick=False,
    repeats=5,
    batch_sizes=None,
    device="cpu",
):
    """One row per (size, batch size); ``batch_sizes`` overrides ``batch_size``."""
    batch_sizes = list(batch_sizes or [batch_size])
    if quick:
        steps, repeats = max(2, steps // 3), 3
    if not torch_available():
        return [
            {"size": s, "batch_size": b, "skipped": "torch not installed"}
            for s in sizes
            for b in batch_sizes
        ]
    return [compare(s, b, steps, repeats, device) for b in batch_sizes for s in sizes]


def print_table(rows: list[dict]) -> None:
    print(
        f"{'size':>5s} {'batch':>5s} {'JAX img/s':>10s} {'torch img/s':>12s} {'JAX/torch':>9s} "
        f"{'torch 1thr':>10s} {'JAX/best':>8s} {'compile':>8s} {'loss rel':>9s} "
        f"{'JAX chunked':>11s} {'chunked/torch':>13s}"
    )
    for r in rows:
        if "skipped" in r:
            print(f"{r['size']:5d} {r['batch_size']:5d} skipped: {r['skipped']}")
            continue
        print(
            f"{r['size']:5d} {r['batch_size']:5d} {r['jax_images_per_s']:10.0f} "
            f"{r['torch_images_per_s']:12.0f} {r['ratio']:8.2f}x "
            f"{r['torch_1thread_images_per_s']:10.0f} {r['ratio_vs_best_torch']:7.2f}x "
            f"{r['jax_compile_s']:7.2f}s {r['first_losses_max_rel']:9.1e} "
            f"{r['jax_chunked_images_per_s']:11.0f} {r['ratio_chunked']:12.2f}x"
        )


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="28,64")
    parser.add_argument("--batch_sizes", default="128")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--device", default="cpu", help="PyTorch device: cpu or cuda")
    parser.add_argument("--conv_grad", default="auto", help="JAX: auto, custom or autodiff")
    args = parser.parse_args(argv)
    set_conv_grad(args.conv_grad)
    rows = run(
        device=args.device,
        sizes=[int(s) for s in args.sizes.split(",")],
        steps=args.steps,
        quick=args.quick,
        repeats=args.repeats,
        batch_sizes=[int(b) for b in args.batch_sizes.split(",")],
    )
    print_table(rows)
    for r in rows:
        if "skipped" not in r and not r["same_math"]:
            raise SystemExit(
                f"first-step losses differ at {r['size']}: {r['first_losses_max_rel']}"
            )


if __name__ == "__main__":
    main()
