"""Sweep grids (fcn_jax.runs.grid): --set and grid files parsed, bad values caught before
anything runs, runs planned with their names and flags."""

import json

import pytest

from fcn_jax.runs import grid as grids
from fcn_jax.runs.rundir import run_name

GRID = {"model": ["seed", "allcnn"], "train_size": ["fixed:24", "fixed:6"]}


def test_set_and_grid_files(tmp_path):
    grid = grids.parse_set(
        ["model=seed,allcnn", "learning_rate=1e-3,3e-3", 'eval_sizes=["24,28x16", "grid:16,28"]']
    )
    assert grid == {
        "model": ["seed", "allcnn"],
        "learning_rate": [1e-3, 3e-3],
        "eval_sizes": ["24,28x16", "grid:16,28"],
    }
    assert grids.parse_set(["precompile=true,false", "norm=none,batch"]) == {
        "precompile": [True, False],
        "norm": [None, "batch"],
    }
    (tmp_path / "g.json").write_text(json.dumps({"steps": [5, 10], "width": 0.5}))
    assert grids.load_grid_file(str(tmp_path / "g.json")) == {"steps": [5, 10], "width": [0.5]}
    (tmp_path / "g.py").write_text("GRID = {'model': ['seed', 'nin']}\n")
    assert grids.load_grid_file(str(tmp_path / "g.py")) == {"model": ["seed", "nin"]}


@pytest.mark.parametrize(
    "content, match",
    [
        ('{"lr": [1]}', r"g.json: key 'lr': not a training flag"),
        ('{"steps": ["ten"]}', r"g.json: key 'steps': 'ten' is not an int"),
        ('{"steps": []}', r"g.json: key 'steps': empty list"),
        ('{"seed": [0, 1]}', r"g.json: key 'seed': .*--seeds"),
        ('{"eval_mode": [null]}', r"g.json: key 'eval_mode': None is not allowed"),
        ('["steps"]', r"g.json: expected a mapping"),
        ('{"steps": [1,', r"g.json: not valid JSON"),
    ],
)
def test_bad_grid_files_name_file_and_key(tmp_path, content, match):
    (tmp_path / "g.json").write_text(content)
    with pytest.raises(ValueError, match=match):
        grids.load_grid_file(str(tmp_path / "g.json"))


def test_bad_values_are_caught_before_running():
    with pytest.raises(ValueError, match=r"--set: key 'learning_rate': 'fast' is not a float"):
        grids.parse_set(["learning_rate=1e-3,fast"])
    with pytest.raises(ValueError, match=r"grid point model=bogus: --model='bogus'"):
        grids.plan_runs({"model": ["seed", "bogus"]}, [0], {})
    with pytest.raises(ValueError, match=r"grid point train_size=fixd:28: .*bad size policy"):
        grids.plan_runs({"train_size": ["fixd:28"]}, [0], {})
    with pytest.raises(ValueError, match="--steps given both"):
        grids.plan_runs({"steps": [1]}, [0], {"steps": 2})
    with pytest.raises(ValueError, match="--seeds"):
        grids.plan_runs({"steps": [1]}, [0], {"seed": 3})


def test_plan_names_and_flags():
    runs = grids.plan_runs(GRID, [0, 1], {"width": 0.25, "precompile": True})
    assert len(runs) == 8 and len({r.name for r in runs}) == 8
    first = runs[0]
    assert first.name == "model=seed__train_size=fixed_24__seed0"
    assert first.params == {"model": "seed", "train_size": "fixed:24"}
    assert first.flags == (
        "--width=0.25",
        "--precompile",
        "--model=seed",
        "--train_size=fixed:24",
        "--seed=0",
    )
    long = run_name(grids.point_label({"eval_sizes": ",".join(map(str, range(100)))}), 0, "__")
    assert len(long) <= 120
