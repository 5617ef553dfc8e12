"""IDX files: the ``idx:`` source (plain/gzip, dtypes, shapes, prefixes, bad files) and TFDS's
fashion_mnist / mnist built from IDX files without TensorFlow."""

import gzip
import struct
import sys

import numpy as np
import pytest

from fcn_jax.data import DataError, load_dataset
from fcn_jax.data.idx import IDX_NAMES, read_idx

_CODES = {"uint8": 0x08, "int8": 0x09, "int16": 0x0B, "int32": 0x0C, "float32": 0x0D}
_CODES["float64"] = 0x0E
FASHION = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat")
FASHION += ("Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")


def idx_bytes(array) -> bytes:
    """An IDX file's bytes: header (dtype code, dims) then big-endian data."""
    a = np.asarray(array)
    head = bytes([0, 0, _CODES[a.dtype.name], a.ndim]) + struct.pack(f">{a.ndim}I", *a.shape)
    return head + a.astype(a.dtype.newbyteorder(">")).tobytes()


def write_idx(path, array, gz: bool = False):
    """Write ``array`` as an IDX file at ``path`` (``path.gz``, gzipped, when ``gz``)."""
    data = idx_bytes(array)
    if gz:
        path, data = path.with_name(path.name + ".gz"), gzip.compress(data)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def write_set(directory, arrays: dict, gz: bool = False, prefix: str = ""):
    """The four files of a set; ``arrays`` maps the keys of IDX_NAMES to arrays."""
    return {k: write_idx(directory / (prefix + IDX_NAMES[k]), a, gz) for k, a in arrays.items()}


def digits(n_train=12, n_test=5, shape=(6, 7), seed=0):
    """uint8 images ``(N, *shape)`` and uint8 labels covering 0..9."""
    rng = np.random.default_rng(seed)
    return {
        "train_images": rng.integers(0, 256, (n_train, *shape), dtype=np.uint8),
        "train_labels": (np.arange(n_train) % 10).astype(np.uint8),
        "test_images": rng.integers(0, 256, (n_test, *shape), dtype=np.uint8),
        "test_labels": (np.arange(n_test) % 10).astype(np.uint8),
    }


def _images(source) -> np.ndarray:
    return np.stack([source[i]["image"] for i in range(len(source))])


# --- the idx: source -------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", list(_CODES))
def test_read_idx_honours_dtype_and_shape(tmp_path, dtype):
    a = (np.arange(24).reshape(2, 3, 4) - 5).astype(dtype)
    for gz in (False, True):
        out = read_idx(write_idx(tmp_path / f"a{gz}", a, gz))
        assert out.dtype == np.dtype(dtype) and out.dtype.isnative and out.shape == (2, 3, 4)
        np.testing.assert_array_equal(out, a)


def test_plain_and_gzip_load_equal(tmp_path, monkeypatch):
    arrays = digits()
    write_set(tmp_path / "plain", arrays)
    write_set(tmp_path / "gz", arrays, gz=True)
    monkeypatch.setenv("HOME", str(tmp_path))  # `--dataset=idx:~/...`: the shell leaves ~ as is
    plain, gz = load_dataset(f"idx:{tmp_path / 'plain'}"), load_dataset("idx:~/gz")
    assert plain.name == f"idx:{tmp_path / 'plain'}"
    assert (plain.num_classes, plain.in_channels, plain.spatial_dims) == (10, 1, 2)
    assert plain.class_names == tuple(str(i) for i in range(10))
    assert (len(plain.train), len(plain.test)) == (12, 5)
    for ds in (plain, gz):
        np.testing.assert_allclose(
            _images(ds.train)[..., 0], arrays["train_images"] / 255.0, rtol=1e-6
        )
        assert [ds.test[i]["label"] for i in range(5)] == arrays["test_labels"].tolist()
    assert plain.train.sizes().tolist() == [[6, 7]] * 12


