"""The seven parts of ``python -m benchmarks.run``, one module each; each part's ``rows(s)``
takes the :class:`Settings` of the chosen level and returns its table rows. The train steps
measured are the training loop's own (``fcn_jax.setup.build``, ``common.seed_config``)."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Settings:
    """How much each part measures. ``policies``: label → (size policy, bucket spec)."""

    level: str
    variable: str  # dataset of varying sizes (padding, throughput)
    padding_datasets: tuple[str, ...]
    fixed28: str  # dataset of 28x28 images (PyTorch, time to accuracy, end to end)
    data_dir: str | None = None
    batch_size: int = 64
    # 1. compile budget: synthetic images with sides uniform in compile_range
    compile_range: tuple[int, int] = (14, 56)
    compile_examples: int = 4096
    compile_batch: int = 32
    compile_steps: int = 24
    compile_buckets: str = "auto:8"
    # 2. padding
    padding_specs: tuple[str, ...] = ("auto:4", "auto:8", "auto:16", "auto:32")
    padding_max_k: int = 256
    # 3. throughput
    policies: tuple[tuple[str, str, str | None], ...] = (
        ("fixed", "fixed:40", None),
        ("mixed", "mixed_step:16-64:16", None),
        ("mixed-scale", "mixed_step:16-64:16:scale", None),
        ("native", "native", "auto:8"),
        ("native-16", "native", "auto:16"),  # one bucket per shape of `variable`: no padding
        ("pad-to-max", "native", "64x64"),  # the largest size of `variable`
    )
    rounds: int = 5
    reps: int = 3
    # 4. against PyTorch
    torch_sizes: tuple[int, ...] = (28, 64)
    torch_batch: int = 128
    torch_steps: int = 10
    # 5. time to accuracy
    tta_max_steps: int = 1500
    tta_eval_every: int = 25
    tta_eval_examples: int = 1000
    # 6. end to end against the step alone
    e2e_policies: tuple[str, ...] = ("fixed", "mixed_step", "mixed_example")
    e2e_steps: int = 300
    # 7. host overhead: (policy, the Settings field naming its dataset)
    host_policies: tuple[tuple[str, str], ...] = (
        ("fixed", "fixed28"),
        ("mixed_example", "fixed28"),
        ("native", "variable"),
    )
    # One epoch of fixed28 at batch 8: a run pays the plan of an epoch (and its rows' upload)
    # once an epoch, which a shorter measurement would charge to fewer steps.
    host_steps: int = 2500


# fmt: off
FULL = Settings(
    level="full", variable="procedural_digits/variable", fixed28="procedural_digits/fixed28",
    padding_datasets=("procedural_digits/variable", "procedural_digits/continuous"),
)
QUICK = dataclasses.replace(
    FULL, level="quick", compile_steps=12, padding_max_k=128, rounds=3, reps=2,
    policies=tuple(p for p in FULL.policies if p[0] != "native-16"), tta_max_steps=600,
    e2e_policies=("fixed", "mixed_example"), e2e_steps=150, host_steps=300,
)
# Only for tests: tiny data, a step or two per measurement, but every code path.
SMOKE = dataclasses.replace(
    FULL, level="smoke", variable="procedural_digits/tiny_variable",
    padding_datasets=("procedural_digits/tiny_variable",), fixed28="procedural_digits/tiny_fixed28",
    batch_size=16, compile_examples=128, compile_batch=8, compile_steps=1,
    padding_specs=("auto:2", "auto:4"), padding_max_k=8,
    policies=(
        ("fixed", "fixed:24", None), ("mixed", "mixed_step:16x16-16x32:16", None),
        ("mixed-scale", "mixed_step:16x16-16x32:16:scale", None), ("native", "native", "auto:2"),
        ("pad-to-max", "native", "64x64"),
    ),
    rounds=1, reps=1, torch_sizes=(28,), torch_batch=8, torch_steps=2,
    tta_max_steps=4, tta_eval_every=2, tta_eval_examples=32, e2e_policies=("fixed",), e2e_steps=2,
    host_policies=(("fixed", "fixed28"),), host_steps=2,  # one compile; native: test_device_loader
)
# fmt: on
LEVELS = {s.level: s for s in (FULL, QUICK, SMOKE)}
