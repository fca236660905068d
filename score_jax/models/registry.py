"""Model registry: `config.model.name` -> a builder `config -> network`, wrapped with its parameterization."""

import jax.numpy as jnp

from score_jax import base_config, parameterization
from score_jax.models.score_model import ScoreModel
from score_jax.utils import choice_error

_MODELS = {}


def register_model(name):
  """Decorator registering `builder(config) -> nn.Module` (a plain network) under `name`."""
  def register(builder):
    if name in _MODELS:
      raise ValueError(f"model {name!r} is already registered")
    _MODELS[name] = builder
    return builder
  return register


def compute_dtype(config):
  """The networks' compute dtype from `model.dtype` (None for float32, the flax default)."""
  name = config.model.get("dtype", "float32")
  return None if name == "float32" else jnp.dtype(name)


def model_names():
  return sorted(_MODELS)


def get_network(config):
  """The plain network named by `config.model.name`."""
  name = config.model.name
  if name not in _MODELS:
    raise choice_error("model.name", name, _MODELS)
  return _MODELS[name](config)


def get_model(config):
  """The network of `config.model` with its parameterization (`model.parameterization`); keys the config
  lacks (e.g. the reference's own config) take the base configuration's defaults."""
  config = base_config.complete(config)
  network = get_network(config)
  return ScoreModel(network=network, parameterization=parameterization.get_parameterization(config, network))
