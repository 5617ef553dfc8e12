"""CAM helpers: pointing game on hand-built maps, image loading, overlays, predict on files.

No model here (a numpy stand-in predictor); the exported-model path is in test_export.py.
"""

import numpy as np
import pytest
from PIL import Image

from fcn_jax.cam import cam_overlay, pointing_game, resize_map
from fcn_jax.predict import load_image, overlay_paths, predict_files

# --- pointing game -------------------------------------------------------------------------


def _maps():
    """Three examples, class maps (3, 4, 5, 2) whose answers are known by construction."""
    cmap = np.zeros((3, 4, 5, 2), np.float32)
    # 0: full valid extent 4x5 over a 8x10 input (cells 2x2 px). Class 1 peaks at cell (1, 3)
    #    -> pixel (3, 7); class 0 peaks elsewhere higher (must not matter: label is 1).
    cmap[0, 1, 3, 1] = 5.0
    cmap[0, 3, 0, 0] = 9.0
    # 1: valid extent 2x3 of the 4x5 map (batch padding beyond it) over a 4x6 input (2x2 px).
    #    Class 0 peaks at (0, 0) -> pixel (1, 1) inside the valid part; the padded region holds
    #    a larger value at (3, 4) that must be ignored.
    cmap[1, 0, 0, 0] = 1.0
    cmap[1, 3, 4, 0] = 100.0
    # 2: full extent over 8x10; class 0 peaks at (2, 2) -> pixel (5, 5).
    cmap[2, 2, 2, 0] = 3.0
    out_sizes = np.array([[4, 5], [2, 3], [4, 5]])
    in_sizes = np.array([[8, 10], [4, 6], [8, 10]])
    labels = np.array([1, 0, 0])
    return cmap, out_sizes, labels, in_sizes


def test_pointing_game_known_hits_and_misses():
    cmap, out_sizes, labels, in_sizes = _maps()
    boxes = np.array(
        [
            [2, 6, 4, 8],  # contains (3, 7)
            [0, 0, 2, 2],  # contains (1, 1); would miss the padded peak at pixel (7, 9)
            [0, 0, 4, 4],  # (5, 5) is outside, 1 px away along each axis
        ]
    )
    hits = pointing_game(cmap, out_sizes, labels, boxes, in_sizes)
    assert hits.dtype == bool and hits.shape == (3,)
    np.testing.assert_array_equal(hits, [True, True, False])
    # Tolerance: (5, 5) is sqrt(2) ~ 1.41 px from the box corner (4, 4).
    np.testing.assert_array_equal(
        pointing_game(cmap, out_sizes, labels, boxes, in_sizes, tolerance=1.5), [True] * 3
    )
    np.testing.assert_array_equal(
        pointing_game(cmap, out_sizes, labels, boxes, in_sizes, tolerance=1.0),
        [True, True, False],
    )


def test_pointing_game_ignores_padding_and_uses_the_label_channel():
    cmap, out_sizes, labels, in_sizes = _maps()
    # Boxes around where the wrong answers would land: the padded peak of example 1 (cell
    # (3, 4) of 2x2 px cells -> pixel (7, 9)) and class 0's peak of example 0 (pixel (7, 1)).
    wrong = np.array([[6, 0, 8, 2], [6, 8, 8, 10], [0, 0, 1, 1]])
    np.testing.assert_array_equal(
        pointing_game(cmap, out_sizes, labels, wrong, in_sizes), [False, False, False]
    )
    # Treating example 1 as fully valid would hit that box.
    full = np.array([[4, 5], [4, 5], [4, 5]])
    assert pointing_game(cmap, full, labels, wrong, np.array([[8, 10]] * 3))[1]


def test_pointing_game_half_open_box_and_non_integer_scale():
    # One example, 1x2 map over a 1x17 input: cell 1 is centered at 1.5 * 17 / 2 = 12.75.
    cmap = np.array([[[[0.0], [1.0]]]], np.float32)  # (1, 1, 2, 1)
    args = (cmap, [[1, 2]], [0])
    assert pointing_game(*args, [[0, 12, 1, 13]], [[1, 17]])[0]
    assert not pointing_game(*args, [[0, 13, 1, 17]], [[1, 17]])[0]
    # A point exactly on the exclusive edge y1/x1 is a miss: cell 0 of a 1x1 map over 2x2 -> (1, 1).
    one = np.ones((1, 1, 1, 1), np.float32)
    assert not pointing_game(one, [[1, 1]], [0], [[0, 0, 1, 1]], [[2, 2]])[0]
    assert pointing_game(one, [[1, 1]], [0], [[0, 0, 2, 2]], [[2, 2]])[0]


def test_pointing_game_1d():
    cmap = np.zeros((2, 6, 3), np.float32)
    cmap[0, 4, 2] = 1.0  # -> (4.5) * 12 / 6 = 9
    cmap[1, 1, 0], cmap[1, 5, 0] = 1.0, 7.0  # valid extent 3: peak at 1 -> 1.5 * 9 / 3 = 4.5
    hits = pointing_game(cmap, [[6], [3]], [2, 0], [[8, 10], [4, 5]], [[12], [9]])
    np.testing.assert_array_equal(hits, [True, True])


