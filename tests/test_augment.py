"""Augmentation (fcn_jax.data.augment): zoom and shift within the canvas, deterministic and
resumed exactly by the loader, one-line errors."""

import json

import numpy as np
import pytest
from loaders import make_loader
from loaders import same as _same
from loaders import take as _take

from fcn_jax.config import TrainConfig
from fcn_jax.data.augment import Augmentation, parse_augmentation


def _loader(ds, spec, aug=None, **kw):
    return make_loader(ds, spec, min_size=(4, 4), augmentation=aug, **kw)


def test_zoom_and_shift_move_the_content():
    image = np.ones((20, 20, 1), np.float32)
    aug = Augmentation(0.5, 0.5, 0.0)
    out = aug.apply(image, (20, 20), 0.5, (0.0, 0.0))
    assert out.shape == (20, 20, 1)
    np.testing.assert_array_equal(np.argwhere(out[..., 0] > 0.5).min(0), [5, 5])
    shifted = aug.apply(image, (20, 30), 0.5, (0.25, -0.1))  # 5 rows down, 3 columns left
    rows, cols = np.nonzero(shifted[..., 0] > 0.5)
    assert (rows.min(), cols.min()) == (5 + 5, 7 - 3) and (rows.max(), cols.max()) == (19, 18)
    zoomed = aug.apply(image, (20, 20), 1.5, (0.5, 0.5))  # 30x30 from (5, 5): cropped
    assert zoomed.shape == (20, 20, 1) and zoomed[5:, 5:].all()
    assert not zoomed[:5].any() and not zoomed[:, :5].any()


@pytest.mark.parametrize("spec", ["fixed:16", "mixed_example:8-24"])
def test_augmentation_is_deterministic_and_resumes_exactly(small, spec):
    aug = parse_augmentation("0.6-1.3", 0.2)
    plain = _take(_loader(small, spec), 6)
    first = _loader(small, spec, aug=aug)
    a = _take(first, 6)
    assert _same(a, _take(_loader(small, spec, aug=aug), 6))
    assert not _same(a, plain) and not _same(a, _take(_loader(small, spec, aug=aug, seed=1), 6))
    state = json.loads(json.dumps(first.get_state()))
    want = _take(first, 7)
    resumed = _loader(small, spec, aug=aug)
    resumed.set_state(state)
    assert _same(_take(resumed, 7), want)


@pytest.mark.parametrize(
    "zoom, translate", [("1.2-0.8", 0.0), ("x", 0.0), ("0-1", 0.0), ("0.9", 0.0), (None, 0.7)]
)
def test_bad_augmentation_is_one_line(zoom, translate):
    with pytest.raises(ValueError, match="--zoom|--translate") as err:
        TrainConfig(zoom=zoom, translate=translate).resolved()
    assert "\n" not in str(err.value)
