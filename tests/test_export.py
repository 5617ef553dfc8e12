"""Export: one artifact for every input size equals the in-process model; the padded-batch
(``with_sizes``) artifact equals each example run alone; loader checks; the jax-only loading
recipe; experiments.predict on image files; the run-directory path; class names from training
to the printed prediction; one-line errors of the scripts."""

import json
import os
import re
import subprocess
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from commands import run_pythons
from flax import nnx
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

import fcn_jax
import fcn_jax.export
from fcn_jax.checkpoint import Checkpointer, restore_run, run_class_names
from fcn_jax.export import export_model, load_exported, read_artifact
from fcn_jax.models.layers import global_pool
from fcn_jax.predict import load_predictor

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NAMES_2D = ["zero", "one", "two", "three", "four"]


@nnx.jit
def reference(model, x):
    """The in-process model's logits and class map (jitted: one compile per shape)."""
    cmap, out_sizes = model.features(x)
    return global_pool(cmap, out_sizes, model.spec.pool), cmap


def randomize_batch_stats(model, seed: int) -> None:
    """Non-trivial BatchNorm running statistics, so eval mode differs from batch statistics."""
    rng = np.random.default_rng(seed)
    for _, module in nnx.iter_graph(model):
        if isinstance(module, nnx.BatchNorm):
            n = module.mean.shape
            module.mean[...] = jnp.asarray(rng.normal(0.0, 0.5, n), jnp.float32)
            module.var[...] = jnp.asarray(rng.uniform(0.5, 2.0, n), jnp.float32)
            module.bias[...] = jnp.asarray(rng.normal(0.0, 0.2, n), jnp.float32)


@pytest.fixture(scope="module")
def seed1d(tmp_path_factory):
    """1-D seed model (strided padded convs: output extents are floordiv chains; min size 8),
    exported to a file and loaded back."""
    model = fcn_jax.create_model("seed", num_classes=4, in_channels=2, spatial_dims=1, width=0.125)
    path = str(tmp_path_factory.mktemp("export") / "seed1d.fcnx")
    export_model(model, path)
    return model, load_exported(path), path


@pytest.fixture(scope="module")
def resnet2d(tmp_path_factory):
    """2-D resnet with BatchNorm (random running stats), exported while still in train mode
    (the export uses a copy in eval mode), with class names."""
    model = fcn_jax.create_model(
        "resnet", num_classes=5, in_channels=3, spatial_dims=2, width=0.125, depth=1
    )
    randomize_batch_stats(model, 0)
    model.train()
    path = str(tmp_path_factory.mktemp("export") / "resnet2d.fcnx")
    export_model(model, path, class_names=NAMES_2D)
    assert not model.body[0].norm.use_running_average  # the caller's model is left alone
    model.eval()
    return model, load_exported(path), path


@pytest.fixture(scope="module")
def padded1d(seed1d):
    """The 1-D seed model exported ``with_sizes``: ``(path, loaded)``."""
    model, _, path = seed1d
    path = path.replace(".fcnx", "-sizes.fcnx")
    return export_model(model, path, with_sizes=True), load_exported(path)


@pytest.fixture(scope="module")
def padded2d(resnet2d):
    """The 2-D BatchNorm resnet exported ``with_sizes``, with class names: ``(path, loaded)``."""
    model, _, path = resnet2d
    path = path.replace(".fcnx", "-sizes.fcnx")
    return export_model(model, path, class_names=NAMES_2D, with_sizes=True), load_exported(path)


def assert_same(model, loaded, x):
    logits, cmap = reference(model, jnp.asarray(x))
    out = loaded(x)
    assert out["logits"].shape == logits.shape and out["class_map"].shape == cmap.shape
    np.testing.assert_allclose(out["logits"], logits, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out["class_map"], cmap, rtol=1e-5, atol=1e-6)


@settings(max_examples=7, deadline=None)
@given(batch=st.integers(1, 3), extra=st.integers(0, 60), seed=st.integers(0, 2**16))
def test_1d_artifact_matches_model_at_any_size(seed1d, batch, extra, seed):
    model, loaded, _ = seed1d
    length = model.min_size[0] + extra
    x = np.random.default_rng(seed).normal(size=(batch, length, 2)).astype(np.float32)
    assert_same(model, loaded, x)


