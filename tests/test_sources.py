"""load_dataset: TFDS builders and names (mocked), npz and folder round-trips, bad-data errors."""

import pickle

import numpy as np
import pytest
import tensorflow_datasets as tfds
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from fcn_jax.data import DataError, load_dataset
from fcn_jax.data.arrays import save_npz


@pytest.fixture(scope="module")
def tfds_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("tfds"))


def _save_npz(path, **arrays):
    """The repository's writer: lists of per-example arrays as values + sizes, never pickled."""
    save_npz(str(path), arrays)
    return f"npz:{path}"


def _objects(arrays):
    out = np.empty(len(arrays), object)
    out[:] = arrays
    return out


# --- this package's TFDS builders ----------------------------------------------------------


def test_procedural_digits(tfds_dir):
    ds = load_dataset("procedural_digits/tiny_variable", tfds_dir)
    assert (ds.name, ds.num_classes, ds.in_channels, ds.spatial_dims) == (
        "procedural_digits/tiny_variable",
        10,
        1,
        2,
    )
    assert (len(ds.train), len(ds.test)) == (512, 256)
    ex = ds.train[3]
    assert ex["image"].dtype == np.float32 and ex["image"].ndim == 3
    assert 0.0 <= ex["image"].min() and ex["image"].max() <= 1.0
    assert isinstance(ex["label"], int) and 0 <= ex["label"] < 10
    assert ex["bbox"].dtype == np.int32 and ex["bbox"].shape == (4,)
    sizes = ds.train.sizes()
    assert sizes.shape == (512, 2) and sizes.min() >= 16 and sizes.max() <= 64
    assert tuple(sizes[3]) == ex["image"].shape[:2]
    assert ds.train.sizes() is sizes  # cached
    many = ds.train.get_many([3, 0])  # batched read
    np.testing.assert_array_equal(many[0]["image"], ex["image"])
    assert many[1]["label"] == ds.train[0]["label"]


def test_mnist1d(tfds_dir):
    ds = load_dataset("mnist1d/tiny_variable", tfds_dir)
    assert (ds.spatial_dims, ds.in_channels, ds.num_classes) == (1, 1, 10)
    ex = ds.test[0]
    assert ex["image"].dtype == np.float32 and ex["image"].shape[-1] == 1
    assert "bbox" not in ex
    assert ds.test.sizes()[0, 0] == ex["image"].shape[0]


# --- TFDS by name ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, shape, classes",
    [("mnist", (28, 28, 1), 10), ("cifar10", (32, 32, 3), 10), ("fashion_mnist", (28, 28, 1), 10)],
)
def test_tfds_name_with_mock_data(tmp_path, name, shape, classes):
    # mock_data patches tfds.data_source (builder.as_data_source) with random examples; it
    # needs no TensorFlow.
    with tfds.testing.mock_data(num_examples=6, policy=tfds.testing.MockPolicy.USE_CODE):
        ds = load_dataset(name, str(tmp_path))
        ex = ds.train[5]
        assert len(ds.train) == len(ds.test) == 6
        assert (ds.num_classes, ds.in_channels, ds.spatial_dims) == (classes, shape[-1], 2)
        assert ex["image"].shape == shape and ex["image"].dtype == np.float32
        assert 0 <= ex["label"] < classes
        assert ds.train.sizes().tolist() == [list(shape[:2])] * 6


def test_tfds_name_variable_sizes_with_mock_data(tmp_path):
    with tfds.testing.mock_data(num_examples=5, policy=tfds.testing.MockPolicy.USE_CODE):
        ds = load_dataset("imagenette/160px", str(tmp_path))
        assert ds.in_channels == 3
        assert [ds.train[i]["image"].shape[:2] for i in range(5)] == [
            tuple(s) for s in ds.train.sizes()
        ]


def test_tfds_not_prepared(tmp_path):
    with pytest.raises(DataError, match="not prepared") as err:
        load_dataset("mnist", str(tmp_path))
    msg = str(err.value)
    assert "\n" not in msg and "tensorflow" in msg and str(tmp_path) in msg
    assert 'file_format="array_record"' in msg


@pytest.mark.parametrize(
    "spec, match",
    [
        ("mnistt", "unknown dataset 'mnistt'.*did you mean 'mnist'"),
        ("procedural_digits/bogus", "no config 'bogus'; available: variable"),
    ],
)
def test_unknown_names(tmp_path, spec, match):
    with pytest.raises(DataError, match=match):
        load_dataset(spec, str(tmp_path))


