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

File format: one line of magic (``fcn_jax-export/1``), one line of JSON metadata (model spec,
``min_size``, ``class_names``, ...), then the bytes of ``Exported.serialize()``. Loading it
without flax or fcn_jax (``jax`` and ``numpy`` only)::

    import json, jax, numpy as np
    magic, header, blob = open("model.fcnx", "rb").read().split(b"\\n", 2)
    meta, exported = json.loads(header), jax.export.deserialize(bytearray(blob))
    out = exported.call(np.zeros((1, 28, 40, meta["in_channels"]), np.float32))
    probs = jax.nn.softmax(out["logits"])  # out["class_map"]: (1, h', w', K)

``load_exported(path)`` does the same and checks inputs first, raising a readable
``ValueError`` for a wrong rank, channel count or a size below ``min_size`` (the exported
function's own shape checks give harder-to-read errors).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

import jax
import numpy as np

from fcn_jax.outputs import write_atomic

MAGIC = b"fcn_jax-export/1"
DEFAULT_PLATFORMS = ("cpu", "cuda", "tpu")


def symbolic_input_spec(spatial_dims: int, in_channels: int, min_size: Sequence[int]):
    """The polymorphic shape string and constraints of the input: ``("b, s0, s1, C",
    ["s0 >= m0", "s1 >= m1"])`` for 2-D."""
    axes = [f"s{i}" for i in range(spatial_dims)]
    spec = ", ".join(["b", *axes, str(in_channels)])
    return spec, [f"{a} >= {int(m)}" for a, m in zip(axes, min_size)]


def export_function(model, platforms: Sequence[str] = DEFAULT_PLATFORMS) -> jax.export.Exported:
    """Trace ``model`` (an :class:`fcn_jax.FCN`) into a :class:`jax.export.Exported` on a
    symbolic ``(b, *S, C)`` float32 input; see the module docstring. ``model`` is not changed
    (a copy is put in eval mode)."""
    from flax import nnx

    from fcn_jax.models.layers import global_pool

    graphdef, state = nnx.split(model)
    spec = model.spec

    def forward(x):
        m = nnx.merge(graphdef, state)
        m.eval()
        cmap, out_sizes = m.features(x)
        return {"logits": global_pool(cmap, out_sizes, spec.pool), "class_map": cmap}

    shape_spec, constraints = symbolic_input_spec(
        spec.spatial_dims, spec.in_channels, model.min_size
    )
    shape = jax.export.symbolic_shape(shape_spec, constraints=constraints)
    arg = jax.ShapeDtypeStruct(shape, np.float32)
    return jax.export.export(jax.jit(forward), platforms=tuple(platforms))(arg)


def model_metadata(model, class_names: Sequence[str] | None = None, platforms=()) -> dict:
    """The JSON header stored with an export: spec, sizes, class names, input/output layout."""
    spec = model.spec
    if class_names is not None and len(class_names) != spec.num_classes:
        raise ValueError(
            f"got {len(class_names)} class names for a model with {spec.num_classes} classes"
        )
    shape_spec, constraints = symbolic_input_spec(
        spec.spatial_dims, spec.in_channels, model.min_size
    )
    return {
        "format": MAGIC.decode(),
        "num_classes": spec.num_classes,
        "in_channels": spec.in_channels,
        "spatial_dims": spec.spatial_dims,
        "min_size": [int(m) for m in model.min_size],
        "class_names": None if class_names is None else [str(c) for c in class_names],
        "input_shape": shape_spec,
        "constraints": constraints,
        "outputs": ["logits", "class_map"],
        "platforms": list(platforms),
        "spec": spec.to_dict(),
        "jax_version": jax.__version__,
    }


def export_model(
    model,
    path: str,
    *,
    class_names: Sequence[str] | None = None,
    platforms: Sequence[str] = DEFAULT_PLATFORMS,
) -> str:
    """Serialize ``model`` to ``path`` (written atomically); returns ``path``.

    One file accepts every input ``(B, *S, C)`` with ``S >= model.min_size``; it returns
    ``{"logits": (B, K), "class_map": (B, *S', K)}``. ``class_names`` (K strings) are stored in
    the header when given.
    """
    meta = model_metadata(model, class_names, platforms)
    blob = export_function(model, platforms).serialize()
    header = json.dumps(meta, separators=(",", ":")).encode()
    write_atomic(path, MAGIC + b"\n" + header + b"\n" + bytes(blob))
    return path


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

    Attributes: ``meta`` (the JSON header), ``exported`` (the :class:`jax.export.Exported`),
    ``num_classes``, ``in_channels``, ``spatial_dims``, ``min_size`` (tuple), ``class_names``
    (list of K strings or None).
    """

    def __init__(self, meta: dict, exported: jax.export.Exported):
        self.meta, self.exported = meta, exported
        self.num_classes = int(meta["num_classes"])
        self.in_channels = int(meta["in_channels"])
        self.spatial_dims = int(meta["spatial_dims"])
        self.min_size = tuple(int(m) for m in meta["min_size"])
        self.class_names = meta.get("class_names")
        self._call = jax.jit(exported.call)  # one compile per input shape

    @classmethod
    def from_model(cls, model, class_names: Sequence[str] | None = None) -> ExportedModel:
        """The same callable for an in-process model, without writing a file."""
        platforms = (jax.export.default_export_platform(),)
        return cls(model_metadata(model, class_names, platforms), export_function(model, platforms))

    def check_input(self, x) -> np.ndarray:
        """``x`` as float32 numpy; ``ValueError`` for a wrong rank, channel count or size."""
        x = np.asarray(x, np.float32)
        d, c = self.spatial_dims, self.in_channels
        layout = "(B, L, C)" if d == 1 else "(B, H, W, C)" if d == 2 else f"(B, {d} axes, C)"
        if x.ndim != d + 2:
            raise ValueError(f"input must have rank {d + 2} {layout}, got shape {x.shape}")
        if x.shape[-1] != c:
            raise ValueError(f"input must have {c} channels, got shape {x.shape}")
        if x.shape[0] < 1:
            raise ValueError(f"input batch is empty: shape {x.shape}")
        if any(s < m for s, m in zip(x.shape[1:-1], self.min_size)):
            raise ValueError(
                f"input spatial size {x.shape[1:-1]} is below the model's minimum {self.min_size}"
            )
        return x

    def __call__(self, x) -> dict[str, np.ndarray]:
        out = self._call(self.check_input(x))
        return {k: np.asarray(v) for k, v in out.items()}


def restore_run(workdir: str):
    """The trained model of a run directory, via ``fcn_jax.checkpoint.restore_model`` (eval
    mode). ``ValueError`` with a one-line message when the directory is missing, is not a run,
    or holds no checkpoint."""
    if not os.path.isdir(workdir):
        raise ValueError(f"run directory {workdir!r} does not exist")
    if not os.path.isfile(os.path.join(workdir, "config.json")):
        raise ValueError(f"{workdir!r} is not a training run directory (no config.json)")
    try:
        from fcn_jax.checkpoint import restore_model
    except ImportError as e:
        raise ValueError(f"cannot restore runs: fcn_jax.checkpoint.restore_model: {e}") from None
    try:
        model = restore_model(workdir)
    except (OSError, ValueError, KeyError, RuntimeError) as e:  # RuntimeError: CheckpointError
        raise ValueError(f"cannot restore a model from {workdir!r}: {e}") from None
    model.eval()
    return model


def run_class_names(workdir: str) -> list[str] | None:
    """Class names recorded in a run's ``config.json`` (``class_names`` at the top or under
    ``dataset``), if any; None otherwise (predictions then name classes by index)."""
    try:
        with open(os.path.join(workdir, "config.json")) as f:
            config = json.load(f)
        names = config.get("class_names") or config.get("dataset", {}).get("class_names")
    except (OSError, ValueError, AttributeError):
        return None
    return [str(n) for n in names] if isinstance(names, list) else None


def load_predictor(model: str) -> ExportedModel:
    """An :class:`ExportedModel` from an export file, or from a run directory (restored and
    exported in memory, class names from its ``config.json`` when recorded)."""
    if os.path.isdir(model):
        return ExportedModel.from_model(restore_run(model), run_class_names(model))
    if not os.path.exists(model):
        raise ValueError(f"--model {model!r}: no such export file or run directory")
    return load_exported(model)


def load_exported(path: str) -> ExportedModel:
    """Load an :func:`export_model` file as an :class:`ExportedModel` (needs only jax, numpy)."""
    meta, blob = read_artifact(path)
    try:
        exported = jax.export.deserialize(blob)
    except Exception as e:  # any failure here means a bad file
        raise ValueError(f"{path!r}: cannot deserialize the exported function: {e}") from None
    return ExportedModel(meta, exported)