@settings(max_examples=7, deadline=None)
@given(
    batch=st.integers(1, 3),
    h=st.integers(1, 48),
    w=st.integers(1, 48),
    seed=st.integers(0, 2**16),
)
def test_2d_batchnorm_artifact_matches_model_at_any_size(resnet2d, batch, h, w, seed):
    model, loaded, _ = resnet2d
    x = np.random.default_rng(seed).uniform(size=(batch, h, w, 3)).astype(np.float32)
    assert_same(model, loaded, x)


# --- padded batches (with_sizes) -----------------------------------------------------------


def padded_batch(seed: int, sizes, canvas, channels: int) -> np.ndarray:
    """(B, *canvas, C): example i of extent ``sizes[i]`` in the leading corner; the padding
    holds large values, not zeros (the model masks it, so nothing leaks from it)."""
    rng = np.random.default_rng(seed)
    x = np.full((len(sizes), *canvas, channels), 100.0, np.float32)
    for i, size in enumerate(sizes):
        x[(i, *map(slice, size))] = rng.normal(size=(*size, channels))
    return x


def assert_rows_alone(plain, out, x, sizes) -> None:
    """Row i of a padded-batch output equals example i run alone at its own size through the
    plain artifact (itself checked against the model above): logits and class map within rtol
    1e-5 (atol 1e-6 near zero), the map zero beyond ``out_sizes[i]``."""
    assert out["out_sizes"].dtype == np.int32 and out["out_sizes"].shape == np.shape(sizes)
    for i, size in enumerate(sizes):
        alone = plain(x[(slice(i, i + 1), *map(slice, size))])
        np.testing.assert_allclose(out["logits"][i], alone["logits"][0], rtol=1e-5, atol=1e-6)
        valid = tuple(map(slice, out["out_sizes"][i]))
        assert tuple(out["out_sizes"][i]) == alone["class_map"].shape[1:-1]
        cmap = out["class_map"][i]
        np.testing.assert_allclose(cmap[valid], alone["class_map"][0], rtol=1e-5, atol=1e-6)
        beyond = cmap.copy()
        beyond[valid] = 0
        assert not beyond.any()


# A few extents per axis and a fixed batch of 3 on one canvas: few distinct compiled shapes.
EXTENTS_1D = (8, 19, 41)  # min size 8, canvas 41
EXTENTS_2D = (1, 9, 24)  # min size 1, canvas 24x24


@settings(max_examples=5, deadline=None)
@given(
    sizes=st.lists(st.tuples(st.sampled_from(EXTENTS_1D)), min_size=3, max_size=3),
    seed=st.integers(0, 2**16),
)
def test_1d_padded_batch_rows_match_examples_alone(seed1d, padded1d, sizes, seed):
    _, plain, _ = seed1d
    x = padded_batch(seed, sizes, (41,), 2)
    assert_rows_alone(plain, padded1d[1](x, sizes), x, sizes)


@settings(max_examples=5, deadline=None)
@given(
    sizes=st.lists(
        st.tuples(st.sampled_from(EXTENTS_2D), st.sampled_from(EXTENTS_2D)), min_size=3, max_size=3
    ),
    seed=st.integers(0, 2**16),
)
def test_2d_padded_batch_rows_match_examples_alone(resnet2d, padded2d, sizes, seed):
    _, plain, _ = resnet2d
    x = padded_batch(seed, sizes, (24, 24), 3)
    assert_rows_alone(plain, padded2d[1](x, sizes), x, sizes)


@pytest.mark.parametrize(
    "artifacts, sizes, canvas, channels",
    [("padded1d", [(41,), (8,), (23,)], (41,), 2), ("padded2d", [(5, 24), (24, 1)], (24, 24), 3)],
)
def test_jax_only_call_on_padded_batch(request, artifacts, sizes, canvas, channels):
    """``jax.export.deserialize(blob).call(x, sizes)``, without the loader, gives the same."""
    path, loaded = request.getfixturevalue(artifacts)
    with open(path, "rb") as f:
        _, _, blob = f.read().split(b"\n", 2)
    x = padded_batch(1, sizes, canvas, channels)
    raw = jax.export.deserialize(bytearray(blob)).call(x, np.asarray(sizes, np.int32))
    for key, want in loaded(x, sizes).items():
        np.testing.assert_allclose(np.asarray(raw[key]), want, rtol=1e-6, atol=1e-7)


