"""The MNIST-scale protocol (fcn_jax/data/rescale.py, experiments/rescale.py)."""

import os
import subprocess
import sys

import numpy as np
import pytest
from commands import REPO, run_pythons
from PIL import Image

from fcn_jax.data import DataError, load_dataset
from fcn_jax.data.arrays import save_npz
from fcn_jax.data.rescale import (
    default_output,
    rescale_dataset,
    rescale_images,
    stratified_split,
)

COUNTS = {"train": 120, "val": 30, "test": 120}
SIDES = np.array([8, 12, 16, 20, 24])  # class k: a centred bright square of side SIDES[k]
CENTRE = 13.5  # of a 28-pixel axis, in pixel indices
PUBLISHED_CENTRE = 14.0  # torchvision 0.3-0.4 scales PIL images about pixel (W / 2, H / 2)


def squares(labels) -> np.ndarray:
    """``(N, 28, 28)`` uint8: a centred square of value 255 and side ``SIDES[label]``."""
    images = np.zeros((len(labels), 28, 28), np.uint8)
    for image, side in zip(images, SIDES[labels]):
        lo = (28 - side) // 2
        image[lo : lo + side, lo : lo + side] = 255
    return images


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> str:
    """npz: 300 squares of 5 classes in unequal shares (250 train, 50 test), named classes."""
    rng = np.random.default_rng(0)
    labels = rng.choice(5, 300, p=[0.1, 0.15, 0.2, 0.25, 0.3])
    path = tmp_path_factory.mktemp("rescale") / "squares.npz"
    np.savez(path, train_images=squares(labels[:250]), train_labels=labels[:250],
             test_images=squares(labels[250:]), test_labels=labels[250:],
             class_names=np.array(["a", "b", "c", "d", "e"]))  # fmt: skip
    return f"npz:{path}"


@pytest.fixture(scope="module")
def arrays(source) -> dict:
    return rescale_dataset(source, COUNTS, seed=0)


def pool_labels(source: str) -> np.ndarray:
    with np.load(source.removeprefix("npz:")) as z:
        return np.concatenate([z["train_labels"], z["test_labels"]])


def test_split_sizes_disjoint_and_stratified(source):
    labels = pool_labels(source)
    parts = stratified_split(labels, list(COUNTS.values()), np.random.default_rng(0))
    assert [len(p) for p in parts] == list(COUNTS.values())
    every = np.concatenate(parts)
    assert len(np.unique(every)) == len(every)
    share = np.bincount(labels) / len(labels)
    for part, n in zip(parts, COUNTS.values()):
        assert np.all(np.abs(np.bincount(labels[part], minlength=5) - n * share) < 1)


def test_split_rounding_holds_for_any_table():
    """Exact sizes and every class within 1 of its share, even when the splits use the whole
    pool and rounding each class alone would overfill a split."""
    rng = np.random.default_rng(1)
    for _ in range(200):
        per_class = rng.integers(1, 30, rng.integers(2, 9))
        labels = rng.permutation(np.repeat(np.arange(len(per_class)), per_class))
        cuts = np.unique(rng.integers(1, len(labels) + 1, rng.integers(1, 4)))
        counts = np.diff([0, *cuts])
        parts = stratified_split(labels, counts, rng)
        assert [len(p) for p in parts] == list(counts)
        assert len(np.unique(np.concatenate(parts))) == sum(counts)
        for part, n in zip(parts, counts):
            found = np.bincount(labels[part], minlength=len(per_class))
            assert np.all(np.abs(found - n * per_class / len(labels)) < 1)


def test_dataset_splits_scales_and_keys(source, arrays):
    share = np.bincount(pool_labels(source)) / 300
    for split, n in COUNTS.items():
        assert arrays[f"{split}_images"].shape == (n, 28, 28)
        assert arrays[f"{split}_images"].dtype == np.uint8
        counts = np.bincount(arrays[f"{split}_labels"], minlength=5)
        assert np.all(np.abs(counts - n * share) < 1)
        scales = arrays[f"{split}_scales"]
        assert scales.dtype == np.float32 and scales.shape == (n,)
        assert scales.min() >= 0.3 and scales.max() <= 1.0 and np.ptp(scales) > 0.3
    assert int(arrays["num_classes"]) == 5
    assert list(arrays["class_names"]) == ["a", "b", "c", "d", "e"]


def centre_of_mass(images: np.ndarray) -> np.ndarray:
    """``(N, 2)`` intensity centre of ``(N, H, W)`` images, in pixel indices."""
    mass = images.astype(np.float64)
    total = mass.sum((1, 2))
    rows = (mass.sum(2) * np.arange(mass.shape[1])).sum(1) / total
    cols = (mass.sum(1) * np.arange(mass.shape[2])).sum(1) / total
    return np.stack([rows, cols], 1)


