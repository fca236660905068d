"""PyTorch-port state dicts and `.pth` checkpoints -> score_jax variables (INVENTORY.md §7.8).

  python -m score_jax.convert --config=configs/vp/cifar10_ddpmpp_continuous.py \
      --checkpoint=checkpoint_8.pth --workdir=runs/vp_ddpmpp [--ckpt=8]

The PyTorch `ncsnpp` / `ddpm` networks keep their layers in a flat `all_modules`
list whose order is the creation order of the Flax modules, and whose sub-module
names inside each block equal Flax's automatic names. So entry `i` of `all_modules`
is the `i`-th top-level Flax sub-module that owns variables.
"""

import os
import re

import jax
import jax.numpy as jnp
import flax.linen as nn
import numpy as np

from score_jax import optim, torch_pickle
from score_jax.models.registry import get_network
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


def _pytorch_layout(config):
  """(Flax names of `all_modules[i]`, variable shapes) of the network of `config`."""
  order, shapes = _top_level_creation_order(get_network(config), config)
  return [name for name in order if any(name in shapes[c] for c in shapes)], shapes


def _module_index(key):
  """`[module.]all_modules.<i>.<rest>` -> (i, rest); (None, None) for other entries (buffers)."""
  key = key[len("module."):] if key.startswith("module.") else key
  if not key.startswith("all_modules."):
    return None, None
  _, index, rest = key.split(".", 2)
  return int(index), rest


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
  owners, shapes = _pytorch_layout(config)
  entries = {}
  for key, value in state_dict.items():
    index, rest = _module_index(key)
    if index is not None:
      entries.setdefault(index, []).append((rest.split("."), np.asarray(value)))
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


# --- Released `.pth` checkpoints of the PyTorch port ------------------------------------------------------

def read_torch_checkpoint(path):
  """Reads a `.pth` file into dicts and numpy arrays without torch and without running pickle code."""
  return torch_pickle.load(path)


def checkpoint_state_dict(checkpoint, config, *, ema=True):
  """The model state dict of a loaded `torch.save({'optimizer', 'model', 'ema', 'step'})` checkpoint.

  With `ema`, the EMA weights replace the trainable entries. The PyTorch port's
  `ExponentialMovingAverage.state_dict()` keeps them as a bare list,
  `shadow_params`, in `model.parameters()` order restricted to parameters that
  require grad; that order is the state dict's order without buffers (`sigmas`)
  and frozen parameters (the Fourier features' `W`), and is what `ema.copy_to`
  relies on, so the list is matched to those names by position (and shape).
  """
  if not isinstance(checkpoint, dict):
    raise ValueError(f"expected a checkpoint dict, the file holds a {type(checkpoint).__name__}")
  if "model" not in checkpoint:  # a bare state dict
    if ema:
      raise ValueError("the checkpoint is a bare state dict without an 'ema' entry; load it with ema=False")
    return dict(checkpoint)
  state_dict = dict(checkpoint["model"])
  if not ema:
    return state_dict
  if "ema" not in checkpoint:
    raise ValueError("the checkpoint has no 'ema' entry; load its raw weights with ema=False")
  owners, shapes = _pytorch_layout(config)

  def requires_grad(key):
    index, _ = _module_index(key)
    return index is not None and index < len(owners) and owners[index] in shapes["params"]

  trainable = [key for key in state_dict if requires_grad(key)]
  shadow = list(checkpoint["ema"]["shadow_params"])
  if len(shadow) != len(trainable):
    raise ValueError(f"the EMA holds {len(shadow)} parameters, the {config.model.name} network of this config "
                     f"trains {len(trainable)}: wrong config?")
  for key, value in zip(trainable, shadow):
    if np.shape(value) != np.shape(state_dict[key]):
      raise ValueError(f"EMA parameter for {key} has shape {np.shape(value)}, the model's is "
                       f"{np.shape(state_dict[key])}: the EMA list is out of order")
    state_dict[key] = value
  return state_dict


