"""Fully convolutional models that are exact under zero padding."""

from fcn_jax.models.fcn import FCN, ModelSpec
from fcn_jax.models.layers import NORMS, POOLS, check_choices
from fcn_jax.models.presets import PRESETS, abstract_model, build_model, create_model

__all__ = [
    "FCN",
    "ModelSpec",
    "NORMS",
    "POOLS",
    "PRESETS",
    "abstract_model",
    "build_model",
    "check_choices",
    "create_model",
]