def test_padded_metadata_and_default_sizes(seed1d, padded1d, padded2d):
    _, plain, plain_path = seed1d
    path, loaded = padded1d
    meta, _ = read_artifact(path)
    assert meta["inputs"] == ["x", "sizes"] and loaded.with_sizes
    assert meta["outputs"] == ["logits", "class_map", "out_sizes"]
    assert meta["input_shape"] == "b, s0, 2" and meta["sizes_shape"] == "b, 1"
    x_aval, sizes_aval = loaded.exported.in_avals  # one symbolic b for both
    assert sizes_aval.shape[0] == x_aval.shape[0] and str(sizes_aval.dtype) == "int32"
    assert plain.meta["inputs"] == ["x"] and not plain.with_sizes
    assert padded2d[1].class_names == NAMES_2D
    # sizes left out: every row fills the array, i.e. the plain artifact's result.
    x = padded_batch(0, [(20,), (20,)], (20,), 2)
    got, want = loaded(x), plain(x)
    np.testing.assert_allclose(got["logits"], want["logits"], rtol=1e-5, atol=1e-6)
    assert got["out_sizes"].tolist() == [[want["class_map"].shape[1]]] * 2
    # A file written before the "inputs" key existed still loads as a plain x-only export.
    head, header, blob = open(plain_path, "rb").read().split(b"\n", 2)
    old = {k: v for k, v in json.loads(header).items() if k != "inputs"}
    old_path = plain_path.replace(".fcnx", "-old.fcnx")
    with open(old_path, "wb") as f:
        f.write(head + b"\n" + json.dumps(old).encode() + b"\n" + blob)
    old_loaded = load_exported(old_path)
    assert not old_loaded.with_sizes
    np.testing.assert_allclose(old_loaded(x)["logits"], want["logits"], rtol=1e-6)


def test_sizes_errors_are_one_line(seed1d, padded1d, padded2d):
    _, loaded = padded1d
    x = np.zeros((2, 20, 2), np.float32)
    cases = [
        ([[8], [7]], r"sizes row 1 \[7\] is below the model's minimum size \(8,\)"),
        ([[21], [8]], r"sizes row 0 \[21\] exceeds the padded input's extent \(20,\)"),
        ([8, 9], r"sizes must have shape \(B, D\) = \(2, 1\), got \(2,\)"),
        ([[8], [9], [10]], r"= \(2, 1\), got \(3, 1\)"),
        ([[8.0], [9.0]], "sizes must be integers, got dtype float64"),
    ]
    for sizes, message in cases:
        with pytest.raises(ValueError, match=message) as info:
            loaded(x, sizes)
        assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match=r"\(B, H, W, C\)"):  # x is checked first
        padded2d[1](np.zeros((2, 9, 3), np.float32), [[9, 9], [9, 9]])
    _, plain, _ = seed1d
    with pytest.raises(ValueError, match="takes no sizes; export with --with_sizes"):
        plain(x, [[20], [20]])


def test_metadata_and_symbolic_spec(seed1d, resnet2d):
    model, loaded, path = seed1d
    meta, _ = read_artifact(path)
    assert meta == loaded.meta
    assert meta["input_shape"] == "b, s0, 2" and meta["constraints"] == ["s0 >= 8"]
    assert loaded.min_size == model.min_size == (8,)
    assert (loaded.num_classes, loaded.in_channels, loaded.spatial_dims) == (4, 2, 1)
    assert loaded.class_names is None and meta["spec"] == model.spec.to_dict()
    _, loaded2d, _ = resnet2d
    assert loaded2d.meta["input_shape"] == "b, s0, s1, 3"
    assert loaded2d.meta["constraints"] == ["s0 >= 1", "s1 >= 1"]
    assert loaded2d.class_names == NAMES_2D
    assert set(loaded2d.meta["platforms"]) == {"cpu", "cuda", "tpu"}
    assert len(loaded2d.exported.in_avals) == 1  # the weights are constants, not arguments


