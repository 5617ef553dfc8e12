"""Pure train/eval steps and their per-shape compilation with accounting.

The state is a plain pytree ``{"params", "rest", "opt_state", "step", "bad_step"}`` where
``params``/``rest`` are the model's ``nnx.Param`` and other (BatchNorm statistics) state; the
model structure (``graphdef``) is static. Steps are compiled ahead of time, once per batch
shape, so the number of compilations is exactly the number of distinct shapes seen.
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax
from absl import logging
from flax import nnx

from fcn_jax.data.assemble import OnDevice, batch_key
from fcn_jax.models.layers import global_pool
from fcn_jax.models.strided_conv import conv_grad_mode

State = dict


def cross_entropy(logits: jax.Array, labels: jax.Array, smoothing: float = 0.0) -> jax.Array:
    """Per-example cross-entropy (B,) with optional label smoothing."""
    targets = optax.smooth_labels(jax.nn.one_hot(labels, logits.shape[-1]), smoothing)
    return optax.softmax_cross_entropy(logits, targets)


def init_state(model: nnx.Module, tx: optax.GradientTransformation) -> tuple[nnx.GraphDef, State]:
    """Split a model into its static structure and the train state."""
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    state = {
        "params": params,
        "rest": rest,
        "opt_state": tx.init(params),
        "step": jnp.zeros((), jnp.int32),
        # First step (1-based) whose loss was not finite, or 0. Updates stop from there on.
        "bad_step": jnp.zeros((), jnp.int32),
    }
    return graphdef, state


def train_step(
    state: State,
    batch: dict[str, jax.Array],
    *,
    graphdef: nnx.GraphDef,
    tx: optax.GradientTransformation,
    label_smoothing: float,
    use_sizes: bool,
) -> tuple[State, dict[str, jax.Array]]:
    """One optimizer step on ``batch`` = {image (B, *S, C), label (B,), sizes (B, D)}.

    ``use_sizes`` is False for policies whose batches are never padded (fixed, mixed): the
    model then skips masking. A non-finite loss leaves the state unchanged and is recorded.
    """

    def loss_fn(params):
        # copy: BatchNorm updates its statistics, which must be Variables of this trace level.
        model = nnx.merge(graphdef, params, state["rest"], copy=True)
        logits = model(batch["image"], batch["sizes"] if use_sizes else None)
        loss = cross_entropy(logits, batch["label"], label_smoothing).mean()
        return loss, (logits, nnx.state(model, nnx.Not(nnx.Param)))

    (loss, (logits, rest)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"])
    updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
    params = optax.apply_updates(state["params"], updates)
    step = state["step"] + 1
    ok = jnp.isfinite(loss) & jnp.isfinite(optax.tree.norm(grads)) & (state["bad_step"] == 0)

    def keep_if_ok(new, old):
        return jax.tree.map(lambda a, b: jnp.where(ok, a, b), new, old)

    new_state = {
        "params": keep_if_ok(params, state["params"]),
        "rest": keep_if_ok(rest, state["rest"]),
        "opt_state": keep_if_ok(opt_state, state["opt_state"]),
        "step": step,
        "bad_step": jnp.where((state["bad_step"] == 0) & ~ok, step, state["bad_step"]),
    }
    accuracy = (logits.argmax(-1) == batch["label"]).mean()
    return new_state, {"loss": loss, "accuracy": accuracy}


def eval_step(
    state: State, batch: dict[str, jax.Array], *, graphdef: nnx.GraphDef, with_maps: bool
) -> dict[str, jax.Array]:
    """Per-row results on ``batch`` = {image, label, sizes, valid}: ``correct`` and ``loss``
    (B,) float32, zero on padding rows. Rows, not sums: each process sums its own rows and the
    processes' sums are combined (``fcn_jax.evaluate``).

    ``with_maps`` also returns the class maps ``cmap`` (B, *S', K) and their extents
    ``out_sizes`` (B, D), for localization metrics computed on the host.
    """
    model = nnx.merge(graphdef, state["params"], state["rest"])
    cmap, out_sizes = model.features(batch["image"], batch["sizes"])
    logits = global_pool(cmap, out_sizes, model.spec.pool)
    valid = batch["valid"].astype(jnp.float32)
    out = {
        "correct": (logits.argmax(-1) == batch["label"]) * valid,
        "loss": cross_entropy(logits, batch["label"]) * valid,
    }
    if with_maps:
        out.update(cmap=cmap, out_sizes=out_sizes)
    return out


def logits_step(
    state: State, batch: dict[str, jax.Array], *, graphdef: nnx.GraphDef
) -> dict[str, jax.Array]:
    """Per-row logits on ``batch`` = {image (B, *S, C), sizes (B, D)}: ``{"logits": (B, K)
    float32}``, padding rows included (the caller drops them), computed as :func:`eval_step`
    computes them: for test-time averaging over sizes (``fcn_jax.evaluate``)."""
    model = nnx.merge(graphdef, state["params"], state["rest"])
    cmap, out_sizes = model.features(batch["image"], batch["sizes"])
    return {"logits": global_pool(cmap, out_sizes, model.spec.pool).astype(jnp.float32)}


class CompiledStep:
    """A step compiled ahead of time once per batch shape, with the compilations logged.

    ``compiles`` counts executables built; ``compile_seconds`` their total time; ``shapes``
    the image shapes they were built for.
    """

    def __init__(
        self,
        fn: Callable,
        name: str,
        state_sharding,
        batch_sharding,
        donate: bool,
        matmul_precision: str | None = None,
        conv_grad: str = "auto",
    ):
        self.name = name
        # Settings read while tracing: this step's own, whatever other runs of the process use.
        self._matmul_precision, self._conv_grad = matmul_precision, conv_grad
        self._fn, self._donate = fn, (0,) if donate else ()
        self._jitted = jax.jit(
            fn,
            in_shardings=(state_sharding, batch_sharding),
            out_shardings=state_sharding,  # everything returned is replicated
            donate_argnums=self._donate,
        )
        self._state_sharding, self._batch_sharding = state_sharding, batch_sharding
        self._executables: dict = {}
        self.compile_seconds = 0.0
        # Each executable's first run, timed alone: one-time setup that XLA:CPU does there (3-25
        # ms a shape for a small model), a cost of the run like its compiles, not of its steps.
        self.first_run_seconds = 0.0
        self._ran: set = set()
        self.shapes: list[tuple[int, ...]] = []

    @property
    def compiles(self) -> int:
        return len(self._executables)

    def compile(self, state, batch) -> Callable:
        """Compile for ``batch``'s shapes (arrays or ShapeDtypeStructs, or an
        :class:`OnDevice`) unless done already."""
        key = batch_key(batch)
        if key not in self._executables:
            start = time.perf_counter()
            with self._trace_settings():
                if isinstance(batch, OnDevice):
                    shape = jax.eval_shape(batch.build, batch.held)[0]["image"].shape
                    lowered = self._assembling(batch.build).lower(state, batch.held)
                else:
                    shape = batch["image"].shape
                    spec = {
                        k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=self._batch_sharding)
                        for k, v in batch.items()
                    }
                    lowered = self._jitted.lower(state, spec)
                self._executables[key] = lowered.compile()
            seconds = time.perf_counter() - start
            self.compile_seconds += seconds
            self.shapes.append(tuple(shape))
            logging.info(
                "compiled %s step #%d for image shape %s in %.2fs",
                self.name,
                self.compiles,
                tuple(shape),
                seconds,
            )
        return self._executables[key]

    def _assembling(self, build: Callable):
        """The step on the batch ``build(held)`` makes: ``(state, held) -> (state, out,
        carry)``, one computation."""

        def step(state, held):
            batch, carry = build(held)
            batch = jax.lax.with_sharding_constraint(batch, self._batch_sharding)
            return *self._fn(state, batch), carry

        replicated = self._state_sharding  # the held arrays are on every device
        return jax.jit(
            step,
            in_shardings=(replicated, replicated),
            out_shardings=replicated,
            donate_argnums=self._donate,
        )

    def __call__(self, state, batch):
        key = batch_key(batch)
        executable = self._executables.get(key) or self.compile(state, batch)
        first = key not in self._ran
        if first:
            jax.block_until_ready(state)  # the steps queued before it are not its time
            start = time.perf_counter()
        if isinstance(batch, OnDevice):
            *result, carry = executable(state, batch.held)  # (state, out, carry)
            if batch.keep is not None:
                batch.keep(carry)
            result = tuple(result)
        else:
            result = executable(state, batch)
        if first:
            jax.block_until_ready(result)
            self.first_run_seconds += time.perf_counter() - start
            self._ran.add(key)
        return result

    def _trace_settings(self) -> contextlib.ExitStack:
        stack = contextlib.ExitStack()
        if self._matmul_precision is not None:
            stack.enter_context(jax.default_matmul_precision(self._matmul_precision))
        stack.enter_context(conv_grad_mode(self._conv_grad))
        return stack


def over_leaves(fn: Callable, treedef) -> Callable:
    """``fn(state, batch) -> (state, out)`` as a function of the state's leaves (a list of
    arrays, ``jax.tree.leaves(state)``). A flat list crosses the jit boundary several times
    faster than ``nnx.State`` (no Variable objects are rebuilt per call): what a training loop
    dispatching thousands of short steps needs."""

    def flat(leaves, batch):
        state, out = fn(jax.tree.unflatten(treedef, leaves), batch)
        return jax.tree.leaves(state), out

    return flat


def make_train_step(graphdef, tx, *, label_smoothing, use_sizes, treedef=None, **step_kw):
    """The compiled train step; with ``treedef`` (the state's structure) it takes and returns
    the state's leaves (:func:`over_leaves`). ``step_kw``: :class:`CompiledStep`'s shardings
    and trace settings."""
    fn = functools.partial(
        train_step,
        graphdef=graphdef,
        tx=tx,
        label_smoothing=label_smoothing,
        use_sizes=use_sizes,
    )
    if treedef is not None:
        fn = over_leaves(fn, treedef)
    return CompiledStep(fn, "train", donate=True, **step_kw)


def make_eval_step(graphdef, *, with_maps, **step_kw):
    fn = functools.partial(eval_step, graphdef=graphdef, with_maps=with_maps)
    return CompiledStep(fn, "eval", donate=False, **step_kw)


def make_logits_step(graphdef, **step_kw):
    fn = functools.partial(logits_step, graphdef=graphdef)
    return CompiledStep(fn, "logits", donate=False, **step_kw)