def test_float_images_int16_labels_and_1d(tmp_path):
    rng = np.random.default_rng(1)
    arrays = {
        "train_images": rng.random((8, 30), dtype=np.float32),  # (N, L): 1-D signals
        "train_labels": np.array([0, 1, 2, 300, 0, 1, 2, 300], np.int16),
        "test_images": rng.random((3, 30), dtype=np.float32),
        "test_labels": np.array([2, 1, 0], np.int16),
    }
    write_set(tmp_path, arrays)
    ds = load_dataset(f"idx:{tmp_path}")
    assert (ds.spatial_dims, ds.in_channels, ds.num_classes) == (1, 1, 301)
    np.testing.assert_array_equal(_images(ds.train)[..., 0], arrays["train_images"])
    assert ds.train[3]["label"] == 300
    arrays["train_images"] = arrays["train_images"] * 3
    write_set(tmp_path, arrays)
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte: float pixel values span"):
        load_dataset(f"idx:{tmp_path}")
    assert load_dataset(f"idx:{tmp_path}", pixel_range=(0.0, 3.0)).train.in_channels == 1


def test_channels_last_images(tmp_path):
    arrays = digits(shape=(5, 4, 3))
    write_set(tmp_path, arrays, gz=True)
    ds = load_dataset(f"idx:{tmp_path}")
    assert (ds.spatial_dims, ds.in_channels) == (2, 3)
    assert ds.test[0]["image"].shape == (5, 4, 3)


def _corrupt(tmp_path, key, data: bytes):
    write_set(tmp_path, digits())
    (tmp_path / IDX_NAMES[key]).write_bytes(data)
    return IDX_NAMES[key]


def _header(code=0x08, dims=(12, 6, 7)):
    return bytes([0, 0, code, len(dims)]) + struct.pack(f">{len(dims)}I", *dims)


_GOOD_IMAGES = idx_bytes(digits()["train_images"])
_BAD = {
    "bad magic": ("train_images", b"\x01\x02" + _GOOD_IMAGES[2:], "corrupt header: starts with"),
    "bad dtype": ("train_images", _header(0x0A) + b"\0" * 504, "unknown dtype code 0x0A"),
    "no dims": ("test_labels", b"\0\0\x08\0", "corrupt header: 0 dimensions"),
    "short header": ("test_labels", b"\0\0\x08\x03\0\0", "truncated header"),
    "truncated": ("train_images", _GOOD_IMAGES[:-10], "truncated file: has 494 bytes of data, "),
    "trailing": ("train_images", _GOOD_IMAGES + b"xx", "2 bytes of trailing garbage: has 506 "),
    "bad gzip": ("train_labels", gzip.compress(b"\0" * 99)[:-12], "corrupt gzip data"),
    "count": ("test_labels", idx_bytes(np.zeros(4, np.uint8)), "4 labels, but t10k-images"),
    "int images": ("test_images", idx_bytes(np.zeros((5, 2), np.int32)), "dtype int32 is n"),
    "2-D labels": ("train_labels", idx_bytes(np.zeros((12, 2), np.uint8)), r"shape \(12, 2\)"),
}


@pytest.mark.parametrize("case", list(_BAD))
def test_bad_files(tmp_path, case):
    key, data, match = _BAD[case]
    name = _corrupt(tmp_path, key, data)
    with pytest.raises(DataError, match=match) as err:
        load_dataset(f"idx:{tmp_path}")
    assert name in str(err.value) and "\n" not in str(err.value)


def test_missing_files(tmp_path):
    files = write_set(tmp_path, digits(), gz=True)
    files["test_labels"].unlink()
    with pytest.raises(DataError) as err:
        load_dataset(f"idx:{tmp_path}")
    msg = str(err.value)
    assert (
        msg == f"idx:{tmp_path}: missing t10k-labels-idx1-ubyte (each plain or .gz) in {tmp_path}"
    )
    with pytest.raises(DataError, match="no such directory$"):
        load_dataset(f"idx:{tmp_path}/no/such")


def test_one_class_is_an_error(tmp_path):
    arrays = digits()
    arrays["train_labels"][:] = arrays["test_labels"][:] = 0
    write_set(tmp_path, arrays)
    with pytest.raises(DataError, match="1 class; a classifier needs at least 2"):
        load_dataset(f"idx:{tmp_path}")


