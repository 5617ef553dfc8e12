"""The MNIST-scale protocol for any 2-D dataset: pooled, re-split by label, rescaled.

MNIST-scale (Ghosh & Gupta 2019, "Scale Steerable Filters for Locally Scale-Invariant
Convolutional Neural Networks"; as used by Sosnovik et al., "Scale-Equivariant Steerable
Networks", ICLR 2020): the train and test splits of a dataset are pooled and split again into
train / val / test (10 000 / 2 000 / 50 000 for MNIST), and every image is scaled about its centre
by its own factor drawn uniformly from [0.3, 1.0], on a canvas of its original size (the area
outside the scaled content is 0). The published generator (ISosnovik/sesn, ``prepare_datasets.py``)
scales with torchvision's ``RandomAffine(0, scale=(0.3, 1), resample=BICUBIC)`` on PIL images:
bicubic and **not** antialiased, so shrunk digits come out thin and aliased. That is the default
here; ``antialias=True`` gives a smoother, easier variant (what this module wrote before).

:func:`rescale_dataset` does all of it for any spec :func:`~fcn_jax.data.load_dataset` accepts;
:func:`stratified_split` and :func:`rescale_images` are its two steps;
:func:`fcn_jax.data.arrays.save_npz` writes the result as a file that ``npz:PATH`` reads back
(its train and test splits; the npz loader ignores the ``val_*`` and ``*_scales`` keys).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from fcn_jax.data.load import load_dataset
from fcn_jax.data.sources import DataError

SPLITS = ("train", "val", "test")
CHUNK = 1000  # images per call of the jitted rescale (one compile for every full chunk)
# Where ``experiments.rescale`` writes without --out: under runs/, which git ignores (a file in
# the checkout's root would show up as an untracked change).
OUTPUT_DIR = os.path.join("runs", "rescaled")


def default_output(source: str, seed: int, antialias: bool = False) -> str:
    """The file ``experiments.rescale`` writes without --out: ``runs/rescaled/NAME-seedS.npz``,
    NAME the source's file or dataset name (``npz:~/x/real_digits.npz`` → ``real_digits``,
    ``procedural_digits/fixed28`` → ``procedural_digits_fixed28``); ``-antialias`` is added
    for that variant, so it never overwrites the published one."""
    kind, colon, path = source.partition(":")
    # A file or directory source is named by its last path component, a TFDS name whole.
    name = os.path.basename(path.rstrip("/")) if colon and kind in ("npz", "idx") else source
    name = name.removesuffix(".npz").strip("/").replace("/", "_").replace(":", "_")
    variant = "-antialias" if antialias else ""
    return os.path.join(OUTPUT_DIR, f"{name}-seed{seed}{variant}.npz")


def stratified_split(labels, counts: Sequence[int], rng: np.random.Generator) -> list[np.ndarray]:
    """Disjoint random subsets of the pool with each class's share kept.

    Args:
      labels: ``(N,)`` integer class of every pool example.
      counts: ``K`` sizes, each > 0, summing to at most N.
      rng: draws which examples of each class go where, and the order within each subset.
    Returns:
      ``K`` int64 index arrays into ``labels`` of lengths ``counts``, no index in two of them,
      each in random order. Subset ``k`` holds ``floor`` or ``ceil`` of
      ``counts[k] * n_c / N`` examples of class ``c`` (``n_c`` of them in the pool), so
      every subset's class proportions follow the pool's as closely as integers allow.
    """
    labels = np.asarray(labels)
    classes, inverse = np.unique(labels, return_inverse=True)
    per_class = np.bincount(inverse, minlength=len(classes))
    rows = np.array([*counts, len(labels) - sum(counts)], np.int64)  # the last: left unused
    if (rows[:-1] <= 0).any() or rows[-1] < 0:
        raise ValueError(f"counts {list(counts)} must be positive and sum to at most {len(labels)}")
    table = _round_table(rows, per_class)  # (K + 1, classes)
    starts = np.cumsum(table, axis=0) - table
    parts: list[list[np.ndarray]] = [[] for _ in counts]
    for c in range(len(classes)):
        members = rng.permutation(np.flatnonzero(inverse == c))
        for k in range(len(counts)):
            parts[k].append(members[starts[k, c] : starts[k, c] + table[k, c]])
    return [rng.permutation(np.concatenate(p)).astype(np.int64) for p in parts]


def _round_table(rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Integer ``(R, C)`` table with row sums ``rows`` and column sums ``cols`` (equal totals)
    whose every entry is the floor or the ceiling of ``rows[r] * cols[c] / total``.

    Each column is first rounded by largest remainders (column sums exact); then, while a row
    has too many, one unit moves along a chain of rows to one that has too few, each link a
    column rounded up in the giver and down in the taker (such a chain always exists: the
    rounding is a transportation problem, whose integral solutions flows find).
    """
    total = int(rows.sum())
    product = rows[:, None] * cols[None, :]
    table, remainder = product // total, product % total
    for c in range(len(cols)):  # largest remainders first; ties to the earlier row
        order = np.argsort(-remainder[:, c], kind="stable")
        table[order[: cols[c] - table[:, c].sum()], c] += 1
    rounded_up = table * total > product
    can_go_up = ~rounded_up & (remainder > 0)
    while (excess := table.sum(1) - rows).any():
        path = _chain(np.flatnonzero(excess > 0)[0], excess < 0, rounded_up, can_go_up)
        for giver, taker, c in path:
            table[giver, c] -= 1
            table[taker, c] += 1
            rounded_up[giver, c], can_go_up[giver, c] = False, True
            rounded_up[taker, c], can_go_up[taker, c] = True, False
    return table


