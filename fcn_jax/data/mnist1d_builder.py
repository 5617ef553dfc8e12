"""`mnist1d`: a TFDS dataset of 1-D digit signals from the `mnist1d` package's offline generator.

Only `mnist1d.data.make_dataset` is used (never its download functions), so building is
offline and needs no TensorFlow. Import this module to register the builder, then e.g.::

    builder = prepare("mnist1d/variable", data_dir)
    ds = tfds.data_source("mnist1d", split="train", data_dir=data_dir)
"""

from __future__ import annotations

import dataclasses
import random

import numpy as np
import tensorflow_datasets as tfds
from mnist1d.data import get_dataset_args, make_dataset

from fcn_jax.data.offline_builder import OfflineBuilder
from fcn_jax.data.procedural_digits import prepare

__all__ = ["Mnist1d", "Mnist1dConfig", "generate_split", "prepare"]

_SPLIT_IDS = {"train": 0, "test": 1}
# The package's internal resolution: template_len (12) + max padding (60). Its signals are
# linearly interpolated from this length down to `final_seq_length`.
_FULL_LENGTH = 72


@dataclasses.dataclass(eq=False, kw_only=True)
class Mnist1dConfig(tfds.core.BuilderConfig):
    """`length_range=None`: the package's fixed `final_seq_length` (40); else per-example
    lengths drawn from the inclusive range. `num_train + num_test` samples are generated."""

    length_range: tuple[int, int] | None = None
    num_train: int = 4000
    num_test: int = 1000
    seed: int = 42  # the package's default seed


def generate_split(config: Mnist1dConfig, split: str) -> tuple[list[np.ndarray], np.ndarray]:
    """Generates one split: (signals, each float32 (L,), labels int64 (N,)).

    Fixed length: the package's `make_dataset` with its default arguments except the sample
    count (the default config reproduces the package's standard 4000/1000 dataset).
    Variable length: `make_dataset` with `final_seq_length=72` (the package's internal
    resolution, so no detail is lost), then example `i` is linearly resampled to its own length
    `L ~ U{length_range}` drawn from `np.random.default_rng([seed, split_id, i])`.
    """
    args = get_dataset_args()
    args.num_samples = config.num_train + config.num_test
    args.train_split = config.num_train / args.num_samples
    args.seed = config.seed
    if config.length_range is not None:
        args.final_seq_length = _FULL_LENGTH
    # make_dataset reseeds the global RNGs; restore them so building has no side effects.
    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        data = make_dataset(args)
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)
    xs, ys = (data["x"], data["y"]) if split == "train" else (data["x_test"], data["y_test"])
    xs = xs.astype(np.float32)
    if config.length_range is None:
        return list(xs), ys.astype(np.int64)
    lo, hi = config.length_range
    out = []
    src = np.linspace(0.0, 1.0, xs.shape[1])
    for i, x in enumerate(xs):
        rng = np.random.default_rng([config.seed, _SPLIT_IDS[split], i])
        length = int(rng.integers(lo, hi + 1))
        out.append(np.interp(np.linspace(0.0, 1.0, length), src, x).astype(np.float32))
    return out, ys.astype(np.int64)


class Mnist1d(OfflineBuilder):
    """MNIST-1D (Greydanus 2020): 1-D signals of digits 0-9, generated offline.

    Configs (the first, `standard`, is the default):
      standard:       the package's default dataset: length 40, 4000 train / 1000 test.
      variable:       4000 / 1000, each example resampled to its own length in [24, 72]
                      (see `generate_split`).
      tiny_variable:  512 train / 128 test, like `variable`; for fast tests.

    Features:
      image: float32 (L, 1) signal (channels last), ZLIB-compressed tensor.
      label: ClassLabel(10).
    """

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    BUILDER_CONFIGS = [
        Mnist1dConfig(name="standard", description="The package's default: length 40."),
        Mnist1dConfig(
            name="variable",
            description="Per-example length in [24, 72].",
            length_range=(24, 72),
        ),
        Mnist1dConfig(
            name="tiny_variable",
            description="Small `variable` for tests.",
            length_range=(24, 72),
            num_train=512,
            num_test=128,
        ),
    ]

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Tensor(
                        shape=(None, 1),
                        dtype=np.float32,
                        encoding=tfds.features.Encoding.ZLIB,
                    ),
                    "label": tfds.features.ClassLabel(num_classes=10),
                }
            ),
            supervised_keys=("image", "label"),
            description="MNIST-1D signals from the mnist1d package's offline generator.",
            homepage="https://github.com/greydanus/mnist1d",
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # Nothing to download.
        return {split: self._generate_examples(split) for split in ("train", "test")}

    def _generate_examples(self, split: str):
        xs, ys = generate_split(self.builder_config, split)
        for i, (x, y) in enumerate(zip(xs, ys, strict=True)):
            yield i, {"image": x[:, None], "label": int(y)}
