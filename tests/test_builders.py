"""Tests for the built-in TFDS builders `procedural_digits` and `mnist1d` (CPU, small configs)."""

import sys

import numpy as np
import pytest
import tensorflow_datasets as tfds
from hypothesis import given, settings
from hypothesis import strategies as st

from fcn_jax.data import mnist1d_builder, procedural_digits
from fcn_jax.data.procedural_digits import ProceduralDigits, generate_example, render_digit

tfds.disable_progress_bar()


def _read(name, data_dir, split):
    return tfds.data_source(name, split=split, data_dir=str(data_dir))


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("tfds")
    for name in ("procedural_digits/tiny_variable", "procedural_digits/tiny_fixed28"):
        procedural_digits.prepare(name, str(d))
    for name in ("mnist1d/standard", "mnist1d/tiny_variable"):
        mnist1d_builder.prepare(name, str(d))
    return d


# ---------------------------------------------------------------------------- render_digit


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    digit=st.integers(0, 9),
    height=st.integers(16, 64),
    width=st.integers(16, 64),
)
def test_render_digit_shape_and_bbox(seed, digit, height, width):
    image, bbox = render_digit(np.random.default_rng(seed), digit, height, width)
    assert image.shape == (height, width) and image.dtype == np.uint8
    y0, x0, y1, x1 = bbox
    assert bbox.dtype == np.int32 and 0 <= y0 < y1 <= height and 0 <= x0 < x1 <= width


def test_render_digit_is_deterministic():
    a = render_digit(np.random.default_rng([1, 2, 3]), 7, 40, 30)
    b = render_digit(np.random.default_rng([1, 2, 3]), 7, 40, 30)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])


def test_generate_example_is_order_independent():
    cfg = ProceduralDigits.builder_configs["tiny_variable"]
    forward = [generate_example(cfg, "train", i) for i in range(5)]
    backward = [generate_example(cfg, "train", i) for i in reversed(range(5))][::-1]
    for (ia, la, ba), (ib, lb, bb) in zip(forward, backward, strict=True):
        np.testing.assert_array_equal(ia, ib)
        assert la == lb
        np.testing.assert_array_equal(ba, bb)
    # Splits draw from different streams.
    assert not np.array_equal(forward[0][0], generate_example(cfg, "test", 0)[0])


def test_configs():
    names = [c.name for c in ProceduralDigits.BUILDER_CONFIGS]
    assert names[0] == "variable"
    assert {"variable", "fixed28", "tiny_variable", "tiny_fixed28"} <= set(names)
    assert tfds.builder_cls("procedural_digits") is ProceduralDigits


# ------------------------------------------------------------------------ procedural_digits


def test_variable_shapes_bbox_labels(data_dir):
    name = "procedural_digits/tiny_variable"
    sizes = {"train": 512, "test": 256}
    for split, n in sizes.items():
        ds = _read(name, data_dir, split)
        assert len(ds) == n
        heights, widths, labels = set(), set(), []
        for i in range(len(ds)):
            ex = ds[i]
            img, (y0, x0, y1, x1) = ex["image"], ex["bbox"]
            h, w, c = img.shape
            assert img.dtype == np.uint8 and c == 1
            assert 16 <= h <= 64 and 16 <= w <= 64
            assert 0 <= y0 < y1 <= h and 0 <= x0 < x1 <= w
            heights.add(h)
            widths.add(w)
            labels.append(int(ex["label"]))
        # Sides are drawn independently from the 16-pixel grid, and every value occurs.
        assert heights == widths == {16, 32, 48, 64}
        assert set(labels) == set(range(10))


def test_bbox_holds_the_digit(data_dir):
    # Digit ink is brighter than the background: mean inside the box beats the mean outside.
    ds = _read("procedural_digits/tiny_variable", data_dir, "train")
    wins = 0
    for i in range(100):
        img, (y0, x0, y1, x1) = ds[i]["image"][..., 0].astype(float), ds[i]["bbox"]
        mask = np.zeros(img.shape, bool)
        mask[y0:y1, x0:x1] = True
        wins += (~mask).any() and img[mask].mean() > img[~mask].mean()
    assert wins >= 90