def load_torch_checkpoint(path, config, *, ema=True):
  """Loads a PyTorch-port `.pth` checkpoint into variables for `get_model(config)`.

  Args:
    path: a checkpoint written by the PyTorch port (`checkpoint_<k>.pth`) or a
      bare `state_dict` file (then `ema=False`).
    config: the experiment config the checkpoint was trained with.
    ema: take the EMA weights (what the reference samples and evaluates with);
      False takes the raw `model` weights.

  Returns:
    `{"params": ..., "constants": ...}` as `torch_state_dict_to_variables`.

  Raises:
    ValueError: the file would run code when unpickled, or does not fit the config.
  """
  return torch_state_dict_to_variables(checkpoint_state_dict(read_torch_checkpoint(path), config, ema=ema), config)


def write_train_state_checkpoint(config, path, workdir, ckpt=None):
  """Converts a `.pth` into the orbax snapshot `<workdir>/checkpoints/<ckpt * snapshot_freq>`.

  `params` are the checkpoint's raw weights and `ema_params` its EMA weights
  (both the raw ones if it has no EMA); the optimizer state is fresh and `step`
  is the checkpoint's. `ckpt` defaults to `<k>` of a `checkpoint_<k>.pth` file
  name, else the checkpoint's step over `snapshot_freq`, else 1, so that
  `main.py --mode=eval` with `eval.begin_ckpt = eval.end_ckpt = ckpt` reads it.

  Returns:
    `(ckpt, orbax_step)`.
  """
  from score_jax import checkpoint as checkpoint_lib, train_state  # noqa: I001 -- heavy, CLI only

  checkpoint = read_torch_checkpoint(path)
  has_ema = isinstance(checkpoint, dict) and "ema" in checkpoint
  variables = torch_state_dict_to_variables(checkpoint_state_dict(checkpoint, config, ema=False), config)
  params = variables.pop("params")
  ema_params = params
  if has_ema:
    ema_params = torch_state_dict_to_variables(checkpoint_state_dict(checkpoint, config, ema=True), config)["params"]
  step = int(checkpoint.get("step", 0)) if "model" in checkpoint else 0
  if ckpt is None:
    match = re.fullmatch(r"checkpoint_(\d+)\.pth", os.path.basename(str(path)))
    ckpt = int(match.group(1)) if match else max(step // config.training.snapshot_freq, 1)
  state = train_state.TrainState(step=jnp.asarray(step, jnp.int32), params=params, ema_params=ema_params,
                                 opt_state=optim.get_optimizer(config).init(params), model_state=variables)
  orbax_step = ckpt * config.training.snapshot_freq
  manager = checkpoint_lib.get_manager(os.path.join(workdir, checkpoint_lib.SNAPSHOT_DIR))
  if orbax_step in manager.all_steps():
    raise ValueError(f"{manager.directory}/{orbax_step} exists already; choose another --workdir or --ckpt")
  checkpoint_lib.save(manager, orbax_step, state)
  return ckpt, orbax_step


def _main():
  import sys

  from absl import app, flags
  from ml_collections import config_flags

  flags_ = flags.FLAGS
  config_flags.DEFINE_config_file("config", None, "The config the checkpoint was trained with.", lock_config=True)
  flags.DEFINE_string("checkpoint", None, "The PyTorch-port .pth checkpoint.")
  flags.DEFINE_string("workdir", None, "Work directory to write <workdir>/checkpoints/<ckpt * snapshot_freq> into.")
  flags.DEFINE_integer("ckpt", None, "Snapshot number to store it as (default: k of checkpoint_<k>.pth, else "
                       "step // snapshot_freq, else 1).")
  flags.mark_flags_as_required(["config", "checkpoint", "workdir"])

  def main(argv):
    del argv
    try:
      ckpt, step = write_train_state_checkpoint(flags_.config, flags_.checkpoint, flags_.workdir, flags_.ckpt)
    except (ValueError, OSError) as error:
      sys.exit(f"score_jax.convert: {error}")
    config_path = next((a.split("=", 1)[1] for a in sys.argv if a.startswith("--config=")), "CONFIG")
    print(f"Wrote {os.path.join(flags_.workdir, 'checkpoints', str(step))} (checkpoint {ckpt}). Evaluate it with\n"
          f"  python main.py --config={config_path} --workdir={flags_.workdir} --mode=eval "
          f"--config.eval.begin_ckpt={ckpt} --config.eval.end_ckpt={ckpt}")

  app.run(main)


if __name__ == "__main__":
  _main()
