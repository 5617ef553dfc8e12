"""Training settings small enough for tests: a few steps of a narrow seed model."""

TINY_TRAIN = dict(
    dataset="procedural_digits/tiny_variable",
    width=0.25,
    steps=6,
    batch_size=16,
    eval_examples=32,
    eval_batch_size=32,
    eval_sizes="24,28x16",
    log_every=3,
    checkpoint_every=6,
)