def test_content_is_scaled_about_the_centre(arrays):
    images, labels, scales = arrays["test_images"], arrays["test_labels"], arrays["test_scales"]
    assert np.abs(centre_of_mass(images) - CENTRE).max() < 0.7
    width = (images[:, 14] > 127).sum(1)  # the central row's bright run
    assert np.abs(width - SIDES[labels] * scales).max() <= 1.5


def torchvision_random_affine(image: np.ndarray, scale: float) -> np.ndarray:
    """``(H, W)`` uint8 through what ISosnovik/sesn's generator ran: torchvision 0.3-0.4's
    ``F.affine(img, 0, (0, 0), scale, 0, resample=BICUBIC, fillcolor=0)``, written out from its
    documented steps: the inverse matrix about ``(W * 0.5 + 0.5, H * 0.5 + 0.5)``, then PIL."""
    pil = Image.fromarray(image)
    cx, cy = pil.size[0] * 0.5 + 0.5, pil.size[1] * 0.5 + 0.5
    inverse = [1 / scale, 0.0, 0.0, 0.0, 1 / scale, 0.0]  # rotation 0, shear 0: R^-1 / scale
    inverse[2] += inverse[0] * -cx + inverse[1] * -cy  # C^-1, then R^-1 / scale ...
    inverse[5] += inverse[3] * -cx + inverse[4] * -cy
    inverse[2] += cx  # ... then C
    inverse[5] += cy
    return np.asarray(pil.transform(pil.size, Image.AFFINE, inverse, Image.BICUBIC, fillcolor=0))


def test_published_generator_matches_torchvision_on_pil(arrays):
    """The default is the published transform, pixel for pixel, on digits of several shapes."""
    digits = procedural_digits(6)
    factors = np.array([0.3, 0.41, 0.5, 0.77, 0.9, 1.0], np.float32)
    out = rescale_images(digits[..., None], factors)
    for digit, s, got in zip(digits, factors, out[..., 0], strict=True):
        np.testing.assert_array_equal(got, torchvision_random_affine(digit, float(s)))
    np.testing.assert_array_equal(out[-1, ..., 0], digits[-1])  # scale 1: unchanged
    smooth = rescale_images(digits[..., None], factors, antialias=True)
    assert np.abs(smooth[0].astype(int) - out[0]).max() > 32  # the two generators differ
    images, scales = arrays["test_images"], arrays["test_scales"]
    sources = squares(arrays["test_labels"][:3])  # rescale_dataset draws the same transform
    expected = [torchvision_random_affine(x, float(s)) for x, s in zip(sources, scales[:3])]
    np.testing.assert_array_equal(images[:3], expected)
    assert np.abs(centre_of_mass(images) - PUBLISHED_CENTRE).max() < 0.5


def procedural_digits(n: int) -> np.ndarray:
    """``(n, 28, 28)`` uint8 handwriting-like strokes: thin diagonals and arcs of varied width."""
    yy, xx = np.mgrid[:28, :28]
    images = []
    for k in range(n):
        arc = np.abs(np.hypot(yy - 14 - k % 3, xx - 13) - (5 + k)) < 1 + 0.4 * k
        stroke = np.abs((yy - 4) - (xx - 6) * (1.1 + 0.2 * k)) < 1.5
        images.append(np.where(arc | (stroke & (yy > 3) & (yy < 25)), 255, 0))
    return np.array(images, np.uint8)


def test_rescale_images_square_and_off_centre_blob():
    square = squares(np.array([3, 3]))[..., None]  # side 20
    out = rescale_images(square, np.array([0.5, 1.0]), antialias=True)
    assert out.dtype == np.uint8 and out.shape == square.shape
    np.testing.assert_array_equal(out[1], square[1])  # scale 1: unchanged
    assert (out[0, 14, :, 0] > 127).sum() == 10 and (out[0, :, 14, 0] > 127).sum() == 10
    np.testing.assert_allclose(centre_of_mass(out[..., 0])[0], CENTRE, atol=0.05)
    blob = np.zeros((1, 28, 28, 1), np.float32)
    blob[0, 4:8, 18:24] = 0.8  # off centre: its centre moves towards the canvas centre by s
    for antialias, centre in ((True, CENTRE), (False, PUBLISHED_CENTRE)):
        out = rescale_images(blob, np.array([0.4]), antialias=antialias)
        assert out.dtype == np.float32 and out.min() >= 0 and out.max() <= 0.8
        expected = centre + 0.4 * (centre_of_mass(blob[..., 0]) - centre)
        np.testing.assert_allclose(centre_of_mass(out[..., 0]), expected, atol=0.1)


