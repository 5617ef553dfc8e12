"""UCR/UEA time series (``ts:`` / ``ucr:``): the ``.ts`` reader on files the tests write, the
archive's own files where an installed aeon ships them, normalization, the validation split,
short series, and exact masking of padded series batches.

CI installs aeon's wheel without its dependencies (its data files only) and sets
``FCN_SERIES=required``; elsewhere the tests of shipped datasets skip, saying why.
"""

import os

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from series_data import shipped

from fcn_jax.config import TrainConfig
from fcn_jax.data import DataError, load_dataset
from fcn_jax.data import series as series_lib
from fcn_jax.models import create_model
from fcn_jax.run import train_and_evaluate

HEADER = "#A comment\n@problemName {name}\n@timeStamps false\n@missing false\n"


def write_ts(directory, name, split, cases, labels=("a", "b"), extra=""):
    """``directory/NAME_SPLIT.ts`` holding ``cases``: (channels: list of value lists, label)."""
    multi = len(cases[0][0]) > 1
    lines = [
        HEADER.format(name=name) + extra,
        f"@univariate {'false' if multi else 'true'}",
        f"@equalLength {'true' if len({len(c[0][0]) for c in cases}) == 1 else 'false'}",
        f"@classLabel true {' '.join(labels)}",
        "@data",
    ]
    for channels, label in cases:
        lines.append(":".join(",".join(str(v) for v in ch) for ch in channels) + f":{label}")
    path = os.path.join(directory, f"{name}_{split}.ts")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


def variable_pair(tmp_path, name="Var", lengths=(5, 9, 12, 7), channels=2, rng_seed=0):
    """A train/test pair of multichannel series of the given lengths, labels 'a'/'b'."""
    rng = np.random.default_rng(rng_seed)
    for split in ("TRAIN", "TEST"):
        cases = [
            ([list(np.round(rng.normal(size=n) * 3 + 1, 4)) for _ in range(channels)], "ab"[i % 2])
            for i, n in enumerate(lengths)
        ]
        write_ts(tmp_path, name, split, cases)
    return str(tmp_path / name)


def test_variable_length_multichannel_series_keep_their_lengths(tmp_path):
    data = load_dataset(f"ts:{variable_pair(tmp_path)}", normalize="none")
    assert (data.spatial_dims, data.in_channels, data.num_classes) == (1, 2, 2)
    assert data.class_names == ("a", "b") and data.series
    assert data.train.sizes()[:, 0].tolist() == [5, 9, 12, 7]
    assert data.train.common_size() is None
    example = data.train[1]
    assert example["image"].shape == (9, 2) and example["label"] == 1
    raw = series_lib.read_ts(str(tmp_path / "Var_TRAIN.ts"))[0][1]
    np.testing.assert_array_equal(example["image"], raw)


def test_string_labels_follow_the_declared_order(tmp_path):
    cases = [([[1.0, 2.0, 3.0]], "Walking"), ([[3.0, 1.0, 2.0]], "Standing")]
    for split in ("TRAIN", "TEST"):
        write_ts(tmp_path, "Str", split, cases, labels=("Standing", "Walking"))
    data = load_dataset(f"ts:{tmp_path}/Str")
    assert data.class_names == ("Standing", "Walking")
    assert [data.train[i]["label"] for i in range(2)] == [1, 0]
    assert data.train.common_size() == (3,)  # equal lengths: the data's one size


