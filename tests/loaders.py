"""Train-loader helpers shared by the loader tests."""

import numpy as np

from fcn_jax.data import TrainLoader, parse_size_policy, resolve_buckets
from fcn_jax.data.plan import BatchPlan


def make_loader(ds, spec, batch_size=8, seed=0, buckets=None, **kw):
    """A host loader of ``ds``'s train split under ``spec`` (text or a parsed policy)."""
    if isinstance(spec, str):
        spec = parse_size_policy(spec)
    policy = spec.bind(ds.spatial_dims)
    sizes = ds.train.sizes()
    b = resolve_buckets(buckets, policy, sizes, min_size=kw.get("min_size"))
    reading = {k: kw.pop(k) for k in ("process_index", "worker_count", "mesh") if k in kw}
    plan = BatchPlan(ds.train, policy, b, batch_size, seed, **kw)
    return TrainLoader(plan, num_threads=1, **reading)


def take(loader, n):
    return [next(loader) for _ in range(n)]


def same(a, b):
    return all(
        a_.keys() == b_.keys() and all(np.array_equal(a_[k], b_[k]) for k in a_)
        for a_, b_ in zip(a, b, strict=True)
    )