# --- npz -----------------------------------------------------------------------------------


def test_npz_fixed_2d_grayscale(tmp_path):
    rng = np.random.default_rng(0)
    tr = rng.integers(0, 256, (7, 5, 9), dtype=np.uint8)
    spec = _save_npz(
        tmp_path / "d.npz",
        train_images=tr,
        train_labels=np.arange(7) % 3,
        test_images=tr[:2],
        test_labels=np.array([0, 4]),
    )
    ds = load_dataset(spec)
    assert (ds.num_classes, ds.in_channels, ds.spatial_dims) == (5, 1, 2)
    np.testing.assert_allclose(ds.train[2]["image"][..., 0], tr[2] / 255.0, rtol=1e-6)
    assert ds.train[2]["label"] == 2
    assert ds.train.sizes().tolist() == [[5, 9]] * 7


def test_npz_channels_and_float_kept(tmp_path):
    tr = np.random.default_rng(0).normal(size=(4, 6, 5, 3)).astype(np.float32) * 10
    spec = _save_npz(
        tmp_path / "d.npz",
        train_images=tr,
        train_labels=np.zeros(4, int),
        test_images=tr,
        test_labels=np.zeros(4, int),
        num_classes=3,
    )
    ds = load_dataset(spec, pixel_range=(-100.0, 100.0))  # accepted outside [0, 1]
    assert (ds.num_classes, ds.in_channels) == (3, 3)
    np.testing.assert_array_equal(ds.test[1]["image"], tr[1])


@pytest.mark.parametrize(
    "shape, dims_key, want",
    [((5, 40), None, ((40,), 1)), ((5, 40, 2), 1, ((40,), 2)), ((5, 8, 9), 2, ((8, 9), 1))],
)
def test_npz_1d_and_spatial_dims_key(tmp_path, shape, dims_key, want):
    extra = {} if dims_key is None else {"spatial_dims": dims_key}
    x = np.ones(shape, np.float32)
    spec = _save_npz(
        tmp_path / "d.npz",
        train_images=x,
        train_labels=np.ones(5, int),
        test_images=x,
        test_labels=np.ones(5, int),
        **extra,
    )
    ds = load_dataset(spec)
    assert ds.spatial_dims == len(want[0]) and ds.in_channels == want[1]
    assert ds.train[0]["image"].shape == (*want[0], want[1])


@settings(max_examples=15, deadline=None)
@given(
    dims=st.sampled_from([1, 2]),
    sizes=st.lists(st.tuples(st.integers(1, 30), st.integers(1, 30)), min_size=1, max_size=6),
)
def test_npz_variable_shapes(tmp_path_factory, dims, sizes):
    shapes = [s[:dims] for s in sizes]
    rng = np.random.default_rng(len(sizes))
    arrays = [rng.integers(0, 256, s, dtype=np.uint8) for s in shapes]
    path = tmp_path_factory.mktemp("npz") / "v.npz"
    spec = _save_npz(
        path,
        train_images=arrays,
        train_labels=np.arange(len(arrays)),
        test_images=arrays[:1],
        test_labels=np.array([0]),
        num_classes=len(arrays) + 1,  # at least 2
    )
    ds = load_dataset(spec)
    assert ds.spatial_dims == dims and ds.num_classes == len(arrays) + 1
    assert [tuple(s) for s in ds.train.sizes()] == shapes
    for i, a in enumerate(arrays):
        np.testing.assert_allclose(ds.train[i]["image"][..., 0], a / 255.0, rtol=1e-6)


def _npz_case(tmp_path, **override):
    arrays = {
        "train_images": np.zeros((3, 4, 4), np.float32),
        "train_labels": np.array([0, 1, 2]),
        "test_images": np.zeros((2, 4, 4), np.float32),
        "test_labels": np.array([0, 1]),
    }
    arrays.update(override)
    arrays = {k: v for k, v in arrays.items() if v is not None}
    return _save_npz(tmp_path / "bad.npz", **arrays)


def _with(index, value, shape=(3, 4, 4)):
    x = np.zeros(shape, np.float32)
    x[index] = value
    return x


