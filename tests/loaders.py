"""Train-loader helpers shared by the loader tests."""

import numpy as np

from fcn_jax.data import TrainLoader, parse_size_policy, resolve_buckets


def make_loader(ds, spec, batch_size=8, seed=0, buckets=None, **kw):
    """A host loader of ``ds``'s train split under ``spec`` (text or a parsed policy)."""
    if isinstance(spec, str):
        spec = parse_size_policy(spec)
    policy = spec.bind(ds.spatial_dims)
    sizes = ds.train.sizes()
    b = resolve_buckets(buckets, policy, sizes, min_size=kw.get("min_size"))
    return TrainLoader(ds.train, policy, b, batch_size, seed, num_threads=1, **kw)


def take(loader, n):
    return [next(loader) for _ in range(n)]


def same(a, b):
    return all(
        a_.keys() == b_.keys() and all(np.array_equal(a_[k], b_[k]) for k in a_)
        for a_, b_ in zip(a, b, strict=True)
    )
