"""The variable-owning modules of a network in creation order: the order in which the PyTorch port lists
its layers (`all_modules`) and diffusers nests its blocks, so that checkpoints map module by module."""

import flax.linen as nn
import jax
import jax.numpy as jnp

from score_jax import base_config
from score_jax.networks import get_network
from score_jax.models.utils import get_data_shape


def _top_level_creation_order(model, config):
  """Names of the model's direct sub-modules in the order they are first called (traced, no FLOPs)."""
  order = []

  def record(next_fun, args, kwargs, context):
    module = context.module
    if isinstance(module.parent, nn.Module) and not isinstance(module.parent.parent, nn.Module):
      if module.name not in order:
        order.append(module.name)
    return next_fun(*args, **kwargs)

  x = jnp.zeros((1,) + get_data_shape(config), jnp.float32)
  labels = jnp.ones((1,), jnp.float32)
  rngs = {"params": jax.random.PRNGKey(0), "dropout": jax.random.PRNGKey(1)}

  def init():
    with nn.intercept_methods(record):
      return model.init(rngs, x, labels, train=False)

  shapes = jax.eval_shape(init)
  return order, shapes


def network_layout(config):
  """(Flax names of the top-level modules that own variables, in creation order; variable shapes) of the
  network of `config` (the PyTorch port's `all_modules[i]` is entry i); keys the config lacks (e.g. the
  reference's own config) take the base configuration's defaults."""
  config = base_config.complete(config)
  order, shapes = _top_level_creation_order(get_network(config), config)
  return [name for name in order if any(name in shapes[c] for c in shapes)], shapes