def _chain(start: int, short: np.ndarray, up: np.ndarray, can_up: np.ndarray):
    """Breadth-first links ``(giver, taker, column)`` from row ``start`` to a ``short`` row."""
    came_from = {start: None}
    frontier = [start]
    while frontier:
        nxt = []
        for row in frontier:
            for taker in range(len(short)):
                columns = np.flatnonzero(up[row] & can_up[taker])
                if taker in came_from or not len(columns):
                    continue
                came_from[taker] = (row, taker, int(columns[0]))
                if short[taker]:
                    path = []
                    while came_from[taker] is not None:
                        path.append(came_from[taker])
                        taker = came_from[taker][0]
                    return path[::-1]
                nxt.append(taker)
        frontier = nxt
    raise AssertionError("no rounding chain: the table's totals disagree")


def rescale_images(
    images, scales, value_range=None, *, antialias: bool = False, chunk: int = CHUNK
) -> np.ndarray:
    """Every image scaled about its centre on a canvas of its own size, zero outside.

    Args:
      images: ``(N, H, W, C)`` uint8 or float.
      scales: ``(N,)`` factors > 0 (1: unchanged; 0.5: half the height and width).
      value_range: ``(lo, hi)`` the result is clipped to, in the images' units (default: the
        span of ``images``' values and the fill 0; bicubic overshoots at edges).
      antialias: False (the published generator, :func:`_published_affine`): PIL's bicubic
        affine transform, sampled point-wise. True: bicubic (Keys) antialiased when shrinking
        (``jax.image.scale_and_translate``), centred on the canvas's exact centre.
      chunk: images per jitted call of the antialiased path (the last chunk is padded, so one
        shape compiles).
    Returns:
      ``(N, H, W, C)``: uint8 (rounded) for uint8 images, else float32.
    """
    images, scales = np.asarray(images), np.asarray(scales, np.float32)
    if images.ndim != 4 or scales.shape != images.shape[:1]:
        raise ValueError(f"images {images.shape} must be (N, H, W, C) and scales (N,)")
    if value_range is None:
        value_range = (min(0.0, float(images.min())), max(0.0, float(images.max())))
    lo, hi = (np.float32(v) for v in value_range)
    if not antialias:
        return _published_affine(images, scales, lo, hi)
    chunk = max(1, min(chunk, len(images)))
    out = np.empty(images.shape, np.uint8 if images.dtype == np.uint8 else np.float32)
    for start in range(0, len(images), chunk):
        part, s = images[start : start + chunk], scales[start : start + chunk]
        n = len(part)
        if n < chunk:  # pad to the compiled shape
            part = np.concatenate([part, np.zeros((chunk - n, *part.shape[1:]), part.dtype)])
            s = np.concatenate([s, np.ones(chunk - n, np.float32)])
        out[start : start + n] = np.asarray(_rescale_chunk(part, s, lo, hi))[:n]
    return out


