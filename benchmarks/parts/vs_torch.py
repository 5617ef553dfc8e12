"""Part 4 (and ``python -m benchmarks.torch_compare``): training images/s of the ``seed`` FCN
in JAX (the training loop's compiled step) and in PyTorch eager (no ``torch.compile``; its
default threads and, on the CPU, 1 thread), on the same batches from the same weights, with
AdamW alike; the first two losses must agree. Without ``torch`` the results say skipped.
"""

from __future__ import annotations

import importlib.util
import time

import numpy as np

from benchmarks.common import Row, StepRunner, seed_config, time_interleaved
from benchmarks.parts import Settings
from fcn_jax.setup import build

PART = "4 vs PyTorch"
RTOL = 1e-4
HELD_BATCHES = 4


class TorchRunner:
    """Eager PyTorch training, from the JAX ``model``'s weights (HWIO → OIHW), on loader
    ``batches`` with ``threads`` CPU threads (default: PyTorch's); as ``common.StepRunner``,
    ``losses`` of the first two steps (done at construction) and ``run(n) -> examples/s``."""

    def __init__(self, model, batches: list[dict], config, threads=None, device="cpu"):
        import torch
        from torch import nn

        convs = [nn.Conv2d(1, 32, 4, 2, 1), nn.Conv2d(32, 64, 4, 2, 1)]
        convs += [nn.Conv2d(64, 128, 4, 2, 1), nn.Conv2d(128, 10, 1)]
        for conv, layer in zip(convs, (*model.body, model.head)):
            conv.weight.data = torch.tensor(np.array(layer.conv.kernel[...]).transpose(3, 2, 0, 1))
            conv.bias.data = torch.tensor(np.array(layer.conv.bias[...]))
        self.model = nn.Sequential(*[m for c in convs for m in (c, nn.ReLU())][:-1]).to(device)
        lr, decay = config.learning_rate, config.weight_decay
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=lr, weight_decay=decay)
        self.threads = threads or torch.get_num_threads()
        # NHWC → NCHW tensors once, outside the timed steps (as the JAX batches).
        images = [torch.tensor(np.array(b["image"])).permute(0, 3, 1, 2) for b in batches]
        labels = [torch.tensor(np.array(b["label"])).long() for b in batches]
        self.batches = [(x.contiguous().to(device), y.to(device)) for x, y in zip(images, labels)]
        self.losses = self._steps(2)[1]

    def _steps(self, n: int) -> tuple[float, list[float]]:
        """``n`` steps with this runner's thread count: their seconds (waiting for the device
        at the end) and losses."""
        import torch

        before, losses = torch.get_num_threads(), []
        torch.set_num_threads(self.threads)
        start = time.perf_counter()
        for i in range(n):
            x, y = self.batches[i % len(self.batches)]
            self.opt.zero_grad(set_to_none=True)
            loss = torch.nn.functional.cross_entropy(self.model(x).mean((2, 3)), y)
            loss.backward()
            self.opt.step()
            losses.append(loss.detach())
        losses = [float(v) for v in losses]  # waits for the device
        torch.set_num_threads(before)
        return time.perf_counter() - start, losses

    def run(self, n: int) -> float:
        return n * len(self.batches[0][1]) / self._steps(n)[0]


def compare(size: int, batch_size: int, steps: int, repeats: int, device="cpu", **config) -> dict:
    """JAX against PyTorch eager on ``device`` (cpu or cuda; on cuda thread counts do not
    apply and the 1-thread column repeats the default one). ``config``: TrainConfig fields."""
    setup = build(seed_config(train_size=f"fixed:{size}", batch_size=batch_size, **config))
    batches = [next(setup.loader) for _ in range(HELD_BATCHES)]
    torch_kw = dict(model=setup.model, batches=batches, config=setup.config)
    runners = {"torch": TorchRunner(**torch_kw, device=device)}  # before JAX donates the weights
    if device == "cpu":
        runners["torch_1thread"] = TorchRunner(**torch_kw, threads=1)
    runners["jax"] = StepRunner(setup, batches)
    runs = {name: (lambda r=r: r.run(steps)) for name, r in runners.items()}  # 1 warm-up round
    rates = {k: float(np.median(v[1:])) for k, v in time_interleaved(runs, repeats + 1).items()}
    rates.setdefault("torch_1thread", rates["torch"])
    pairs = zip(runners["jax"].losses, runners["torch"].losses)
    rel = max(abs(a - b) / abs(b) for a, b in pairs)
    return {
        "size": size,
        "batch_size": batch_size,
        "jax_images_per_s": rates["jax"],
        "torch_images_per_s": rates["torch"],
        "torch_threads": runners["torch"].threads,
        "torch_1thread_images_per_s": rates["torch_1thread"],
        "ratio": rates["jax"] / rates["torch"],
        "ratio_vs_best_torch": rates["jax"] / max(rates["torch"], rates["torch_1thread"]),
        "jax_compile_s": setup.train_step.compile_seconds,
        "first_losses_max_rel": rel,
        "same_math": rel < RTOL,
    }


def run(sizes=(28, 64), batch_sizes=(128,), steps=10, repeats=5, quick=False, **kw) -> list:
    """One result per (batch size, size); ``kw``: ``compare``'s device and config fields."""
    if quick:
        steps, repeats = max(2, steps // 3), 3
    skip = None if importlib.util.find_spec("torch") else {"skipped": "torch not installed"}
    return [
        {"size": s, "batch_size": b, **skip} if skip else compare(s, b, steps, repeats, **kw)
        for b in batch_sizes
        for s in sizes
    ]


def torch_rows(r: dict) -> list[Row]:
    """One ``run`` result → two rows: JAX against PyTorch with its default threads, and
    against PyTorch's faster setting (default or 1 thread). Skipped: no value."""
    size = f"{r['size']}x{r['size']}"
    names = (
        f"JAX ÷ PyTorch eager images/s, {size}",
        f"JAX ÷ best PyTorch eager images/s, {size}",
    )
    if "skipped" in r:
        return [Row(PART, name, None, "×", ">= 1.0", f"skipped: {r['skipped']}") for name in names]
    agree = "agree" if r["same_math"] else "DIFFER"
    torch = f"{r['torch_images_per_s']:,.0f} img/s ({r['torch_threads']} threads)"
    default = (
        f"batch {r['batch_size']}: JAX {r['jax_images_per_s']:,.0f} vs PyTorch {torch}; JAX "
        f"compile {r['jax_compile_s']:.1f} s; first losses {agree} "
        f"(rel {r['first_losses_max_rel']:.0e})"
    )
    best = f"PyTorch 1 thread {r['torch_1thread_images_per_s']:,.0f} img/s, {torch}"
    return [
        Row(PART, names[0], r["ratio"], "×", ">= 1.0", default),
        Row(PART, names[1], r["ratio_vs_best_torch"], "×", ">= 1.0", best),
    ]


def rows(s: Settings) -> list[Row]:
    config = dict(dataset=s.fixed28, data_dir=s.data_dir)
    results = run(s.torch_sizes, (s.torch_batch,), s.torch_steps, quick=s.level != "full", **config)
    return [row for r in results for row in torch_rows(r)]
