"""Tiny training runs shared by the end-to-end tests of training and resuming."""

import json
import os
import struct
import subprocess
import sys

import numpy as np
from tiny import TINY_TRAIN

from fcn_jax.config import TrainConfig
from fcn_jax.run import train_and_evaluate

SUMMARY_KEYS = {
    "test_accuracy",
    "eval_accuracy",
    "train_compiles",
    "eval_compiles",
    "buckets",
    "padding_efficiency",
    "train_examples_per_sec",
    "wall_time_s",
    "steps",
    "final_loss",
}


def tiny(data_dir, **kw) -> TrainConfig:
    """A few steps of a narrow seed model on 32 test examples."""
    base = {**TINY_TRAIN, "data_dir": data_dir, "buckets": "auto:2", "checkpoint_every": 3}
    return TrainConfig(**{**base, **kw})


def run(config, workdir) -> dict:
    summary = train_and_evaluate(config, str(workdir))
    assert SUMMARY_KEYS <= set(summary)
    on_disk = json.load(open(os.path.join(workdir, "summary.json")))
    assert on_disk["eval_accuracy"] == summary["eval_accuracy"]
    assert np.isfinite(summary["final_loss"])
    return summary


def tensorboard_scalars(workdir) -> dict[str, dict[int, float]]:
    """tag -> {step: value} from the TensorBoard event files under ``workdir/tensorboard``
    (TFRecord framing: length, its CRC, an Event proto, its CRC)."""
    from tensorboardX.proto.event_pb2 import Event

    scalars = {}
    for path in sorted((workdir / "tensorboard").iterdir()):
        data, pos = path.read_bytes(), 0
        while pos + 12 <= len(data):
            (length,) = struct.unpack("<Q", data[pos : pos + 8])
            event = Event.FromString(data[pos + 12 : pos + 12 + length])
            pos += 16 + length
            for value in event.summary.value:
                scalars.setdefault(value.tag, {})[event.step] = value.simple_value
    return scalars


def cli(args, env=None, **kw):
    return subprocess.Popen(
        [sys.executable, "-m", "experiments.train", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
        **kw,
    )