def test_fixed28(data_dir):
    ds = _read("procedural_digits/tiny_fixed28", data_dir, "train")
    assert len(ds) == 512
    labels = set()
    for i in range(len(ds)):
        ex = ds[i]
        assert ex["image"].shape == (28, 28, 1)
        y0, x0, y1, x1 = ex["bbox"]
        assert 0 <= y0 < y1 <= 28 and 0 <= x0 < x1 <= 28
        labels.add(int(ex["label"]))
    assert labels == set(range(10))
    assert len(_read("procedural_digits/tiny_fixed28", data_dir, "test")) == 256


def test_build_is_deterministic(data_dir, tmp_path):
    name = "procedural_digits/tiny_variable"
    builder = procedural_digits.prepare(name, str(tmp_path))
    assert builder.info.file_format.value == "array_record"
    a, b = _read(name, data_dir, "test"), _read(name, tmp_path, "test")
    for i in range(len(a)):
        np.testing.assert_array_equal(a[i]["image"], b[i]["image"])
        np.testing.assert_array_equal(a[i]["bbox"], b[i]["bbox"])
        assert a[i]["label"] == b[i]["label"]


def test_prepare_reuses_built_data(data_dir):
    builder = procedural_digits.prepare("procedural_digits/tiny_fixed28", str(data_dir))
    assert builder.info.splits["train"].num_examples == 512
    assert builder.as_data_source("test")[0]["image"].shape == (28, 28, 1)


# --------------------------------------------------------------------------------- mnist1d


def test_mnist1d_standard(data_dir):
    train, test = _read("mnist1d", data_dir, "train"), _read("mnist1d", data_dir, "test")
    assert (len(train), len(test)) == (4000, 1000)
    labels = set()
    for i in range(0, 4000, 37):
        ex = train[i]
        assert ex["image"].shape == (40, 1) and ex["image"].dtype == np.float32
        labels.add(int(ex["label"]))
    assert labels == set(range(10))


def test_mnist1d_standard_matches_package():
    from mnist1d.data import get_dataset_args, make_dataset

    ref = make_dataset(get_dataset_args())
    cfg = mnist1d_builder.Mnist1d.builder_configs["standard"]
    xs, ys = mnist1d_builder.generate_split(cfg, "test")
    np.testing.assert_allclose(np.stack(xs), ref["x_test"], rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(ys, ref["y_test"])


def test_mnist1d_variable(data_dir):
    name = "mnist1d/tiny_variable"
    train = _read(name, data_dir, "train")
    assert len(train) == 512 and len(_read(name, data_dir, "test")) == 128
    lengths, labels = set(), set()
    for i in range(len(train)):
        ex = train[i]
        length, c = ex["image"].shape
        assert c == 1 and 24 <= length <= 72
        lengths.add(length)
        labels.add(int(ex["label"]))
    assert len(lengths) > 30 and labels == set(range(10))


def test_mnist1d_generation_is_deterministic():
    cfg = mnist1d_builder.Mnist1d.builder_configs["tiny_variable"]
    state = np.random.get_state()
    (xa, ya), (xb, yb) = (mnist1d_builder.generate_split(cfg, "train") for _ in range(2))
    assert all(np.array_equal(a, b) for a, b in zip(xa, xb, strict=True))
    np.testing.assert_array_equal(ya, yb)
    # The package reseeds numpy's global RNG; the builder restores it.
    assert np.array_equal(np.random.get_state()[1], state[1])


# ------------------------------------------------------------------------------ no TF


def test_tensorflow_not_imported(data_dir):
    # Build and read have happened (fixture); neither may have pulled in TensorFlow.
    _read("procedural_digits/tiny_variable", data_dir, "train")[0]
    assert "tensorflow" not in sys.modules


def test_concurrent_prepare_builds_once(tmp_path):
    """Runs of a sweep start together: they must not race on building the same dataset."""
    import subprocess
    import sys

    code = (
        "import sys; from fcn_jax.data.procedural_digits import prepare; "
        "print(prepare('procedural_digits/tiny_fixed28', sys.argv[1]).info.splits['train']"
        ".num_examples)"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(tmp_path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    for p in procs:
        out, err = p.communicate(timeout=180)
        assert p.returncode == 0, err[-1500:]
        assert out.split()[-1] == "512"  # (TFDS prints its progress to stdout too)