# --- images and overlays -------------------------------------------------------------------


def test_load_image_converts_channels(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (7, 11, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "c.png")
    gray = load_image(str(tmp_path / "c.png"), 1)
    assert gray.shape == (7, 11, 1) and gray.dtype == np.float32
    expected = np.asarray(Image.fromarray(rgb).convert("L"), np.float32) / 255
    np.testing.assert_allclose(gray[..., 0], expected)
    color = load_image(str(tmp_path / "c.png"), 3)
    np.testing.assert_allclose(color, rgb / 255, atol=1e-6)

    Image.fromarray(rgb[..., 0]).save(tmp_path / "g.png")
    spread = load_image(str(tmp_path / "g.png"), 3)
    assert spread.shape == (7, 11, 3) and (spread[..., 0] == spread[..., 2]).all()
    assert 0 <= spread.min() and spread.max() <= 1


def test_load_image_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(ValueError, match="bad.png"):
        load_image(str(bad), 1)
    with pytest.raises(ValueError, match="missing.png"):
        load_image(str(tmp_path / "missing.png"), 1)
    with pytest.raises(ValueError, match="1- or 3-channel"):
        load_image(str(bad), 2)


def test_resize_map_keeps_the_peak_over_its_cell():
    cam = np.zeros((2, 3), np.float32)
    cam[1, 2] = 1.0
    up = resize_map(cam, (8, 12))
    assert up.shape == (8, 12)
    y, x = np.unravel_index(up.argmax(), up.shape)
    assert 4 <= y < 8 and 8 <= x < 12  # inside the cell's 4x4 pixel footprint


def test_cam_overlay_shape_and_blend():
    image = np.full((9, 14, 1), 0.5, np.float32)
    cam = np.arange(6, dtype=np.float32).reshape(2, 3)
    out = cam_overlay(image, cam)
    assert out.shape == (9, 14, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(cam_overlay(image, cam, alpha=0.0), np.full((9, 14, 3), 128))
    heat = cam_overlay(image, cam, alpha=1.0).astype(int)
    # jet: low values blue, high values red.
    assert heat[0, 0, 2] > heat[0, 0, 0] and heat[-1, -1, 0] > heat[-1, -1, 2]
    flat = cam_overlay(np.zeros((5, 5, 3), np.float32), np.ones((1, 1)))  # constant map is fine
    assert flat.shape == (5, 5, 3)


# --- predict on files (numpy stand-in for an exported model) ------------------------------


class FakePredictor:
    """2-D, 1 channel, min size 4: the class map is the image block-averaged 2x2 per class
    weight, so logits favour class 2 for bright images."""

    spatial_dims, in_channels, min_size = 2, 1, (4, 4)
    class_names = ["dark", "mid", "bright"]

    def __call__(self, x):
        b, h, w, _ = x.shape
        pooled = x[:, : h // 2 * 2, : w // 2 * 2, 0].reshape(b, h // 2, 2, w // 2, 2).mean((2, 4))
        cmap = pooled[..., None] * np.array([-4.0, 0.0, 4.0])
        return {"logits": cmap.mean((1, 2)), "class_map": cmap}


def test_predict_files_topk_overlays_and_errors(tmp_path):
    bright = np.full((17, 93), 230, np.uint8)
    Image.fromarray(bright).save(tmp_path / "a.png")
    Image.fromarray(np.zeros((3, 10, 3), np.uint8)).save(tmp_path / "small.jpg")  # below min
    sub = tmp_path / "sub"
    sub.mkdir()
    Image.fromarray(bright).save(sub / "a.png")  # same stem as the first file
    (tmp_path / "bad.png").write_bytes(b"junk")
    paths = [str(tmp_path / "a.png"), str(tmp_path / "small.jpg"), str(tmp_path / "bad.png")]
    paths.append(str(sub / "a.png"))
    cams = tmp_path / "cams"

    results = predict_files(FakePredictor(), paths, top_k=2, cam_dir=str(cams))
    first, small, bad, second = results
    assert [name for _, name, _ in first.top] == ["bright", "mid"]
    assert sum(p for *_, p in first.top) <= 1 + 1e-9
    assert first.size == (17, 93) and first.resized_to is None
    assert small.resized_to == (4, 10)
    np.testing.assert_allclose([p for *_, p in small.top], [1 / 3, 1 / 3])  # black: a tie
    assert bad.error and "bad.png" in bad.error and "\n" not in bad.error
    assert first.overlay == str(cams / "a.cam.png") and second.overlay == str(cams / "a-2.cam.png")
    for pred in (first, small, second):
        with Image.open(pred.overlay) as im:
            assert im.format == "PNG" and im.mode == "RGB" and im.size == pred.size[::-1]
    text = first.format()
    assert "a.png (17x93)" in text and "1. bright" in text and "cam:" in text


def test_overlay_paths_dedupe():
    assert overlay_paths(["x/a.png", "y/a.jpg", "a.png", "b.png"], "d") == [
        "d/a.cam.png",
        "d/a-2.cam.png",
        "d/a-3.cam.png",
        "d/b.cam.png",
    ]
