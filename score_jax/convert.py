"""PyTorch-port state dicts -> score_jax variables (INVENTORY.md §7.8).

The PyTorch `ncsnpp` / `ddpm` networks keep their layers in a flat `all_modules`
list whose order is the creation order of the Flax modules, and whose sub-module
names inside each block equal Flax's automatic names. So entry `i` of `all_modules`
is the `i`-th top-level Flax sub-module that owns variables.
"""

import jax
import jax.numpy as jnp
import flax.linen as nn
import numpy as np

from score_jax.models.registry import get_model
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


def _convert_leaf(torch_name, value, parent):
  """A PyTorch leaf name and array -> (Flax leaf name, array in Flax layout)."""
  if torch_name == "weight" and value.ndim == 4:  # conv OIHW -> HWIO; FIR Conv2d keeps the name `weight`
    return ("weight" if parent.startswith("Conv2d") else "kernel"), value.transpose(2, 3, 1, 0)
  if torch_name == "weight" and value.ndim == 2:  # Linear (out, in) -> Dense kernel (in, out)
    return "kernel", value.T
  if torch_name == "weight" and value.ndim == 1:  # GroupNorm
    return "scale", value
  return torch_name, value  # bias, NIN W/b, Fourier W


def torch_state_dict_to_variables(state_dict, config):
  """Converts a PyTorch `ncsnpp`/`ddpm` state dict into variables for `get_model(config)`.

  Args:
    state_dict: maps PyTorch names (`all_modules.4.Conv_0.weight`, optionally with a
      `module.` prefix) to arrays; buffers such as `sigmas` are ignored.
    config: the experiment config the checkpoint was trained with.

  Returns:
    `{"params": ..., "constants": ...}` (constants only for Fourier embeddings), shaped
    exactly like `init_model(rng, config)`.
  """
  model = get_model(config)
  order, shapes = _top_level_creation_order(model, config)
  owners = [name for name in order if any(name in shapes[c] for c in shapes)]
  entries = {}
  for key, value in state_dict.items():
    key = key[len("module."):] if key.startswith("module.") else key
    if not key.startswith("all_modules."):
      continue
    _, index, rest = key.split(".", 2)
    entries.setdefault(int(index), []).append((rest.split("."), np.asarray(value)))
  if sorted(entries) != list(range(len(owners))):
    raise ValueError(f"state dict has {len(entries)} modules, the {config.model.name} network of this config "
                     f"has {len(owners)}: wrong config?")
  variables = {}
  for index, flax_name in enumerate(owners):
    for path, value in entries[index]:
      parent = path[-2] if len(path) > 1 else flax_name
      leaf, value = _convert_leaf(path[-1], value, parent)
      collection = "constants" if flax_name.startswith("GaussianFourierProjection") else "params"
      node = variables.setdefault(collection, {}).setdefault(flax_name, {})
      for part in path[:-1]:
        node = node.setdefault(part, {})
      node[leaf] = jnp.asarray(value, jnp.float32)
  _check_shapes(variables, shapes)
  return variables


def _check_shapes(variables, shapes):
  got = jax.tree_util.tree_map(lambda a: a.shape, variables)
  want = jax.tree_util.tree_map(lambda a: a.shape, dict(shapes))
  if got != want:
    flat_got = dict(jax.tree_util.tree_leaves_with_path(got, is_leaf=lambda v: isinstance(v, tuple)))
    flat_want = dict(jax.tree_util.tree_leaves_with_path(want, is_leaf=lambda v: isinstance(v, tuple)))
    diffs = [f"{jax.tree_util.keystr(k)}: {flat_got.get(k)} vs {flat_want.get(k)}"
             for k in set(flat_got) | set(flat_want) if flat_got.get(k) != flat_want.get(k)]
    raise ValueError("converted variables do not match the model: " + "; ".join(sorted(diffs)[:10]))