def _published_affine(images, scales, lo, hi) -> np.ndarray:
    """``(N, H, W, C)`` -> the same, as the published MNIST-scale generator scales them.

    That generator applies torchvision's ``RandomAffine(0, scale=...)`` (torchvision 0.3-0.4,
    as ISosnovik/sesn used) to PIL images: ``Image.transform(AFFINE, BICUBIC)`` with the
    inverse map ``x -> x / s + c (1 - 1 / s)`` about ``c = (W / 2 + 0.5, H / 2 + 0.5)`` in PIL's
    coordinates (pixel ``i`` spans ``[i, i + 1)``), so the fixed point is pixel ``(W / 2, H / 2)``,
    half a pixel off the canvas centre, and nothing is low-pass filtered before sampling. PIL does
    it here too, channel by channel (its bands are independent): uint8 in ``L`` mode, rounded and
    clipped by PIL as in the published files; floats in ``F`` mode, clipped to ``[lo, hi]``.
    """
    _, height, width, channels = images.shape
    cx, cy = width * 0.5 + 0.5, height * 0.5 + 0.5
    floats = images.dtype != np.uint8
    planes = images.astype(np.float32) if floats else images
    out = np.empty(images.shape, np.float32 if floats else np.uint8)
    for i, s in enumerate(scales.astype(np.float64)):
        matrix = (1 / s, 0.0, cx - cx / s, 0.0, 1 / s, cy - cy / s)
        for k in range(channels):
            plane = Image.fromarray(np.ascontiguousarray(planes[i, :, :, k]))
            out[i, :, :, k] = np.asarray(
                plane.transform(
                    (width, height), Image.Transform.AFFINE, matrix, Image.Resampling.BICUBIC
                )
            )
    return np.clip(out, lo, hi) if floats else out


@jax.jit
def _rescale_chunk(images, scales, lo, hi):
    """``(B, H, W, C)`` images and ``(B,)`` scales -> rescaled, clipped, same dtype rule."""
    size = jnp.asarray(images.shape[1:3], jnp.float32)

    def one(image, s):
        scale = jnp.stack([s, s])
        return jax.image.scale_and_translate(
            image.astype(jnp.float32),
            image.shape,
            spatial_dims=(0, 1),
            scale=scale,
            translation=(1.0 - scale) * size / 2.0,
            method="cubic",
            antialias=True,
            precision=jax.lax.Precision.HIGHEST,
        )

    out = jnp.clip(jax.vmap(one)(images, scales), lo, hi)
    return jnp.rint(out).astype(jnp.uint8) if images.dtype == jnp.uint8 else out