def test_loader_rejects_bad_inputs_clearly(seed1d, resnet2d):
    _, loaded, _ = seed1d
    with pytest.raises(ValueError, match=r"spatial size \[\(7,\)\] below the model's minimum"):
        loaded(np.zeros((1, 7, 2), np.float32))
    with pytest.raises(ValueError, match="must have 2 channels"):
        loaded(np.zeros((1, 30, 3), np.float32))
    with pytest.raises(ValueError, match=r"rank 3 \(B, L, C\)"):
        loaded(np.zeros((30, 2), np.float32))
    _, loaded2d, _ = resnet2d
    with pytest.raises(ValueError, match="must have 3 channels"):
        loaded2d(np.zeros((1, 9, 9, 1), np.float32))
    with pytest.raises(ValueError, match="batch is empty"):
        loaded2d(np.zeros((0, 9, 9, 3), np.float32))


def test_bad_files_and_arguments(seed1d, tmp_path):
    model, _, path = seed1d
    junk = tmp_path / "junk.fcnx"
    junk.write_bytes(b"hello\nworld\n")
    with pytest.raises(ValueError, match="not an fcn_jax export"):
        load_exported(str(junk))
    with pytest.raises(ValueError, match="cannot read exported model"):
        load_exported(str(tmp_path / "missing.fcnx"))
    with open(path, "rb") as f:
        head, meta, blob = f.read().split(b"\n", 2)
    truncated = tmp_path / "truncated.fcnx"
    truncated.write_bytes(head + b"\n" + meta + b"\n" + blob[: len(blob) // 2])
    with pytest.raises(ValueError, match="cannot deserialize"):
        load_exported(str(truncated))
    with pytest.raises(ValueError, match="3 class names for a model with 4 classes"):
        export_model(model, str(tmp_path / "x.fcnx"), class_names=["a", "b", "c"])
    assert os.listdir(tmp_path) == ["junk.fcnx", "truncated.fcnx"]  # nothing half-written


def test_export_overwrites_atomically(seed1d, tmp_path):
    model, _, _ = seed1d
    path = tmp_path / "m.fcnx"
    path.write_bytes(b"old")
    export_model(model, str(path), platforms=["cpu"])
    assert os.listdir(tmp_path) == ["m.fcnx"]  # no temp file left behind
    assert load_exported(str(path)).meta["platforms"] == ["cpu"]


def run_python(*args: str) -> subprocess.CompletedProcess:
    return run_pythons(args)[0]


def recipe() -> str:
    """The module docstring's jax-only loading lines (docs/usage.md shows the same)."""
    block = fcn_jax.export.__doc__.split("``numpy`` only)::\n")[1].split("\n\n")[0]
    return textwrap.dedent(block)


def test_docstring_recipe_runs_with_jax_only(resnet2d, padded2d):
    """The recipe, in a fresh process without flax or fcn_jax, on a plain and a padded-batch
    (``with_sizes``) export; docs/usage.md's copy is the same code."""
    report = textwrap.dedent("""
        import sys
        print(json.dumps({
            "imported": [m for m in ("flax", "fcn_jax") if m in sys.modules],
            "logits": np.asarray(out["logits"]).tolist(),
            "probs": np.asarray(probs).tolist(),
            "class_map": list(out["class_map"].shape),
            "hw": [int(h), int(w)] if "out_sizes" in out else None,
        }))
    """)
    (_, plain, plain_path), (padded_path, padded) = resnet2d, padded2d
    code = "".join(
        recipe().replace('"model.fcnx"', repr(path)) + report for path in (plain_path, padded_path)
    )
    proc = run_python("-c", code)
    assert proc.returncode == 0, proc.stderr
    got_plain, got_padded = map(json.loads, proc.stdout.strip().splitlines()[-2:])
    assert got_plain["imported"] == got_padded["imported"] == []

    want = plain(np.zeros((1, 28, 40, 3), np.float32))
    np.testing.assert_allclose(got_plain["logits"], want["logits"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.sum(got_plain["probs"]), 1.0, rtol=1e-5)
    assert got_plain["class_map"] == list(want["class_map"].shape)
    assert got_plain["hw"] is None

    want = padded(np.zeros((2, 32, 40, 3), np.float32), [[28, 40], [32, 17]])
    np.testing.assert_allclose(got_padded["logits"], want["logits"], rtol=1e-5, atol=1e-6)
    assert got_padded["class_map"] == list(want["class_map"].shape)
    assert got_padded["hw"] == want["out_sizes"][1].tolist()

    usage = open(os.path.join(REPO, "docs", "usage.md")).read()
    # The same lines, reading whichever export file the docs' commands write.
    pattern = re.escape(recipe()).replace(re.escape('"model.fcnx"'), r'"[^"\n]+\.fcnx"')
    assert re.search(pattern, usage)


def test_predict_script_on_png_and_jpeg(resnet2d, tmp_path):
    _, loaded, path = resnet2d
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (17, 93), dtype=np.uint8)).save(tmp_path / "gray.png")
    rgb = rng.integers(0, 256, (40, 23, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "color.jpg", quality=95)
    (tmp_path / "broken.png").write_bytes(b"not a png")
    files = [str(tmp_path / f) for f in ("gray.png", "color.jpg", "broken.png")]
    cams = tmp_path / "cams"

    proc = run_python(
        "-m", "experiments.predict", f"--model={path}", "--top_k=3", f"--cam={cams}", *files
    )
    assert proc.returncode == 1  # one file failed; the others were still classified
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: cannot read image {files[2]}: not a readable image"]

    blocks = proc.stdout.strip().split("\n" + str(tmp_path))
    assert len(blocks) == 2
    for block, name, size in zip(blocks, ("gray.png", "color.jpg"), ((17, 93), (40, 23))):
        lines = block.strip().splitlines()
        assert lines[0].endswith(f"{name} ({size[0]}x{size[1]}):")
        ranked = [line.split() for line in lines[1:4]]
        assert [r[0] for r in ranked] == ["1.", "2.", "3."]
        assert all(r[1] in NAMES_2D for r in ranked)
        probs = [float(r[2]) for r in ranked]
        assert probs == sorted(probs, reverse=True) and sum(probs) <= 1 + 1e-3
        # Same top class as the artifact run in-process on the same pixels.
        image = np.asarray(Image.open(tmp_path / name).convert("RGB"), np.float32) / 255
        top = int(np.argmax(loaded(image[None])["logits"][0]))
        assert ranked[0][1] == NAMES_2D[top]
        overlay = cams / f"{name.split('.')[0]}.cam.png"
        assert lines[4] == f"  cam: {overlay}"
        with Image.open(overlay) as im:
            im.verify()
        with Image.open(overlay) as im:
            assert im.format == "PNG" and im.mode == "RGB" and im.size == (size[1], size[0])


# --- run directories (fcn_jax.checkpoint) --------------------------------------------------


def make_run(model, workdir) -> None:
    """A minimal run directory as training writes it: config.json with the model spec, and one
    orbax checkpoint of ``{"params": State, "rest": State}`` (as ``fcn_jax.steps.init_state``
    splits the model; optimizer entries left out)."""
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "config.json"), "w") as f:
        json.dump({"model_spec": model.spec.to_dict()}, f)
    _, params, rest = nnx.split(model, nnx.Param, ...)
    Checkpointer(workdir, writer=True).save(1, {"params": params, "rest": rest}, {"step": 1})


