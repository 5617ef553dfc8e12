"""Export a model to one file that runs on inputs of every size, with only ``jax`` installed.

``export_model(model, path)`` traces the model once with :mod:`jax.export` on a *symbolic*
input shape, e.g. for a 2-D, 1-channel model whose smallest input is 8×8::

    symbolic_shape("b, s0, s1, 1", constraints=["s0 >= 8", "s1 >= 8"])

(1-D: ``"b, s0, C"``). The batch ``b`` and every spatial extent are free, the channel count is
fixed, and the constraints encode the model's minimum size; the output extents are symbolic
``floordiv`` expressions of the input's. Weights are closed over, so they are constants inside
the serialized StableHLO. BatchNorm runs on its running averages (eval mode). The function
returns a dict::

    {"logits": (b, num_classes) float32, "class_map": (b, *S', num_classes) float32}

where ``class_map`` is the map before global pooling (``S'`` = ``model.out_size(S)``).

``export_model(model, path, with_sizes=True)`` (``experiments.export --with_sizes``) exports
the padded-batch call ``f(x, sizes)`` instead: ``x`` (b, *S, C) float32 holds examples of
different sizes zero-padded after their content, ``sizes`` (b, D) int32 each one's true extent
(``S >= sizes >= min_size``). Each row's logits are those of the example run alone at its own
size; the dict adds ``"out_sizes"`` (b, D) int32, the valid extent of each row's ``class_map``
(zero beyond it). The header's ``"inputs"`` says which call a file takes (``["x"]`` or
``["x", "sizes"]``; files without the key take ``x``).

File format: one line of magic (``fcn_jax-export/1``), one line of JSON metadata (model spec,
``min_size``, ``class_names``, ``inputs``, ...), then the bytes of ``Exported.serialize()``.
Loading it without flax or fcn_jax (``jax`` and ``numpy`` only)::

    import json, jax, numpy as np
    magic, header, blob = open("model.fcnx", "rb").read().split(b"\\n", 2)
    meta, exported = json.loads(header), jax.export.deserialize(bytearray(blob))
    c = meta["in_channels"]
    if meta.get("inputs", ["x"]) == ["x"]:  # default export: call(x), x (B, H, W, C) float32
        out = exported.call(np.zeros((1, 28, 40, c), np.float32))
    else:  # --with_sizes: call(x, sizes), x zero-padded (B, H, W, C), sizes (B, 2) int32
        x = np.zeros((2, 32, 40, c), np.float32)  # example 0: x[0, :28, :40]; 1: x[1, :32, :17]
        out = exported.call(x, np.array([[28, 40], [32, 17]], np.int32))
        h, w = out["out_sizes"][1]  # example 1's class map: out["class_map"][1, :h, :w]
    probs = jax.nn.softmax(out["logits"])  # (B, K); out["class_map"]: (B, h', w', K)

``load_exported(path)`` does the same and checks inputs first, raising a readable
``ValueError`` for a wrong rank, channel count, a size below ``min_size`` or bad ``sizes``
(the exported function's own shape checks give harder-to-read errors, and it does not check
the values of ``sizes`` at all).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

import jax
import numpy as np

from fcn_jax.models.inputs import axes as input_axes
from fcn_jax.models.inputs import check_input_shape, check_sizes
from fcn_jax.outputs import write_atomic

MAGIC = b"fcn_jax-export/1"
DEFAULT_PLATFORMS = ("cpu", "cuda", "tpu")


def symbolic_input_spec(spatial_dims: int, in_channels: int, min_size: Sequence[int]):
    """The polymorphic shape string and constraints of the input: ``("b, s0, s1, C",
    ["s0 >= m0", "s1 >= m1"])`` for 2-D."""
    axes = [f"s{i}" for i in range(spatial_dims)]
    spec = ", ".join(["b", *axes, str(in_channels)])
    return spec, [f"{a} >= {int(m)}" for a, m in zip(axes, min_size)]


def _forward(model, with_sizes: bool):
    """The function to export: ``x`` (B, *S, C) [, ``sizes`` (B, D)] -> the output dict, on
    an eval-mode copy of ``model`` whose weights are closed over."""
    from flax import nnx

    from fcn_jax.models.layers import global_pool

    graphdef, state = nnx.split(model)

    def forward(x, sizes=None):
        m = nnx.merge(graphdef, state)
        m.eval()
        # The model masks x beyond each row's size and computes each row's output extent.
        cmap, out_sizes = m.features(x, sizes)
        out = {"logits": global_pool(cmap, out_sizes, m.spec.pool), "class_map": cmap}
        if with_sizes:
            out["out_sizes"] = out_sizes.astype(np.int32)
        return out

    return forward


def export_function(
    model, platforms: Sequence[str] = DEFAULT_PLATFORMS, with_sizes: bool = False
) -> jax.export.Exported:
    """Trace ``model`` (an :class:`fcn_jax.FCN`) into a :class:`jax.export.Exported` on a
    symbolic ``(b, *S, C)`` float32 input, plus, ``with_sizes``, a ``(b, D)`` int32 ``sizes``
    input sharing the symbol ``b``; see the module docstring. ``model`` is not changed (a copy
    is put in eval mode)."""
    spec = model.spec
    shape_spec, constraints = symbolic_input_spec(
        spec.spatial_dims, spec.in_channels, model.min_size
    )
    shape = jax.export.symbolic_shape(shape_spec, constraints=constraints)
    args = [jax.ShapeDtypeStruct(shape, np.float32)]
    if with_sizes:  # shape[0] is the same symbolic b (one scope), so B must agree
        args.append(jax.ShapeDtypeStruct((shape[0], spec.spatial_dims), np.int32))
    forward = jax.jit(_forward(model, with_sizes))
    return jax.export.export(forward, platforms=tuple(platforms))(*args)


def model_metadata(
    model, class_names: Sequence[str] | None = None, platforms=(), with_sizes: bool = False
) -> dict:
    """The JSON header stored with an export: spec, sizes, class names, input/output layout."""
    spec = model.spec
    if class_names is not None and len(class_names) != spec.num_classes:
        raise ValueError(
            f"got {len(class_names)} class names for a model with {spec.num_classes} classes"
        )
    shape_spec, constraints = symbolic_input_spec(
        spec.spatial_dims, spec.in_channels, model.min_size
    )
    meta = {
        "format": MAGIC.decode(),
        "num_classes": spec.num_classes,
        "in_channels": spec.in_channels,
        "spatial_dims": spec.spatial_dims,
        "min_size": [int(m) for m in model.min_size],
        "class_names": None if class_names is None else [str(c) for c in class_names],
        "inputs": ["x", "sizes"] if with_sizes else ["x"],
        "input_shape": shape_spec,
        "constraints": constraints,
        "outputs": ["logits", "class_map", "out_sizes"] if with_sizes else ["logits", "class_map"],
        "platforms": list(platforms),
        "spec": spec.to_dict(),
        "jax_version": jax.__version__,
    }
    if with_sizes:
        meta["sizes_shape"] = f"b, {spec.spatial_dims}"
    return meta


def default_path(workdir: str, with_sizes: bool = False) -> str:
    """Where ``experiments.export`` writes without --out: into the run directory (under runs/,
    which git ignores, for the README's runs), ``model.fcnx`` or ``model-padded.fcnx``."""
    return os.path.join(workdir, "model-padded.fcnx" if with_sizes else "model.fcnx")


def export_model(
    model,
    path: str,
    *,
    class_names: Sequence[str] | None = None,
    platforms: Sequence[str] = DEFAULT_PLATFORMS,
    with_sizes: bool = False,
) -> str:
    """Serialize ``model`` to ``path`` (written atomically); returns ``path``.

    One file accepts every input ``(B, *S, C)`` with ``S >= model.min_size``; it returns
    ``{"logits": (B, K), "class_map": (B, *S', K)}``. ``with_sizes``: the call is
    ``(x, sizes)`` for zero-padded batches, ``sizes`` (B, D) int32, and ``"out_sizes"`` (B, D)
    is returned too. ``class_names`` (K strings) are stored in the header when given.
    """
    meta = model_metadata(model, class_names, platforms, with_sizes)
    blob = export_function(model, platforms, with_sizes).serialize()
    header = json.dumps(meta, separators=(",", ":")).encode()
    write_atomic(path, MAGIC + b"\n" + header + b"\n" + bytes(blob))
    return path


def call_signature(meta: dict) -> str:
    """The call an export file takes, in words, e.g. ``f(x (B, H, W, 3) float32) -> logits
    (B, 10), class_map (B, H', W', 10)``."""
    d, c, k = int(meta["spatial_dims"]), meta["in_channels"], meta["num_classes"]
    axes = input_axes(d)
    primed = ", ".join(f"{a}'" for a in axes)
    args = f"x (B, {', '.join(axes)}, {c}) float32"
    outs = f"logits (B, {k}), class_map (B, {primed}, {k})"
    if "sizes" in meta.get("inputs", ["x"]):
        args = f"{args} zero-padded, sizes (B, {d}) int32"
        outs = f"{outs}, out_sizes (B, {d}) int32"
    return f"f({args}) -> {outs}"


def read_artifact(path: str) -> tuple[dict, bytearray]:
    """``(metadata, serialized Exported)`` of an export file; ``ValueError`` if it is not one."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise ValueError(f"cannot read exported model {path!r}: {e.strerror or e}") from None
    parts = data.split(b"\n", 2)
    if len(parts) != 3 or parts[0] != MAGIC:
        raise ValueError(f"{path!r} is not an fcn_jax export (expected header {MAGIC.decode()!r})")
    try:
        meta = json.loads(parts[1])
    except ValueError:
        raise ValueError(f"{path!r}: corrupt export header") from None
    return meta, bytearray(parts[2])


class ExportedModel:
    """A callable over a deserialized export: ``m(x) -> {"logits": (B, K), "class_map":
    (B, *S', K)}`` (numpy arrays) for ``x`` ``(B, *S, C)``, any ``S >= min_size``.

    A ``with_sizes`` export is called as ``m(x, sizes)`` on a zero-padded batch, ``sizes``
    (B, D) int with ``min_size <= sizes[i] <= S``, and also returns ``"out_sizes"`` (B, D);
    ``sizes`` left out means every row fills ``S``.

    Attributes: ``meta`` (the JSON header), ``exported`` (the :class:`jax.export.Exported`),
    ``num_classes``, ``in_channels``, ``spatial_dims``, ``min_size`` (tuple), ``class_names``
    (list of K strings or None), ``with_sizes`` (bool).
    """

    def __init__(self, meta: dict, exported: jax.export.Exported):
        self.meta, self.exported = meta, exported
        self.num_classes = int(meta["num_classes"])
        self.in_channels = int(meta["in_channels"])
        self.spatial_dims = int(meta["spatial_dims"])
        self.min_size = tuple(int(m) for m in meta["min_size"])
        self.class_names = meta.get("class_names")
        self.with_sizes = "sizes" in meta.get("inputs", ["x"])  # older files: x only
        self._call = jax.jit(exported.call)  # one compile per input shape

    @classmethod
    def from_model(
        cls, model, class_names: Sequence[str] | None = None, with_sizes: bool = False
    ) -> ExportedModel:
        """The same callable for an in-process model, without writing a file."""
        platforms = (jax.export.default_export_platform(),)
        meta = model_metadata(model, class_names, platforms, with_sizes)
        return cls(meta, export_function(model, platforms, with_sizes))

    def check_input(self, x) -> np.ndarray:
        """``x`` as float32 numpy; ``ValueError`` for a wrong rank, channel count or size."""
        x = np.asarray(x, np.float32)
        check_input_shape(x.shape, self.spatial_dims, self.in_channels, self.min_size)
        return x

    def __call__(self, x, sizes=None) -> dict[str, np.ndarray]:
        """``x`` (B, *S, C) [, ``sizes`` (B, D) int] -> ``{"logits": (B, K), "class_map":
        (B, *S', K)[, "out_sizes": (B, D)]}``; ``ValueError`` (one line) for bad inputs or
        ``sizes`` given to an export without them."""
        x = self.check_input(x)
        if not self.with_sizes:
            if sizes is not None:
                raise ValueError(
                    "this export takes no sizes; export with --with_sizes for padded batches"
                )
            out = self._call(x)
        else:
            if sizes is None:  # every row fills the whole array
                sizes = np.tile(np.asarray(x.shape[1:-1], np.int32), (x.shape[0], 1))
            out = self._call(x, check_sizes(sizes, x.shape, self.min_size))
        return {k: np.asarray(v) for k, v in out.items()}


def load_exported(path: str) -> ExportedModel:
    """Load an :func:`export_model` file as an :class:`ExportedModel` (needs only jax, numpy)."""
    meta, blob = read_artifact(path)
    try:
        exported = jax.export.deserialize(blob)
    except Exception as e:  # any failure here means a bad file
        raise ValueError(f"{path!r}: cannot deserialize the exported function: {e}") from None
    return ExportedModel(meta, exported)
