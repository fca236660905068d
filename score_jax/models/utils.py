"""From networks to score functions (the only place SDE time becomes a network input)."""

import jax
import jax.numpy as jnp
import numpy as np

from score_jax.models.registry import get_model


def get_sigmas(config):
  """The reference's descending noise table exp(linspace(log sigma_max, log sigma_min, num_scales))."""
  return np.exp(np.linspace(np.log(config.model.sigma_max), np.log(config.model.sigma_min),
                            config.model.num_scales))


def get_data_shape(config):
  """Shape of one example: `(dim,)` for flat data, `(H, W, C)` for images."""
  if config.data.get("dim", None):
    return (config.data.dim,)
  return (config.data.image_size, config.data.image_size, config.data.num_channels)


def init_model(rng, config, batch_size=1):
  """Initialises the network of `config`; returns its variables (`params`, maybe `constants`)."""
  model = get_model(config)
  params_rng, dropout_rng = jax.random.split(rng)
  x = jnp.zeros((batch_size,) + get_data_shape(config), jnp.float32)
  labels = jnp.ones((batch_size,), jnp.float32)
  variables = model.init({"params": params_rng, "dropout": dropout_rng}, x, labels, train=False)
  return dict(variables)


def get_model_fn(model, variables, *, train=False, rng=None):
  """Returns `model_fn(x, labels) -> output`; `rng` drives dropout when `train`."""
  def model_fn(x, labels):
    rngs = {"dropout": rng} if train and rng is not None else {}
    return model.apply(variables, x, labels, train=train, rngs=rngs)
  return model_fn


def get_score_fn(sde, model, variables, *, train=False, continuous=True, rng=None):
  """Returns `score_fn(x, t) -> score shaped like x` (Table of INVENTORY.md §3).

  The SDE decides what the network sees (`sde.network_labels`) and how its output
  becomes a score (`sde.output_to_score`).
  """
  model_fn = get_model_fn(model, variables, train=train, rng=rng)

  def score_fn(x, t):
    output = model_fn(x, sde.network_labels(t, continuous))
    return sde.output_to_score(output, t, continuous)

  return score_fn
