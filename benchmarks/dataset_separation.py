"""Does `procedural_digits/fixed28` separate models? Linear softmax regression vs the `seed` FCN.

A useful benchmark dataset must be clearly harder for a linear classifier on raw pixels than for
a small convolutional network. This trains both on the same split and prints test accuracies.

Run (builds the dataset into the TFDS data dir first if needed)::

    python -m benchmarks.dataset_separation [--data-dir DIR] [--config fixed28]
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import fcn_jax
from fcn_jax.data import procedural_digits


def load(name: str, data_dir: str | None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Returns {split: (images float32 (N, 28, 28, 1) in [0, 1], labels int32 (N,))}."""
    builder = procedural_digits.prepare(name, data_dir)
    out = {}
    for split in ("train", "test"):
        ds = builder.as_data_source(split)
        exs = [ds[i] for i in range(len(ds))]
        x = np.stack([e["image"] for e in exs]).astype(np.float32) / 255.0
        out[split] = (x, np.array([e["label"] for e in exs], np.int32))
    return out


def _batches(rng: np.random.Generator, n: int, batch: int):
    perm = rng.permutation(n)
    for i in range(0, n - batch + 1, batch):  # drop the ragged tail: one compiled shape
        yield perm[i : i + batch]


def _accuracy(predict, x: np.ndarray, y: np.ndarray, batch: int = 1000) -> float:
    correct = sum(
        int((np.asarray(predict(x[i : i + batch])).argmax(-1) == y[i : i + batch]).sum())
        for i in range(0, len(x), batch)
    )
    return correct / len(x)


def train_linear(data, epochs: int = 20, batch: int = 128, lr: float = 1e-2) -> float:
    """Softmax regression on flattened, standardized pixels; returns test accuracy."""
    (xtr, ytr), (xte, yte) = data["train"], data["test"]
    xtr, xte = xtr.reshape(len(xtr), -1), xte.reshape(len(xte), -1)
    mean, std = xtr.mean(0), xtr.std(0) + 1e-3
    xtr, xte = (xtr - mean) / std, (xte - mean) / std
    params = {"w": jnp.zeros((xtr.shape[1], 10)), "b": jnp.zeros(10)}
    tx = optax.adam(lr)
    opt_state = tx.init(params)

    def logits(p, x):
        return x @ p["w"] + p["b"]

    @jax.jit
    def step(p, s, x, y):
        loss, g = jax.value_and_grad(
            lambda p: optax.softmax_cross_entropy_with_integer_labels(logits(p, x), y).mean()
        )(p)
        updates, s = tx.update(g, s, p)
        return optax.apply_updates(p, updates), s, loss

    rng = np.random.default_rng(0)
    for _ in range(epochs):
        for idx in _batches(rng, len(xtr), batch):
            params, opt_state, _ = step(params, opt_state, xtr[idx], ytr[idx])
    return _accuracy(jax.jit(lambda x: logits(params, x)), xte, yte)


def train_fcn(data, epochs: int = 2, batch: int = 128, lr: float = 1e-3) -> float:
    """The `seed` FCN trained with Adam; returns test accuracy."""
    (xtr, ytr), (xte, yte) = data["train"], data["test"]
    model = fcn_jax.create_model("seed", num_classes=10, in_channels=1, spatial_dims=2, seed=0)
    optimizer = nnx.Optimizer(model, optax.adam(lr), wrt=nnx.Param)

    @nnx.jit
    def step(model, optimizer, x, y):
        def loss_fn(model):
            return optax.softmax_cross_entropy_with_integer_labels(model(x), y).mean()

        loss, grads = nnx.value_and_grad(loss_fn)(model)
        optimizer.update(model, grads)
        return loss

    rng = np.random.default_rng(0)
    for _ in range(epochs):
        for idx in _batches(rng, len(xtr), batch):
            step(model, optimizer, xtr[idx], ytr[idx])
    predict = nnx.jit(lambda model, x: model(x))
    return _accuracy(lambda x: predict(model, x), xte, yte)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None, help="TFDS data dir (default: TFDS's)")
    parser.add_argument("--config", default="fixed28", help="procedural_digits config")
    parser.add_argument("--linear-epochs", type=int, default=20)
    parser.add_argument("--fcn-epochs", type=int, default=2)
    args = parser.parse_args()

    data = load(f"procedural_digits/{args.config}", args.data_dir)
    n_train, n_test = len(data["train"][1]), len(data["test"][1])
    print(f"procedural_digits/{args.config}: {n_train} train / {n_test} test")
    t = time.time()
    acc = train_linear(data, epochs=args.linear_epochs)
    print(
        f"linear softmax regression ({args.linear_epochs} epochs): test accuracy {acc:.4f}"
        f"  [{time.time() - t:.0f} s]"
    )
    t = time.time()
    acc = train_fcn(data, epochs=args.fcn_epochs)
    print(
        f"seed FCN ({args.fcn_epochs} epochs, batch 128, adam 1e-3): test accuracy {acc:.4f}"
        f"  [{time.time() - t:.0f} s]"
    )


if __name__ == "__main__":
    main()
