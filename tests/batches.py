"""Padded batches of random examples, for the tests of exactness under padding."""

import jax.numpy as jnp
import numpy as np


def padded_batch(rng, sizes, channels, extra=3):
    """Examples of the given sizes, zero-padded after their content to one array."""
    sizes = np.asarray(sizes)
    shape = (len(sizes), *(sizes.max(0) + extra), channels)
    x = np.zeros(shape, np.float32)
    alone = []
    for i, s in enumerate(sizes):
        xi = rng.normal(size=(*s, channels)).astype(np.float32)
        x[(i, *(slice(0, n) for n in s))] = xi
        alone.append(xi)
    return jnp.asarray(x), jnp.asarray(sizes, jnp.int32), alone
