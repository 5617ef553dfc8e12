"""When a run's numbers mean little: too few steps, or a model still near chance. One line for
the log, the run's summary (``warning``) and a comparison's report.

A run is *short* below :data:`MIN_STEPS` steps: the recipes and defaults train 1 200 to 1 500
steps or more, so such a run is a smoke test. Its accuracies are an undertrained model's, and
its examples/s, measured over the few steps left once the compiles and each shape's first run
are set apart, is not a throughput figure (reports leave it out). A run is *undertrained*
when its final train loss is above :data:`CHANCE_FRACTION` of the loss of guessing, ln(K) for
K classes: it has not got far from chance, whatever its length.
"""

from __future__ import annotations

import math

MIN_STEPS = 200
CHANCE_FRACTION = 0.5


def throughput_meaningful(steps: float | None) -> bool:
    """Whether a run of ``steps`` steps (None: unknown, e.g. an older record) measured its
    examples/s over enough steps to report it."""
    return steps is None or steps >= MIN_STEPS


def run_warning(
    steps: float | None, final_loss: float | None, num_classes: int | None
) -> str | None:
    """One line saying why a run's numbers mean little, or None when nothing does."""
    reasons = []
    if not throughput_meaningful(steps):
        reasons.append(
            f"only {steps:.0f} steps (fewer than {MIN_STEPS}): a smoke test, its examples/s "
            "is not reported"
        )
    if final_loss is not None and num_classes and num_classes > 1:
        chance = math.log(num_classes)
        if final_loss > CHANCE_FRACTION * chance:
            reasons.append(
                f"final train loss {final_loss:.3g} is above half the loss of guessing "
                f"({chance:.3g} for {num_classes} classes)"
            )
    if not reasons:
        return None
    return "undertrained: " + "; ".join(reasons) + " (train longer: --steps or --epochs)"
