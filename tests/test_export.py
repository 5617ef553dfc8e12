"""Export: one artifact for every input size equals the in-process model; loader checks; the
jax-only loading recipe; experiments.predict on image files; the run-directory path."""

import json
import os
import subprocess
import sys
import textwrap

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

import fcn_jax
import fcn_jax.export
from fcn_jax.checkpoint import Checkpointer
from fcn_jax.export import export_model, load_exported, load_predictor, read_artifact, restore_run
from fcn_jax.models.layers import global_pool

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
    with pytest.raises(ValueError, match=r"spatial size \(7,\) is below the model's minimum"):
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
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    return subprocess.run(
        [sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )


def test_docstring_recipe_runs_with_jax_only(resnet2d):
    """The module docstring's loading lines, run in a fresh process: no flax, no fcn_jax."""
    _, loaded, path = resnet2d
    block = fcn_jax.export.__doc__.split("``numpy`` only)::\n")[1].split("\n\n")[0]
    code = textwrap.dedent(block).replace('"model.fcnx"', repr(path))
    code += textwrap.dedent("""
        import sys
        print(json.dumps({
            "imported": [m for m in ("flax", "fcn_jax") if m in sys.modules],
            "logits": np.asarray(out["logits"]).tolist(),
            "probs": np.asarray(probs).tolist(),
            "class_map": list(out["class_map"].shape),
        }))
    """)
    proc = run_python("-c", code)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["imported"] == []
    want = loaded(np.zeros((1, 28, 40, 3), np.float32))
    np.testing.assert_allclose(got["logits"], want["logits"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.sum(got["probs"]), 1.0, rtol=1e-5)
    assert got["class_map"] == list(want["class_map"].shape)


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
    proc = run_python("-m", "experiments.export", f"--workdir={run}", f"--out={out}")
    assert proc.returncode == 0, proc.stderr
    assert out in proc.stdout and "KiB" in proc.stdout
    np.testing.assert_allclose(load_exported(out)(x)["logits"], loaded(x)["logits"], rtol=1e-5)
