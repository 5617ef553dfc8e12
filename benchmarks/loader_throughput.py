"""Examples/second of the training loader under the fixed, mixed and native size policies.

    python -m benchmarks.loader_throughput [--dataset procedural_digits] [--data_dir DIR]

Prints one row per policy. ``measure_loader`` returns the same numbers for other benchmarks.
"""

from __future__ import annotations

import argparse
import time

from fcn_jax.data import TrainLoader, load_dataset, parse_size_policy, resolve_buckets
from fcn_jax.data.sources import Source

DEFAULT_POLICIES = ("fixed:32", "mixed:16-64:8", "mixed:16-64:8:scale", "native")


def measure_loader(
    source: Source,
    policy: str,
    *,
    batch_size: int = 128,
    steps: int = 50,
    warmup: int = 5,
    buckets: str | None = None,
    min_size: tuple[int, ...] | None = None,
    num_threads: int = 2,
    seed: int = 0,
) -> dict:
    """Time ``steps`` batches (after ``warmup``) of a fresh ``TrainLoader`` over ``source``.

    Returns:
      ``{"policy", "examples_per_second", "batches_per_second", "examples", "seconds",
      "num_buckets", "padding_efficiency"}``.
    """
    parsed = parse_size_policy(policy, source.spatial_dims)
    bucket_set = resolve_buckets(buckets, parsed, source.sizes(), min_size=min_size)
    loader = TrainLoader(
        source, parsed, bucket_set, batch_size, seed, min_size=min_size, num_threads=num_threads
    )
    for _ in range(warmup):
        next(loader)
    examples, start = 0, time.perf_counter()
    for _ in range(steps):
        examples += len(next(loader)["label"])
    seconds = time.perf_counter() - start
    return {
        "policy": policy,
        "examples_per_second": examples / seconds,
        "batches_per_second": steps / seconds,
        "examples": examples,
        "seconds": seconds,
        "num_buckets": len(bucket_set),
        "padding_efficiency": loader.padding_efficiency,
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="procedural_digits")
    parser.add_argument("--data_dir", default=None)
    parser.add_argument("--policies", nargs="+", default=list(DEFAULT_POLICIES))
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--num_threads", type=int, default=2)
    args = parser.parse_args(argv)

    t = time.perf_counter()
    ds = load_dataset(args.dataset, args.data_dir)
    ds.train.sizes()  # decode once so the first policy's timing excludes it
    print(f"{ds.name}: {len(ds.train)} train examples, ready in {time.perf_counter() - t:.1f}s")
    print(f"{'policy':<22} {'examples/s':>11} {'batches/s':>10} {'buckets':>8} {'pad eff':>8}")
    for policy in args.policies:
        r = measure_loader(
            ds.train,
            policy,
            batch_size=args.batch_size,
            steps=args.steps,
            num_threads=args.num_threads,
        )
        print(
            f"{policy:<22} {r['examples_per_second']:>11.0f} {r['batches_per_second']:>10.1f} "
            f"{r['num_buckets']:>8d} {r['padding_efficiency']:>8.3f}"
        )


if __name__ == "__main__":
    main()