def test_emnist_style_prefixes(tmp_path):
    balanced, letters = digits(seed=1), digits(n_train=7, seed=2)
    write_set(tmp_path, balanced, gz=True, prefix="emnist-balanced-")
    with pytest.raises(DataError, match="no such directory, nor a prefix.*emnist-letters-train"):
        load_dataset(f"idx:{tmp_path}/emnist-letters")
    assert len(load_dataset(f"idx:{tmp_path}").train) == 12  # the one prefixed set
    write_set(tmp_path, letters, gz=True, prefix="emnist-letters-")
    ds = load_dataset(f"idx:{tmp_path}/emnist-letters")
    assert len(ds.train) == 7 and ds.name == f"idx:{tmp_path}/emnist-letters"
    np.testing.assert_allclose(ds.test[1]["image"][..., 0], letters["test_images"][1] / 255.0)
    with pytest.raises(DataError) as err:
        load_dataset(f"idx:{tmp_path}")
    msg = str(err.value)
    assert "2 prefixed sets" in msg and "\n" not in msg
    assert f"idx:{tmp_path}/emnist-balanced, idx:{tmp_path}/emnist-letters" in msg


# --- TFDS mnist family from IDX files ------------------------------------------------------


def _sorted_pairs(images, labels):
    return sorted((np.asarray(x, np.uint8).tobytes(), int(y)) for x, y in zip(images, labels))


def test_tfds_fashion_mnist_from_idx(tmp_path, caplog):
    arrays = digits(n_train=24, n_test=10, shape=(28, 28), seed=3)
    write_set(tmp_path, arrays, gz=True)
    with caplog.at_level("WARNING"):
        ds = load_dataset("fashion_mnist", str(tmp_path))
    assert f"building it from the IDX files in {tmp_path}" in caplog.text
    assert "tensorflow" not in sys.modules
    assert ds.name == "fashion_mnist" and ds.class_names == FASHION
    assert (len(ds.train), len(ds.test), ds.in_channels, ds.spatial_dims) == (24, 10, 1, 2)
    # TFDS stores the examples shuffled: compare (image, label) pairs as multisets.
    train = [ds.train[i] for i in range(24)]
    got = _sorted_pairs(
        [np.rint(e["image"][..., 0] * 255) for e in train], [e["label"] for e in train]
    )
    assert got == _sorted_pairs(arrays["train_images"], arrays["train_labels"])
    caplog.clear()
    with caplog.at_level("WARNING"):
        again = load_dataset("fashion_mnist", str(tmp_path))
    assert "building" not in caplog.text and len(again.test) == 10


def test_tfds_mnist_from_manual_dir_and_bad_shape(tmp_path):
    manual = tmp_path / "downloads" / "manual"
    write_set(manual, digits(shape=(32, 32)))
    with pytest.raises(DataError, match=r"TFDS mnist needs uint8 28x28 images.*\(32, 32\)") as err:
        load_dataset("mnist", str(tmp_path))
    assert "\n" not in str(err.value) and "train-images-idx3-ubyte" in str(err.value)
    arrays = digits(n_train=10, n_test=3, shape=(28, 28))
    write_set(manual / "mnist", arrays)  # the more specific folder wins
    ds = load_dataset("mnist", str(tmp_path))
    assert ds.class_names == tuple(map(str, range(10))) and len(ds.test) == 3


def test_tfds_idx_files_not_found(tmp_path):
    with pytest.raises(DataError, match="not prepared") as err:
        load_dataset("kmnist", str(tmp_path))
    msg = str(err.value)
    assert "\n" not in msg and ", or put the IDX files train-images-idx3-ubyte, " in msg
    assert "t10k-labels-idx1-ubyte (plain or .gz) in " in msg
    for d in (tmp_path, tmp_path / "downloads" / "manual", tmp_path / "downloads/manual/kmnist"):
        assert str(d) in msg
    write_set(tmp_path, {"train_images": digits()["train_images"]})
    with pytest.raises(DataError, match=r"missing train-labels-idx1-ubyte, t10k-images"):
        load_dataset("kmnist", str(tmp_path))
