"""Part 5: wall seconds of training until the test accuracy reaches the target."""

from __future__ import annotations

import time

import jax

from benchmarks.common import Row, StepRunner, seed_config
from benchmarks.parts import Settings
from fcn_jax.data import Subset
from fcn_jax.evaluate import eval_batching, evaluate
from fcn_jax.setup import build
from fcn_jax.steps import make_eval_step

PART, GOAL = "5 time to acc.", 0.9


def rows(s: Settings) -> list[Row]:
    """Train on ``fixed28``, evaluating every ``tta_eval_every`` steps on the first
    ``tta_eval_examples`` test examples; the clock starts once the setup is built (compiles
    and evaluations included)."""
    fields = dict(dataset=s.fixed28, data_dir=s.data_dir, batch_size=s.batch_size)
    setup = build(seed_config(**fields, steps=s.tta_max_steps))
    test = Subset(setup.dataset.test, min(s.tta_eval_examples, len(setup.dataset.test)))
    eval_step = make_eval_step(setup.eval_graphdef, with_maps=False, **setup.steps_kw)
    batching = eval_batching(min(500, len(test)), setup.model.min_size, setup.mesh)
    eval_kw = dict(mode="resize", **batching)
    treedef = jax.tree.structure(setup.state)
    start, best, reached, eval_seconds = time.perf_counter(), 0.0, None, 0.0
    runner = StepRunner(setup)
    for i, _ in enumerate(runner.train(s.tta_max_steps), 1):
        if i % s.tta_eval_every and i != s.tta_max_steps:
            continue
        t, state = time.perf_counter(), jax.tree.unflatten(treedef, runner.state)
        best = max(best, evaluate(eval_step, state, test, None, **eval_kw)["accuracy"])
        eval_seconds += time.perf_counter() - t
        if best >= GOAL:
            reached = (time.perf_counter() - start, i)
            break
    what = (
        f"{s.fixed28.removeprefix('procedural_digits/')}, batch {s.batch_size}, AdamW "
        f"{setup.config.learning_rate:g}, eval every {s.tta_eval_every} steps on {len(test)} "
        "test examples"
    )
    compiles = setup.train_step.compile_seconds + eval_step.compile_seconds
    evals = eval_seconds - eval_step.compile_seconds
    seconds, steps = reached or (None, None)
    note = f"{what}; compiles {compiles:.1f} s, evaluations {evals:.1f} s"
    if not reached:
        wall = time.perf_counter() - start
        note = f"not reached in {s.tta_max_steps} steps ({wall:.1f} s); {what}"
    examples = f"{steps * s.batch_size} examples" if reached else "not reached"
    return [
        Row(PART, f"seconds to {GOAL} test accuracy", seconds, "s", note=note),
        Row(PART, f"steps to {GOAL} test accuracy", steps, "steps", note=examples),
        Row(PART, "best test accuracy seen", best, "accuracy", f">= {GOAL}"),
    ]
