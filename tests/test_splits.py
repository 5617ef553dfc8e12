"""--train_split / --test_split: TFDS-style slices parsed once (fcn_jax.data.splits) and applied
to every kind of data: npz, idx, folder and ts files written here, a TFDS ArrayRecord copy."""

import struct
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from fcn_jax.data import DataError, load_dataset
from fcn_jax.data.arrays import save_npz
from fcn_jax.data.splits import resolve_split

LENGTHS = {"train": 60000, "test": 10000}


@pytest.mark.parametrize(
    "text, want",
    [
        ("train", ("train", 0, 60000)),
        ("test", ("test", 0, 10000)),
        ("train[:50000]", ("train", 0, 50000)),
        ("train[50000:]", ("train", 50000, 60000)),
        ("train[:80%]", ("train", 0, 48000)),
        ("train[-1000:]", ("train", 59000, 60000)),
        ("test[10:-10]", ("test", 10, 9990)),
    ],
)
def test_slices_resolve_as_tfds_reads_them(text, want):
    s = resolve_split(text, "train_split", LENGTHS)
    assert (s.name, s.start, s.stop) == want


@pytest.mark.parametrize(
    "text, match",
    [
        ("train[:abc]", r"--test_split=train\[:abc\]: malformed; expected SPLIT or SPLIT\[FROM"),
        ("train[1:2:3]", "malformed"),
        ("train[:101%]", "malformed"),
        ("train+test", r"one split only \(no '\+'\)"),
        ("validation", "no split 'validation'; this dataset has train, test"),
        ("train[70000:]", "out of range: the train split has 60000 examples"),
        ("train[:-70000]", "out of range"),
        ("train[5:5]", "selects no examples"),
        ("train[9:3]", "selects no examples"),
    ],
)
def test_bad_slices_are_one_line_errors_naming_the_flag(text, match):
    with pytest.raises(DataError, match=match) as err:
        resolve_split(text, "test_split", LENGTHS)
    assert "\n" not in str(err.value) and str(err.value).startswith(f"--test_split={text}:")


# --- every kind of data ----------------------------------------------------------------------

TRAIN_LABELS = np.arange(10) % 2
TRAIN_IMAGES = (np.arange(10 * 6 * 6).reshape(10, 6, 6) % 251).astype(np.uint8)


def _npz(tmp_path):
    arrays = {"train_images": TRAIN_IMAGES, "train_labels": TRAIN_LABELS}
    arrays |= {"test_images": TRAIN_IMAGES[:3], "test_labels": TRAIN_LABELS[:3]}
    save_npz(str(tmp_path / "d.npz"), arrays)
    return f"npz:{tmp_path / 'd.npz'}"


def _idx_file(path, array):
    a = np.asarray(array, np.uint8)
    path.write_bytes(bytes([0, 0, 8, a.ndim]) + struct.pack(f">{a.ndim}I", *a.shape) + a.tobytes())


def _idx(tmp_path):
    # The names of MNIST's four files, gunzipped (fcn_jax.data.idx.IDX_NAMES).
    _idx_file(tmp_path / "train-images-idx3-ubyte", TRAIN_IMAGES)
    _idx_file(tmp_path / "train-labels-idx1-ubyte", TRAIN_LABELS)
    _idx_file(tmp_path / "t10k-images-idx3-ubyte", TRAIN_IMAGES[:3])
    _idx_file(tmp_path / "t10k-labels-idx1-ubyte", TRAIN_LABELS[:3])
    return f"idx:{tmp_path}"


def _folder(tmp_path):
    for split, n in (("train", 10), ("test", 3)):
        for i in range(n):
            (tmp_path / split / str(TRAIN_LABELS[i])).mkdir(parents=True, exist_ok=True)
            Image.fromarray(TRAIN_IMAGES[i]).save(
                tmp_path / split / str(TRAIN_LABELS[i]) / f"{i}.png"
            )
    return f"folder:{tmp_path}"


def _ts(tmp_path):
    for split, n in (("TRAIN", 10), ("TEST", 3)):
        rows = [",".join(str(v) for v in range(i, i + 8)) + f":{TRAIN_LABELS[i]}" for i in range(n)]
        head = "@problemName S\n@univariate true\n@classLabel true 0 1\n@data\n"
        (tmp_path / f"S_{split}.ts").write_text(head + "\n".join(rows) + "\n")
    return f"ts:{tmp_path}/S"


