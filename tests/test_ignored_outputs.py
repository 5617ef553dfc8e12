"""What the project's commands write, by default and in the README's examples, is ignored by
git: a command run in the checkout leaves no untracked files behind."""

import os
import shutil
import subprocess

import pytest
from commands import REPO

from fcn_jax.data.rescale import default_output
from fcn_jax.export import default_path

pytestmark = pytest.mark.skipif(
    shutil.which("git") is None or not os.path.exists(os.path.join(REPO, ".git")),
    reason="needs git and a git checkout",
)


def ignored(paths: list[str]) -> set[str]:
    """The ``paths`` (relative to the checkout) that git ignores."""
    proc = subprocess.run(
        ["git", "check-ignore", "--no-index", "--stdin"],
        cwd=REPO,
        input="\n".join(paths),
        capture_output=True,
        text=True,
    )
    assert proc.returncode in (0, 1), proc.stderr  # 1: none ignored
    return set(proc.stdout.splitlines())


def test_outputs_of_the_commands_are_ignored():
    outputs = [
        default_output("npz:~/.cache/fcn-data/real_digits.npz", 0),  # experiments.rescale
        default_path("runs/seed"),  # experiments.export without --out
        default_path("runs/seed", with_sizes=True),
        "scale0.npz",  # explicit --out paths in the checkout's root
        "seed.fcnx",
        "cams/photo.cam.png",  # experiments.predict --cam=cams/
        "runs/compare/report.md",  # compare, sweep, series, benchmarks
        "mycompare/xla_cache/jit_step-abc",  # a shared compile cache outside runs/
        ".tmp-summary.json",  # an interrupted atomic write
    ]
    assert ignored(outputs) == set(outputs)


def test_sources_and_docs_are_not_ignored():
    kept = ["fcn_jax/export.py", "docs/compare_heatmaps.png", "docs/results.md", "README.md"]
    assert ignored(kept) == set()
