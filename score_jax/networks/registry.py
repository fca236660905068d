"""The networks' registry: `config.model.name` -> a builder `config -> plain flax network`.

Plain networks (DDPM, NCSN++, NCSNv2, the MLP) import this module and `layers`, nothing that knows of SDEs
or parameterizations: `registry.get_model` pairs a network with its parameterization one level above.
"""

import jax.numpy as jnp

from score_jax.utils import choice_error

_NETWORKS = {}


def register_model(name):
  """Decorator registering `builder(config) -> nn.Module` (a plain network) under `name`."""
  def register(builder):
    if name in _NETWORKS:
      raise ValueError(f"model {name!r} is already registered")
    _NETWORKS[name] = builder
    return builder
  return register


def compute_dtype(name):
  """The networks' compute dtype from the name `model.dtype` holds (None for float32, the flax default)."""
  return None if name == "float32" else jnp.dtype(name)


def model_names():
  return sorted(_NETWORKS)


def get_network(config):
  """The plain network named by `config.model.name` of a completed config (`base_config.complete`, done by
  `models.get_model` and the other entry points), so that a builder reads each key as it is."""
  name = config.model.name
  if name not in _NETWORKS:
    raise choice_error("model.name", name, _NETWORKS)
  return _NETWORKS[name](config)