def test_series_normalization(tmp_path):
    path = variable_pair(tmp_path)
    by_series = load_dataset(f"ts:{path}", normalize="series")
    for i in range(len(by_series.train)):
        x = by_series.train[i]["image"]
        np.testing.assert_allclose(x.mean(0), 0, atol=1e-5)
        np.testing.assert_allclose(x.std(0), 1, atol=1e-5)
    by_data = load_dataset(f"ts:{path}", normalize="dataset")
    values = np.concatenate([by_data.train[i]["image"] for i in range(len(by_data.train))])
    np.testing.assert_allclose(values.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(values.std(0), 1, atol=1e-5)
    raw = load_dataset(f"ts:{path}", normalize="none").train[0]["image"]
    assert abs(raw.mean()) > 0.1  # the written values (mean 1) are kept
    # The defaults: multivariate data per dataset (levels kept), univariate per series.
    default = load_dataset(f"ts:{path}").train[0]["image"]
    np.testing.assert_array_equal(default, by_data.train[0]["image"])
    univariate = load_dataset(f"ts:{variable_pair(tmp_path, 'Uni', channels=1)}")
    np.testing.assert_allclose(univariate.train[2]["image"].std(), 1, atol=1e-5)
    with pytest.raises(DataError, match="--normalize=series: applies to ucr: and ts:"):
        load_dataset("npz:whatever.npz", normalize="series")


@pytest.mark.parametrize(
    "value, message",
    [("?", "line 11 .case 2.: a value is not a number"), ("NaN", "line 11 .case 2.: value 1 of")],
)
def test_missing_values_are_refused_naming_file_and_row(tmp_path, value, message):
    cases = [([[1.0, 2.0, 3.0]], "a"), ([[1.0, value, 3.0]], "b")]
    path = write_ts(tmp_path, "Miss", "TRAIN", cases)
    with pytest.raises(DataError, match=f"{path}, {message}"):
        series_lib.read_ts(path)


@pytest.mark.parametrize(
    "cases, extra, message",
    [
        ([([[1.0, 2.0]], "c")], "", "class label 'c' is not one of @classLabel's"),
        ([([[1.0, 2.0]], "a"), ([[1.0], [2.0]], "b")], "", "2 channels, expected 1"),
        ([([[1.0, 2.0], [1.0]], "a")], "", "channels have different lengths"),
        ([([[1.0, 2.0]], "a")], "@timeStamps true\n", "@timestamps true is not supported"),
    ],
)
def test_malformed_files_give_one_line(tmp_path, cases, extra, message):
    path = write_ts(tmp_path, "Bad", "TRAIN", cases, extra=extra)
    with pytest.raises(DataError, match=message) as e:
        series_lib.read_ts(path)
    assert "\n" not in str(e.value) and path in str(e.value)


def test_ts_spec_errors_name_what_is_missing(tmp_path):
    with pytest.raises(DataError, match="no Nope_TRAIN.ts in .*expected ts:DIR/NAME"):
        load_dataset(f"ts:{tmp_path}/Nope")
    with pytest.raises(DataError, match="expected ucr:NAME"):
        load_dataset("ucr:")


def test_an_unreachable_dataset_says_how_to_get_it(tmp_path, monkeypatch):
    def offline(*args):
        raise OSError("network unreachable")

    monkeypatch.setattr(series_lib, "download", offline)
    with pytest.raises(DataError) as e:
        load_dataset("ucr:NoSuchSet", data_dir=str(tmp_path))
    message = str(e.value)
    assert "\n" not in message and "network unreachable" in message
    assert (
        "pip install --no-deps aeon" in message and str(tmp_path / "ucr" / "NoSuchSet") in message
    )


def test_a_cached_dataset_is_read_from_the_data_dir(tmp_path, monkeypatch):
    monkeypatch.setattr(series_lib, "download", lambda *a: pytest.fail("downloaded"))
    os.makedirs(tmp_path / "ucr" / "Cached")
    variable_pair(tmp_path / "ucr" / "Cached", "Cached")
    data = load_dataset("ucr:Cached", data_dir=str(tmp_path))
    assert data.name == "ucr:Cached" and len(data.train) == 4


def test_validation_split_is_stratified_and_disjoint(tmp_path):
    lengths = [5 + i % 7 for i in range(24)]
    data = load_dataset(f"ts:{variable_pair(tmp_path, lengths=lengths)}/validation")
    assert (len(data.train), len(data.test)) == (18, 6)
    test_labels = [data.test[i]["label"] for i in range(6)]
    assert sorted(test_labels) == [0, 0, 0, 1, 1, 1]
    full = load_dataset(f"ts:{tmp_path}/Var").train
    rows = {full[i]["image"].tobytes() for i in range(len(full))}
    train = {data.train[i]["image"].tobytes() for i in range(len(data.train))}
    test = {data.test[i]["image"].tobytes() for i in range(len(data.test))}
    assert train | test == rows and not train & test


def _rows(source) -> list[bytes]:
    return [source[i]["image"].tobytes() for i in range(len(source))]


def test_folds_test_every_training_series_once(tmp_path):
    path = variable_pair(tmp_path, lengths=[5 + i % 7 for i in range(23)])
    full = sorted(_rows(load_dataset(f"ts:{path}").train))
    folds = [load_dataset(f"ts:{path}/fold{k}") for k in range(4)]
    tested = [row for fold in folds for row in _rows(fold.test)]
    assert sorted(tested) == full  # the folds partition the train split
    for fold in folds:
        assert sorted(_rows(fold.train) + _rows(fold.test)) == full
        assert {fold.train[i]["label"] for i in range(len(fold.train))} == {0, 1}
    assert _rows(folds[0].test) == _rows(load_dataset(f"ts:{path}/validation").test)
    with pytest.raises(DataError, match=r"fold4: expected ts:PATH/NAME, .* /fold0 .. /fold3$"):
        load_dataset(f"ts:{path}/fold4")


def test_series_shorter_than_the_model_are_an_error_naming_presets(tmp_path):
    path = variable_pair(tmp_path, lengths=(5, 9, 12, 7))
    config = TrainConfig(dataset=f"ts:{path}", model="seed", steps=1, batch_size=2)
    with pytest.raises(ValueError) as e:
        train_and_evaluate(config, str(tmp_path / "run"))
    message = str(e.value)
    assert "train series 0 has length 5, below --model=seed's minimum length 8" in message
    assert message.endswith("presets that accept it: allcnn, fcn, nin, resnet")


def test_padded_series_batch_gives_each_series_alone(tmp_path):
    data = load_dataset(f"ts:{variable_pair(tmp_path, lengths=(3, 17, 11, 8))}")
    series = [data.train[i]["image"] for i in range(len(data.train))]
    sizes = np.array([[len(s)] for s in series])
    batch = np.zeros((len(series), sizes.max(), 2), np.float32)
    for i, s in enumerate(series):
        batch[i, : len(s)] = s
    model = create_model("fcn", num_classes=2, in_channels=2, spatial_dims=1, width=0.125)
    model.eval()
    run = nnx.jit(lambda m, x, s: m(x, s))
    padded = run(model, jnp.asarray(batch), jnp.asarray(sizes))
    alone = np.stack([run(model, jnp.asarray(s[None]), None)[0] for s in series])
    np.testing.assert_allclose(padded, alone, rtol=1e-5, atol=1e-5)


def test_native_training_on_variable_length_series(tmp_path):
    lengths = [5 + (i * 7) % 23 for i in range(32)]
    path = variable_pair(tmp_path, lengths=lengths)
    config = TrainConfig(
        dataset=f"ts:{path}", model="fcn", width=0.0625, steps=4, batch_size=8, buckets="auto:2",
        eval_sizes="16", eval_examples=0, eval_batch_size=16, checkpoint_every=4,
    )  # fmt: skip
    summary = train_and_evaluate(config, str(tmp_path / "run"))
    assert summary["train_size"] == "native" and summary["dataset"] == f"ts:{path}"
    assert len(summary["buckets"]) > 1 and 0 <= summary["test_accuracy"] <= 1


@pytest.mark.parametrize(
    "name, counts, lengths, channels, classes",
    [
        ("GunPoint", (50, 150), (150, 150), 1, 2),
        ("ItalyPowerDemand", (67, 1029), (24, 24), 1, 2),
        ("BasicMotions", (40, 40), (100, 100), 6, 4),
        ("JapaneseVowels", (270, 370), (7, 29), 12, 9),
        ("PickupGestureWiimoteZ", (50, 50), (29, 361), 1, 10),
    ],
)
def test_archive_datasets_match_their_documented_shape(name, counts, lengths, channels, classes):
    shipped(name)
    data = load_dataset(f"ucr:{name}")
    assert (len(data.train), len(data.test)) == counts
    all_lengths = np.concatenate([data.train.sizes()[:, 0], data.test.sizes()[:, 0]])
    assert (int(all_lengths.min()), int(all_lengths.max())) == lengths
    assert (data.in_channels, data.num_classes) == (channels, classes)