@pytest.mark.parametrize(
    "override, match",
    [
        ({"test_labels": None}, "missing key.*test_labels"),
        ({"train_images": _with((1, 2, 2), np.nan)}, "train_images: example 1 has NaN or inf"),
        ({"test_images": _with((1, 0, 0), np.inf, (2, 4, 4))}, "test_images: example 1 has NaN"),
        ({"train_labels": np.array([0, -1, 2])}, "train_labels: label -1 at index 1"),
        ({"test_labels": np.array([0, 5]), "num_classes": 3}, r"label 5 at index 1.*\[0, 3\)"),
        ({"train_labels": np.array([0, 1])}, r"train_labels: shape \(2,\)"),
        ({"train_labels": np.array([0.0, 1.0, 2.0])}, "train_labels: dtype float64"),
        ({"train_images": np.zeros((0, 4, 4), np.uint8)}, "train_images: empty"),
        ({"train_images": np.zeros((3, 4, 4), np.int32)}, "train_images: dtype int32"),
        ({"test_images": np.zeros((2, 4, 4, 3), np.uint8)}, "train_images have 1 channels"),
        ({"spatial_dims": 3}, "spatial_dims must be 1 or 2"),
        (
            {"train_images": _with((1, 2, 2), 1000.0)},
            r"train_images: float pixel values span \[0, 1000\], outside \[0, 1\]: rescale them "
            r"\(uint8 is divided by 255\) or accept them with --pixel_range=0,1000$",
        ),
        ({"train_labels": np.zeros(3, int), "test_labels": np.zeros(2, int)}, "1 class; a "),
        ({"num_classes": 3, "class_names": np.array(["a", "b"])}, "disagree"),
        (
            {"train_images": [np.zeros((4, 4, 1)), np.zeros((4, 4, 3)), np.zeros((2, 2, 1))]},
            r"train_images: example 1 has shape \(4, 4, 3\)",
        ),
    ],
)
def test_npz_bad_data(tmp_path, override, match):
    spec = _npz_case(tmp_path, **override)
    with pytest.raises(DataError, match=match) as err:
        load_dataset(spec)
    assert "bad.npz" in str(err.value) and "\n" not in str(err.value)


def test_npz_class_counts(tmp_path, caplog):
    """A stated count bounds the labels; an inferred one warns about classes never trained."""
    spec = _npz_case(tmp_path, class_names=np.array(["a", "b", "c", "d"]))
    assert load_dataset(spec).num_classes == 4
    spec = _npz_case(tmp_path, train_labels=np.array([0, 2, 2]), test_labels=np.array([0, 1]))
    with caplog.at_level("WARNING"):
        assert load_dataset(spec).num_classes == 3
    assert "class(es) [1] have no training examples" in caplog.text


