"""Does ``procedural_digits/fixed28`` separate models? Linear softmax regression against the
``seed`` FCN, trained on the same split; prints both test accuracies.

    python -m benchmarks.dataset_separation [--data_dir=DIR] [--config=fixed28]

A useful benchmark dataset must be clearly harder for a linear classifier on raw pixels than
for a small convolutional network. Builds the dataset into the TFDS data dir first if needed.
"""

from __future__ import annotations

import time

import numpy as np
import optax
from absl import app, flags
from flax import nnx

import fcn_jax
from fcn_jax.data import load_dataset

flags.DEFINE_string("data_dir", None, "TFDS data directory (default: TFDS's)")
flags.DEFINE_string("config", "fixed28", "procedural_digits config")
flags.DEFINE_integer("linear_epochs", 20, "epochs of the linear classifier (Adam 1e-2)")
flags.DEFINE_integer("fcn_epochs", 2, "epochs of the seed FCN (Adam 1e-3)")


def arrays(source) -> tuple[np.ndarray, np.ndarray]:
    """All of ``source``'s examples: images (N, H, W, 1) float32 in [0, 1], labels (N,)."""
    exs = source.get_many(range(len(source)))
    return np.stack([e["image"] for e in exs]), np.array([e["label"] for e in exs], np.int32)


def test_accuracy(model, data, epochs: int, lr: float, batch: int = 128) -> float:
    """Train ``model`` with Adam on shuffled full batches (the ragged tail dropped: one
    compiled shape); its accuracy on the test split."""
    (x, y), (x_test, y_test) = data["train"], data["test"]
    optimizer = nnx.Optimizer(model, optax.adam(lr), wrt=nnx.Param)

    @nnx.jit
    def step(model, optimizer, x, y):
        def loss(m):
            return optax.softmax_cross_entropy_with_integer_labels(m(x), y).mean()

        optimizer.update(model, nnx.grad(loss)(model))

    rng = np.random.default_rng(0)
    for _ in range(epochs):
        perm = rng.permutation(len(x))
        for i in range(0, len(x) - batch + 1, batch):
            step(model, optimizer, x[perm[i : i + batch]], y[perm[i : i + batch]])
    predict = nnx.jit(lambda model, x: model(x).argmax(-1))
    hits = [np.asarray(predict(model, x_test[i : i + 1000])) for i in range(0, len(x_test), 1000)]
    return float((np.concatenate(hits) == y_test).mean())


def main(argv) -> None:
    del argv
    f = flags.FLAGS
    dataset = load_dataset(f"procedural_digits/{f.config}", f.data_dir)
    data = {"train": arrays(dataset.train), "test": arrays(dataset.test)}
    print(f"procedural_digits/{f.config}: {len(data['train'][1])} train / {len(data['test'][1])}")
    # Linear: softmax regression from zeros on flattened pixels standardized per position.
    flat = {k: x.reshape(len(x), -1) for k, (x, _) in data.items()}
    mean, std = flat["train"].mean(0), flat["train"].std(0) + 1e-3
    standardized = {k: ((flat[k] - mean) / std, y) for k, (_, y) in data.items()}
    zeros, pixels = nnx.initializers.zeros, flat["train"].shape[1]
    linear = nnx.Linear(pixels, 10, kernel_init=zeros, rngs=nnx.Rngs(0))
    seed = fcn_jax.create_model("seed", num_classes=10, in_channels=1, spatial_dims=2, seed=0)
    for what, model, d, epochs, lr in (
        ("linear softmax regression", linear, standardized, f.linear_epochs, 1e-2),
        ("seed FCN (batch 128, Adam 1e-3)", seed, data, f.fcn_epochs, 1e-3),
    ):
        t = time.time()
        acc = test_accuracy(model, d, epochs, lr)
        print(f"{what}, {epochs} epochs: test accuracy {acc:.4f}  [{time.time() - t:.0f} s]")


if __name__ == "__main__":
    app.run(main)