def rescale_dataset(
    source: str,
    counts: dict[str, int],
    *,
    min_scale: float = 0.3,
    max_scale: float = 1.0,
    seed: int = 0,
    data_dir: str | None = None,
    allow_pickle: bool = False,
    antialias: bool = False,
    train_split: str | None = None,
    test_split: str | None = None,
) -> dict[str, np.ndarray]:
    """The MNIST-scale protocol applied to the dataset ``source`` (a ``load_dataset`` spec).

    Its train and test splits are pooled (all examples of one 2-D size ``H x W`` with ``C``
    channels), split by :func:`stratified_split` into ``counts`` (``{"train": n, "val": n,
    "test": n}``), and each image is rescaled (:func:`rescale_images`) by a factor drawn
    uniformly from ``[min_scale, max_scale]``, clipped to the pool's value range (with 0).
    Everything random follows from ``seed``. ``antialias``: see :func:`rescale_images` (False:
    the published generator). ``allow_pickle``: an npz source's object arrays
    are read (by unpickling: trusted files only). ``train_split``, ``test_split``: the source's
    splits to pool, whole or sliced (``train[:50000]``); None: its own.

    Returns:
      ``{split}_images`` ``(n, H, W)`` for ``C = 1``, else ``(n, H, W, C)``: uint8 where the
      source's pixels are all k/255 (uint8 files, PNGs...), else float32 as the loader gives
      them; ``{split}_labels`` ``(n,)`` int64; ``{split}_scales`` ``(n,)`` float32;
      ``num_classes``; ``class_names`` where the source names its classes.
    Raises:
      DataError: the source is not 2-D data of one size, or smaller than the counts.
      ValueError: bad scales or counts.
    """
    if not 0 < min_scale <= max_scale:
        raise ValueError(f"scales [{min_scale}, {max_scale}]: need 0 < min_scale <= max_scale")
    if sorted(counts) != sorted(SPLITS) or min(counts.values()) <= 0:
        raise ValueError(f"counts {counts}: need positive counts for {', '.join(SPLITS)}")
    dataset = load_dataset(
        source, data_dir, allow_pickle=allow_pickle, train_split=train_split, test_split=test_split
    )
    _check_pool(dataset, source, counts)
    images, labels = _read_pool(dataset)
    split_rng, scale_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))
    parts = stratified_split(labels, [counts[s] for s in SPLITS], split_rng)
    scales = [scale_rng.uniform(min_scale, max_scale, len(p)).astype(np.float32) for p in parts]
    value_range = (min(0.0, float(images.min())), max(0.0, float(images.max())))
    every = np.concatenate(parts)  # one pass: one compile of the chunk shape
    rescaled = rescale_images(
        images[every], np.concatenate(scales), value_range, antialias=antialias
    )
    if rescaled.shape[-1] == 1:
        rescaled = rescaled[..., 0]
    out = {}
    bounds = np.cumsum([0, *map(len, parts)])
    for s, idx, scale, a, b in zip(SPLITS, parts, scales, bounds[:-1], bounds[1:], strict=True):
        out |= {f"{s}_images": rescaled[a:b], f"{s}_labels": labels[idx], f"{s}_scales": scale}
    out["num_classes"] = np.int64(dataset.num_classes)
    if dataset.class_names != tuple(map(str, range(dataset.num_classes))):  # named, not indices
        out["class_names"] = np.array(dataset.class_names)
    return out


def _check_pool(dataset, source: str, counts: dict[str, int]) -> None:
    """2-D examples of one size, at least ``sum(counts)`` of them in train and test."""
    expected = "expected a 2-D dataset whose examples share one size"
    if dataset.spatial_dims != 2:
        raise DataError(f"--source={source}: {dataset.spatial_dims}-D data; {expected}")
    sizes = {"train": dataset.train.common_size(), "test": dataset.test.common_size()}
    if None in sizes.values() or len(set(sizes.values())) > 1:
        found = ", ".join(
            f"{k} {'x'.join(map(str, v)) if v else 'mixed'}" for k, v in sizes.items()
        )
        raise DataError(f"--source={source}: example sizes differ ({found}); {expected}")
    pool = len(dataset.train) + len(dataset.test)
    if (wanted := sum(counts.values())) > pool:
        given = " + ".join(f"--{s}={counts[s]}" for s in SPLITS)
        raise DataError(
            f"{given} = {wanted} exceeds the {pool} examples of --source={source} "
            "(its train and test splits pooled)"
        )


def _read_pool(dataset, chunk: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """``(N, H, W, C)`` images (uint8 when every value is k/255, else float32) and ``(N,)``
    int64 labels of the train and test splits together."""
    images, labels = [], []
    for src in (dataset.train, dataset.test):
        for start in range(0, len(src), chunk):
            examples = src.get_many(range(start, min(start + chunk, len(src))))
            x = np.stack([ex["image"] for ex in examples])
            q = np.rint(x * 255.0)
            k255 = (q >= 0).all() and (q <= 255).all() and np.allclose(q / 255.0, x, 0, 1e-6)
            images.append(q.astype(np.uint8) if k255 else x)
            labels.append(np.array([ex["label"] for ex in examples], np.int64))
    if any(im.dtype != np.uint8 for im in images):
        images = [im.astype(np.float32) / 255.0 if im.dtype == np.uint8 else im for im in images]
    return np.concatenate(images), np.concatenate(labels)