def test_npz_missing_file(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        load_dataset(f"npz:{tmp_path}/nothing.npz")
    (tmp_path / "p.npz").write_bytes(pickle.dumps({"train_images": 1}))
    with pytest.raises(DataError, match="not an .npz file"):  # never unpickled, flag or not
        load_dataset(f"npz:{tmp_path}/p.npz", allow_pickle=True)


class _WritesFile:
    """Unpickled, it writes a file: what a crafted npz can do to whoever reads it."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return exec, (f"open({self.path!r}, 'w').write('ran')",)


def test_npz_object_arrays_need_allow_pickle(tmp_path):
    """A crafted object array runs nothing: one line names --allow_pickle and why. With the
    flag (trusted files) the old layout still reads, as the values + sizes layout does."""
    marker, path = tmp_path / "ran.txt", tmp_path / "crafted.npz"
    labels = {"train_labels": np.array([0, 1]), "test_labels": np.array([0, 1])}
    images = _objects([np.zeros((4, 4), np.uint8), np.zeros((5, 3), np.uint8)])
    np.savez(path, train_images=_objects([_WritesFile(marker), 0]), test_images=images, **labels)
    with pytest.raises(DataError) as err:
        load_dataset(f"npz:{path}")
    message = str(err.value)
    assert "--allow_pickle" in message and "runs any code" in message and "\n" not in message
    assert message.startswith(f"npz:{path}: key train_images is an object array")
    assert not marker.exists()
    with pytest.raises(DataError):  # the file was really crafted: unpickling runs its code
        load_dataset(f"npz:{path}", allow_pickle=True)
    assert marker.read_text() == "ran"

    old, new = tmp_path / "old.npz", tmp_path / "new.npz"
    np.savez(old, train_images=images, test_images=images, **labels)
    _save_npz(new, train_images=list(images), test_images=list(images), **labels)
    with np.load(new) as z:  # no object array in the new layout
        assert z["train_images"].shape == (31,) and z["train_sizes"].tolist() == [[4, 4], [5, 3]]
    with pytest.raises(DataError, match="--allow_pickle"):
        load_dataset(f"npz:{old}")
    a, b = load_dataset(f"npz:{old}", allow_pickle=True), load_dataset(f"npz:{new}")
    assert a.train.sizes().tolist() == b.train.sizes().tolist() == [[4, 4], [5, 3]]


@pytest.mark.parametrize(
    "sizes, values, match",
    [
        (np.array([[2, 2], [3, 1]]), np.zeros(6, np.uint8), "7 values concatenated"),
        (np.array([[2, 0]]), np.zeros(0, np.uint8), "positive integers"),
        (np.array([2, 2]), np.zeros(4, np.uint8), r"an \(N, rank\) array"),
        (np.zeros((0, 2), np.int64), np.zeros(0, np.uint8), "test_images: empty"),
    ],
)
def test_npz_sizes_layout_errors(tmp_path, sizes, values, match):
    """A sizes key that does not fit its values, or an empty split, is one line."""
    spec = _npz_case(tmp_path, test_images=values, test_sizes=sizes, test_labels=np.zeros(0, int))
    with pytest.raises(DataError, match=match) as err:
        load_dataset(spec)
    assert "\n" not in str(err.value)


# --- folders -------------------------------------------------------------------------------


def _write(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def _gray(rng, h, w):
    return rng.integers(0, 256, (h, w), dtype=np.uint8)


def test_folder_train_test_subfolders(tmp_path):
    rng = np.random.default_rng(0)
    pixels = {}
    for split in ("train", "test"):
        for cls, (h, w) in (("cat", (13, 7)), ("dog", (9, 21))):
            a = _gray(rng, h, w)
            pixels[split, cls] = a
            _write(tmp_path / split / cls / "a.png", a)
            _write(tmp_path / split / cls / "b.JPG", _gray(rng, w, h))
    (tmp_path / "train" / "cat" / "notes.txt").write_text("ignored")
    ds = load_dataset(f"folder:{tmp_path}")
    assert (ds.num_classes, ds.in_channels, ds.spatial_dims) == (2, 1, 2)
    assert len(ds.train) == len(ds.test) == 4
    ex = [ds.train[i] for i in range(4)]
    assert [e["label"] for e in ex] == [0, 0, 1, 1]
    np.testing.assert_allclose(ex[0]["image"][..., 0], pixels["train", "cat"] / 255.0, rtol=1e-6)
    assert ds.train.sizes().tolist() == [[13, 7], [7, 13], [9, 21], [21, 9]]
    assert [e["image"].shape[:2] for e in ex] == [tuple(s) for s in ds.train.sizes()]


def test_folder_hash_split_rgb(tmp_path):
    rng = np.random.default_rng(1)
    for cls in ("a", "b", "c"):
        for i in range(15):
            rgb = rng.integers(0, 256, (5 + i, 11, 3), dtype=np.uint8)
            ext = "png" if i % 2 else "jpeg"
            _write(tmp_path / cls / f"{i}.{ext}", rgb)
    # A palette image counts as colour; RGBA loses its alpha.
    Image.new("P", (4, 6), 3).save(tmp_path / "a" / "p.png")
    _write(tmp_path / "b" / "rgba.png", np.full((3, 3, 4), 200, np.uint8))
    ds = load_dataset(f"folder:{tmp_path}")
    again = load_dataset(f"folder:{tmp_path}")
    assert ds.in_channels == 3 and ds.num_classes == 3
    assert len(ds.train) + len(ds.test) == 47 and 0 < len(ds.test) < 20
    assert ds.test.sizes().tolist() == again.test.sizes().tolist()  # deterministic split
    assert all(ds.test[i]["image"].shape[-1] == 3 for i in range(len(ds.test)))


def test_folder_corrupt_files(tmp_path):
    rng = np.random.default_rng(2)
    for i in range(4):
        _write(tmp_path / "train" / "xy"[i % 2] / f"{i}.png", _gray(rng, 8, 8))
        _write(tmp_path / "test" / "xy"[i % 2] / f"{i}.png", _gray(rng, 8, 8))
    good = _write(tmp_path / "train" / "x" / "t.jpg", _gray(rng, 30, 30)).read_bytes()
    (tmp_path / "train" / "x" / "t.jpg").write_bytes(good[: len(good) // 2])  # truncated
    (tmp_path / "test" / "x" / "z.png").write_bytes(b"not an image")
    with pytest.raises(DataError, match=r"cannot decode image file .*t\.jpg"):
        load_dataset(f"folder:{tmp_path}")
    ds = load_dataset(f"folder:{tmp_path}", skip_corrupt=True)
    assert (ds.train.skipped, ds.test.skipped) == (1, 1)
    assert (len(ds.train), len(ds.test)) == (4, 4)


def test_folder_keeps_the_decompression_bomb_limit(tmp_path, monkeypatch):
    """PIL's limit stays on: an image of more than twice Image.MAX_IMAGE_PIXELS (here made
    small) is refused before it is decoded, in one line."""
    rng = np.random.default_rng(4)
    for i in range(4):
        _write(tmp_path / "xy"[i % 2] / f"{i}.png", _gray(rng, 8, 8))
    _write(tmp_path / "x" / "big.png", _gray(rng, 40, 40))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 500)
    with pytest.raises(DataError, match=r"big\.png: Image size \(1600 pixels\) exceeds limit") as e:
        load_dataset(f"folder:{tmp_path}")
    assert "decompression bomb" in str(e.value) and "\n" not in str(e.value)


def test_folder_mixed_channels(tmp_path):
    rng = np.random.default_rng(3)
    _write(tmp_path / "a" / "g.png", _gray(rng, 5, 5))
    _write(tmp_path / "b" / "c.png", rng.integers(0, 256, (5, 5, 3), dtype=np.uint8))
    with pytest.raises(DataError, match=r"mixed channel counts: .*g\.png is grayscale.*c\.png"):
        load_dataset(f"folder:{tmp_path}")


def test_folder_empty_and_missing(tmp_path):
    with pytest.raises(DataError, match="no such directory"):
        load_dataset(f"folder:{tmp_path}/nope")
    with pytest.raises(DataError, match="no class subfolders"):
        load_dataset(f"folder:{tmp_path}")
    _write(tmp_path / "a" / "x.png", np.zeros((3, 3), np.uint8))
    (tmp_path / "b").mkdir()
    with pytest.raises(DataError, match=r"class folder .*/b has no PNG/JPEG"):
        load_dataset(f"folder:{tmp_path}")
    (tmp_path / "b").rmdir()
    with pytest.raises(DataError, match=r"one class folder \(a\); a classifier needs at least 2$"):
        load_dataset(f"folder:{tmp_path}")


@pytest.mark.parametrize("mode", ["L", "RGB"])
def test_decode_image_is_what_training_and_predict_read(tmp_path, mode):
    """One decode for the folder source and for predict: the same array, bit for bit."""
    from fcn_jax.data.folder import decode_image
    from fcn_jax.predict import load_image

    rng = np.random.default_rng(4)
    shape = (9, 13) if mode == "L" else (9, 13, 3)
    for split in ("train", "test"):
        for cls in ("a", "b"):
            _write(tmp_path / split / cls / "x.png", rng.integers(0, 256, shape, dtype=np.uint8))
    ds = load_dataset(f"folder:{tmp_path}")
    channels = 1 if mode == "L" else 3
    assert ds.in_channels == channels
    path = tmp_path / "train" / "b" / "x.png"
    decoded = decode_image(path, channels)
    assert decoded.shape == (9, 13, channels) and decoded.dtype == np.float32
    np.testing.assert_array_equal(decoded, ds.train[1]["image"])
    np.testing.assert_array_equal(decoded, load_image(str(path), channels))
    with open(path, "rb") as f:
        np.testing.assert_array_equal(decoded, decode_image(f, channels))
    want = np.asarray(Image.open(path).convert(mode)).reshape(9, 13, channels) / np.float32(255)
    np.testing.assert_array_equal(decoded, want)


def test_decode_image_errors_name_the_file(tmp_path):
    from fcn_jax.data.folder import decode_image

    rng = np.random.default_rng(5)
    for cls in ("a", "b"):
        for split in ("train", "test"):
            _write(tmp_path / split / cls / "x.png", _gray(rng, 4, 4))
    ds = load_dataset(f"folder:{tmp_path}")
    (tmp_path / "train" / "a" / "x.png").write_bytes(b"gone bad since")
    with pytest.raises(DataError, match=r"^cannot read image .*a/x\.png: not a readable image$"):
        ds.train[0]
    with pytest.raises(DataError, match="1- or 3-channel models, not 4 channels"):
        decode_image(tmp_path / "test" / "a" / "x.png", 4)