def test_deterministic_in_the_seed(source, arrays):
    again = rescale_dataset(source, COUNTS, seed=0)
    assert again.keys() == arrays.keys()
    for key, value in arrays.items():
        np.testing.assert_array_equal(again[key], value)
    other = rescale_dataset(source, COUNTS, seed=1)
    assert not np.array_equal(other["train_scales"], arrays["train_scales"])
    assert not np.array_equal(other["train_labels"], arrays["train_labels"])


def test_output_reads_as_npz_dataset(arrays, tmp_path):
    path = str(tmp_path / "scaled.npz")
    save_npz(path, arrays)
    assert os.listdir(tmp_path) == ["scaled.npz"]  # no temp file left behind
    dataset = load_dataset(f"npz:{path}")
    assert (len(dataset.train), len(dataset.test)) == (120, 120)
    assert dataset.num_classes == 5 and dataset.class_names == ("a", "b", "c", "d", "e")
    assert dataset.spatial_dims == 2 and dataset.in_channels == 1
    example = dataset.test[0]
    np.testing.assert_array_equal(example["image"][..., 0] * 255, arrays["test_images"][0])


def test_sources_it_refuses(source, tmp_path):
    with pytest.raises(
        DataError, match=r"--train=120 \+ --val=30 \+ --test=200 = 350 exceeds the 300"
    ):
        rescale_dataset(source, {**COUNTS, "test": 200})
    one_d = tmp_path / "one_d.npz"
    np.savez(one_d, train_images=np.zeros((4, 40), np.uint8), train_labels=[0, 1, 0, 1],
             test_images=np.zeros((2, 40), np.uint8), test_labels=[0, 1])  # fmt: skip
    mixed = tmp_path / "mixed.npz"
    np.savez(mixed, train_images=np.zeros((4, 28, 28), np.uint8), train_labels=[0, 1, 0, 1],
             test_images=np.zeros((2, 32, 32), np.uint8), test_labels=[0, 1])  # fmt: skip
    for path in (one_d, mixed):
        with pytest.raises(DataError, match="2-D dataset whose examples share one size") as e:
            rescale_dataset(f"npz:{path}", {"train": 1, "val": 1, "test": 1})
        assert str(e.value).startswith(f"--source=npz:{path}") and "\n" not in str(e.value)
    with pytest.raises(ValueError, match="min_scale"):
        rescale_dataset(source, COUNTS, min_scale=0.8, max_scale=0.5)


def test_command_writes_file_and_rejects_bad_flags(source, tmp_path):
    out = str(tmp_path / "cli.npz")
    good = ["--source=" + source, f"--out={out}", "--seed=3"] + [
        f"--{k}={n}" for k, n in COUNTS.items()
    ]
    bad = {  # the flag each error line must name
        "--min_scale": [*good, "--min_scale=0"],
        "--max_scale": [*good, "--min_scale=0.8", "--max_scale=0.5"],
        "--out": [*good, "--out=x.npy"],
        "--source": good[1:],
        "--val": [*good, "--val=0"],
    }
    ok, *failed = run_pythons(*[("-m", "experiments.rescale", *a) for a in (good, *bad.values())])
    assert ok.returncode == 0, ok.stderr[-2000:]
    lines = ok.stdout.splitlines()
    assert lines[0] == out and "train 120, val 30, test 120 examples of 28x28 uint8" in lines[1]
    assert len(load_dataset(f"npz:{out}").train) == 120
    for flag, proc in zip(bad, failed):
        last = proc.stderr.strip().splitlines()[-1]
        assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
        assert last.startswith("error: ") and flag in last, proc.stderr


def test_default_output_names_the_source_under_runs():
    assert default_output("npz:~/x/real_digits.npz", 0) == "runs/rescaled/real_digits-seed0.npz"
    assert default_output("idx:/data/mnist/", 1) == "runs/rescaled/mnist-seed1.npz"
    want = "runs/rescaled/procedural_digits_fixed28-seed2.npz"
    assert default_output("procedural_digits/fixed28", 2) == want
    assert default_output("mnist", 0, antialias=True) == "runs/rescaled/mnist-seed0-antialias.npz"


def test_command_without_out_writes_under_runs(source, tmp_path):
    """Run from a fresh directory (the command's default is relative to where it runs): the
    file lands in runs/rescaled/, which the checkout's .gitignore covers, and nowhere else."""
    counts = [f"--{k}={n}" for k, n in COUNTS.items()]
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": REPO}
    command = [sys.executable, "-m", "experiments.rescale", f"--source={source}", *counts]
    proc = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.splitlines()[0] == "runs/rescaled/squares-seed0.npz"
    assert os.listdir(tmp_path) == ["runs"]
    assert len(load_dataset(f"npz:{tmp_path}/runs/rescaled/squares-seed0.npz").train) == 120
