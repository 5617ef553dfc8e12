"""fcn_jax: fully convolutional classifiers for inputs of any size, in JAX and Flax NNX."""

from fcn_jax.models import FCN, PRESETS, ModelSpec, build_model, create_model

__all__ = ["FCN", "ModelSpec", "PRESETS", "build_model", "create_model"]
