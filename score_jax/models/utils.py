"""Model shapes and initialisation."""

import jax
import jax.numpy as jnp

from score_jax import parameterization
from score_jax.models.registry import get_model


def get_sigmas(config):
  """The reference's descending noise table exp(linspace(log sigma_max, log sigma_min, num_scales))."""
  return parameterization.sigma_table(config.model.sigma_min, config.model.sigma_max, config.model.num_scales)


def get_data_shape(config):
  """Shape of one example: `(dim,)` for flat data, `(H, W, C)` for images, `(H / f, W / f, latent_channels)` for
  the latents of `data.autoencoder` (its geometry recorded by `run_setup.prepare_config`)."""
  if config.data.get("dim", None):
    return (config.data.dim,)
  if config.data.get("autoencoder", ""):
    if not config.data.latent_channels:
      raise ValueError(f"data.autoencoder={config.data.autoencoder!r}: the latent shape is not recorded yet: "
                       "prepare the config (run_setup.prepare_config reads it from the autoencoder), or state "
                       "data.latent_channels and data.latent_factor in a config whose autoencoder is elsewhere "
                       "(the SD VAE's: 4 and 8)")
    size = config.data.image_size // config.data.latent_factor
    return (size, size, config.data.latent_channels)
  return (config.data.image_size, config.data.image_size, config.data.num_channels)


def init_model(rng, config, batch_size=1, *, model=None):
  """Initialises the network of `config` (`model`: the one `get_model(config)` built already); returns its
  variables (`params`, maybe `constants`)."""
  model = get_model(config) if model is None else model
  return init_network(rng, model, get_data_shape(config), batch_size)


def init_network(rng, model, shape, batch_size=1):
  """The variables (`params`, maybe `constants`) of `model` initialised for examples of `shape`."""
  params_rng, dropout_rng = jax.random.split(rng)
  x = jnp.zeros((batch_size,) + tuple(shape), jnp.float32)
  labels = jnp.ones((batch_size,), jnp.float32)
  variables = model.init({"params": params_rng, "dropout": dropout_rng}, x, labels, train=False)
  return dict(variables)
