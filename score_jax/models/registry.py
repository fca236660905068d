"""Model registry: `config.model.name` -> a builder `config -> flax.linen.Module`."""

from score_jax.utils import choice_error

_MODELS = {}


def register_model(name):
  """Decorator registering `builder(config) -> nn.Module` under `name`."""
  def register(builder):
    if name in _MODELS:
      raise ValueError(f"model {name!r} is already registered")
    _MODELS[name] = builder
    return builder
  return register


def model_names():
  return sorted(_MODELS)


def get_model(config):
  """Builds the Flax module named by `config.model.name`."""
  name = config.model.name
  if name not in _MODELS:
    raise choice_error("model.name", name, _MODELS)
  return _MODELS[name](config)
