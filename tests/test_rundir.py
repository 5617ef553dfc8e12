"""Run directories and their one reuse rule (fcn_jax.runs.rundir): a finished run is reused when
its recorded config equals the wanted one on every field that affects results, whatever the
spelling of its sizes; else it trains again, or is refused up front for Slurm."""

import stat
import sys

import pytest
from commands import REPO

from fcn_jax.data import parse_size_policy
from fcn_jax.outputs import write_json
from fcn_jax.runs import grid as grids
from fcn_jax.runs import launch, sweep
from fcn_jax.runs.rundir import RunDir

TRAIN = [sys.executable, "-m", "experiments.train"]


@pytest.mark.parametrize(
    "recorded, wanted",
    [
        ("fixed:28", "fixed:28x28"),
        ("fixed:28x28", "fixed:28"),
        ("mixed:16-24:8", "mixed_step:16-24"),
        ("mixed_step:16x16-24x24:8", "mixed:16-24"),
    ],
)
def test_an_equivalent_spelling_is_reused(tmp_path, recorded, wanted):
    """A finished run recorded with one spelling of its size policy (and of its test sizes) is
    reused by a sweep that spells them another way; other sizes are a difference."""
    (run,) = grids.plan_runs({"train_size": [wanted]}, [0], {"eval_sizes": "28,24x24"})
    rundir = RunDir.of(str(tmp_path), run.name)
    config = {**run.config.resolved().to_dict(), "train_size": recorded, "eval_sizes": "28x28,24"}
    facts = {"spatial_dims": 2, "train_examples": 100}
    write_json(rundir.config_path, {"config": config, "dataset": facts})
    write_json(rundir.summary_path, {"steps": 6})
    assert rundir.reusable(run.config)
    write_json(
        rundir.config_path, {"config": {**config, "train_size": "fixed:24"}, "dataset": facts}
    )
    assert rundir.differences(run.config) == {
        "train_size": ("fixed:24x24", parse_size_policy(wanted, 2).spec())
    }


def test_one_reuse_rule(tmp_path, monkeypatch):
    """A finished run is reused when its recorded config equals the wanted one on every field
    that affects results; else it goes back to training (here: a fake re-evaluation, which
    keeps the training measurements), or is refused up front for Slurm."""
    runs = grids.plan_runs({"eval_sizes": ["24", "28"]}, [0], {"steps": 6})
    same, other = (RunDir.of(str(tmp_path), r.name) for r in runs)
    for run, rundir in zip(runs, (same, other)):
        wanted = run.config.resolved().to_dict()
        assert not rundir.reusable(run.config)  # nothing there
        write_json(rundir.config_path, {"config": {**wanted, "log_every": 1, "data_dir": "/x"}})
        assert not rundir.reusable(run.config)  # started, not finished
        write_json(rundir.summary_path, {"steps": 6, "train_compiles": 3})
        assert rundir.reusable(run.config)  # only bookkeeping fields differ
    recorded = {**runs[1].config.resolved().to_dict(), "eval_sizes": "24,28"}
    write_json(other.config_path, {"config": recorded})
    assert other.differences(runs[1].config) == {"eval_sizes": ("24,28", "28")}
    with pytest.raises(ValueError, match=r"--eval_sizes='24,28', this sweep's is '28'"):
        sweep.write_slurm(runs, str(tmp_path), command=TRAIN, cwd=REPO)

    fake = tmp_path / "fake_python"
    fake.write_text(
        "#!/bin/sh\n"
        'for a in "$@"; do case "$a" in --workdir=*) d="${a#--workdir=}";; esac; done\n'
        """echo '{"steps": 6, "resumed_from_step": 6, "train_compiles": 0, "test_accuracy": 0.5}'"""
        ' > "$d/summary.json"\n'
    )
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setattr(launch, "probe_accelerators", lambda python: ("cpu", 1))
    lines = []
    status = sweep.run_local(runs, str(tmp_path), command=[str(fake)], cwd=REPO, log=lines.append)
    assert status == {runs[0].name: "skipped", runs[1].name: "finished"}
    assert same.summary() == {"steps": 6, "train_compiles": 3}
    assert other.summary()["test_accuracy"] == 0.5 and other.summary()["train_compiles"] == 3