def test_run_directory_errors_are_one_line(seed1d, tmp_path):
    model, _, _ = seed1d
    with pytest.raises(ValueError, match="does not exist"):
        restore_run(str(tmp_path / "nowhere"))
    with pytest.raises(ValueError, match="no config.json"):
        restore_run(str(tmp_path))
    with pytest.raises(ValueError, match="no such export file or run directory"):
        load_predictor(str(tmp_path / "nothing.fcnx"))
    (tmp_path / "config.json").write_text(json.dumps({"model_spec": model.spec.to_dict()}))
    with pytest.raises(ValueError, match="no checkpoint") as info:
        restore_run(str(tmp_path))
    assert "\n" not in str(info.value)


def test_run_directory_restore_export_and_predictor(seed1d, tmp_path):
    model, loaded, _ = seed1d
    run = str(tmp_path / "run")
    make_run(model, run)
    predictor = load_predictor(run)  # restored, exported in memory
    x = np.random.default_rng(1).normal(size=(2, 21, 2)).astype(np.float32)
    for key, want in loaded(x).items():
        np.testing.assert_allclose(predictor(x)[key], want, rtol=1e-5, atol=1e-6)

    out = str(tmp_path / "from_run.fcnx")
    command = ("-m", "experiments.export", f"--workdir={run}")
    verbose = (*command, f"--out={tmp_path / 'verbose.fcnx'}", "--verbosity=1")
    proc, default, chatty = run_pythons((*command, f"--out={out}"), command, verbose)
    for path, done in ((out, proc), (os.path.join(run, "model.fcnx"), default)):
        assert done.returncode == 0, done.stderr
        assert f" to {path} (" in done.stdout and "KiB" in done.stdout
        np.testing.assert_allclose(load_exported(path)(x)["logits"], loaded(x)["logits"], rtol=1e-5)
        # orbax's restore chatter (read-only options, "Metadata file does not exist") is not
        # shown by default; --verbosity=1 shows it
        assert "checkpoint_manager.py" not in done.stderr, done.stderr
    assert chatty.returncode == 0 and "checkpoint_manager.py" in chatty.stderr