@pytest.mark.parametrize("write", [_npz, _idx, _folder, _ts], ids=["npz", "idx", "folder", "ts"])
def test_every_kind_trains_and_tests_on_slices_of_its_splits(tmp_path, write):
    spec = write(tmp_path)
    whole = load_dataset(spec)
    ds = load_dataset(spec, train_split="train[:70%]", test_split="train[7:]")
    assert (len(ds.train), len(ds.test)) == (7, 3)
    assert ds.num_classes == whole.num_classes and ds.name == whole.name
    for got, want in ((ds.train, range(7)), (ds.test, range(7, 10))):
        wanted = whole.train.get_many(want)
        assert [e["label"] for e in got.get_many(range(len(got)))] == [e["label"] for e in wanted]
        np.testing.assert_array_equal(got[len(got) - 1]["image"], wanted[-1]["image"])
        np.testing.assert_array_equal(got.sizes(), whole.train.sizes()[want.start : want.stop])
    with pytest.raises(IndexError):
        ds.test[3]
    only_test = load_dataset(spec, test_split="test[1:]")
    assert len(only_test.train) == 10 and len(only_test.test) == 2
    with pytest.raises(DataError, match=r"--train_split=train\[:11\]: out of range.* 10 "):
        load_dataset(spec, train_split="train[:11]")


def test_tfds_datasets_are_sliced_by_tfds(tmp_path):
    # A real ArrayRecord copy (this package's builder, built here in under a second): TFDS
    # reads the slice itself.
    data_dir, name = str(tmp_path), "procedural_digits/tiny_fixed28"
    whole = load_dataset(name, data_dir)
    ds = load_dataset(name, data_dir, train_split="train[:400]", test_split="train[80%:]")
    assert (len(ds.train), len(ds.test)) == (400, 102)
    np.testing.assert_array_equal(ds.test[1]["image"], whole.train[411]["image"])
    assert [e["label"] for e in ds.train.get_many([0, 399])] == [
        whole.train[0]["label"],
        whole.train[399]["label"],
    ]
    with pytest.raises(DataError, match=r"--test_split=validation: no split 'validation'"):
        load_dataset(name, data_dir, test_split="validation")
    with pytest.raises(DataError, match=r"--train_split=train\[:600\]: out of range"):
        load_dataset(name, data_dir, train_split="train[:600]")


def test_the_flags_reach_a_run_and_the_slicing_imports_no_tensorflow(tmp_path):
    spec = _npz(tmp_path)
    code = (
        "import sys; from fcn_jax.config import TrainConfig; from fcn_jax.setup import "
        f"open_dataset; ds = open_dataset(TrainConfig(dataset={spec!r}, "
        "train_split='train[:8]', test_split='train[8:]')); "
        "print(len(ds.train), len(ds.test), 'tensorflow' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["8", "2", "False"]


def test_a_run_recorded_before_the_split_flags_is_reused(tmp_path):
    """config.json of a run made before --train_split/--test_split existed lacks them: unset
    (None) there, so the finished run is reused; a slice now asked for is a difference."""
    from fcn_jax.config import TrainConfig
    from fcn_jax.outputs import write_json
    from fcn_jax.runs.rundir import RunDir

    config = TrainConfig(steps=6)
    rundir = RunDir.of(str(tmp_path), "run")
    recorded = config.resolved().to_dict()
    del recorded["train_split"], recorded["test_split"]
    write_json(rundir.config_path, {"config": recorded})
    write_json(rundir.summary_path, {"steps": 6})
    assert rundir.reusable(config)
    sliced = TrainConfig(steps=6, test_split="train[50000:]")
    assert rundir.differences(sliced) == {"test_split": (None, "train[50000:]")}


def test_rescale_pools_the_slices_it_is_given(tmp_path):
    """experiments.rescale's --train_split/--test_split: the pool is those two parts (here the
    train split's 10 images, its test split left out), as MNIST-scale pools MNIST's training
    images with train[:50000] and train[50000:]."""
    from fcn_jax.data.rescale import rescale_dataset

    counts = {"train": 4, "val": 2, "test": 4}
    out = rescale_dataset(_npz(tmp_path), counts, train_split="train[:6]", test_split="train[6:]")
    labels = np.concatenate([out[f"{s}_labels"] for s in ("train", "val", "test")])
    assert sorted(labels.tolist()) == sorted(TRAIN_LABELS.tolist())
    with pytest.raises(DataError, match=r"--test_split=test\[:4\]: out of range"):
        rescale_dataset(_npz(tmp_path), counts, test_split="test[:4]")