# --- class names from training to prediction; the scripts' clean exit ----------------------


@pytest.fixture(scope="module")
def folder_run(tmp_path_factory):
    """A run directory trained for 2 steps on a folder dataset of class subfolders ``cat/``
    and ``dog/`` (random RGB PNGs of assorted sizes)."""
    from tiny import TINY_TRAIN

    from fcn_jax.config import TrainConfig
    from fcn_jax.run import train_and_evaluate

    root, rng = tmp_path_factory.mktemp("pets"), np.random.default_rng(0)
    for split, count in (("train", 8), ("test", 2)):
        for name in ("cat", "dog"):
            os.makedirs(root / "data" / split / name)
            for i in range(count):
                pixels = rng.integers(0, 256, (16, 16, 3), np.uint8)
                Image.fromarray(pixels).save(root / "data" / split / name / f"{i}.png")
    tiny = {"dataset": f"folder:{root / 'data'}", "train_size": "fixed:16", "eval_sizes": "16"}
    steps = {"batch_size": 8, "steps": 2, "log_every": 2, "checkpoint_every": 2}
    config = TrainConfig(**{**TINY_TRAIN, **tiny, **steps})
    train_and_evaluate(config, str(root / "run"))
    return str(root / "run")


def test_class_names_from_training_to_prediction(folder_run, tmp_path):
    """A folder dataset's subfolder names reach the export header (here a ``--with_sizes``
    export, whose call the script prints) and the printed predictions."""
    out = str(tmp_path / "pets.fcnx")
    args = ("-m", "experiments.export", f"--workdir={folder_run}", f"--out={out}")
    proc = run_python(*args, "--with_sizes", "--platforms=cpu")
    assert proc.returncode == 0, proc.stderr
    want = "called as f(x (B, H, W, 3) float32 zero-padded, sizes (B, 2) int32) -> logits (B, 2)"
    assert want in proc.stdout and len(proc.stdout.strip().splitlines()) == 1
    meta, _ = read_artifact(out)
    assert meta["class_names"] == ["cat", "dog"] and meta["inputs"] == ["x", "sizes"]

    image = tmp_path / "pet.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (19, 27, 3), np.uint8)).save(image)
    proc = run_python("-m", "experiments.predict", f"--model={out}", "--top_k=2", str(image))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert lines[0] == f"{image} (19x27):"
    assert sorted(line.split()[1] for line in lines[1:3]) == ["cat", "dog"]
    assert run_class_names(folder_run) == ["cat", "dog"]  # what --model=RUN_DIR would print


def test_scripts_exit_1_with_one_error_line(tmp_path):
    export, predict = run_pythons(
        ("-m", "experiments.export", f"--workdir={tmp_path / 'nowhere'}", "--out=m.fcnx"),
        ("-m", "experiments.predict", f"--model={tmp_path / 'none.fcnx'}", "a.png"),
    )
    for proc, message in (
        (export, f"error: run directory {str(tmp_path / 'nowhere')!r} does not exist"),
        (predict, f"error: --model {str(tmp_path / 'none.fcnx')!r}: no such export file or "),
    ):
        assert proc.returncode == 1 and "Traceback" not in proc.stderr
        errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and errors[0].startswith(message), proc.stderr
