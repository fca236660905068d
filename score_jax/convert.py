"""Released checkpoints -> score_jax variables, and score_jax checkpoints -> other formats.

Imports (each also a command line that writes an orbax snapshot `main.py --mode=eval` reads):

  * the PyTorch port's `.pth` (its attribute names to Flax's: tests/fixtures/REFCHECK.md, "Layout"; this module):
      python -m score_jax.convert --config=configs/vp/cifar10_ddpmpp_continuous.py \
          --checkpoint=checkpoint_8.pth --workdir=runs/vp_ddpmpp [--ckpt=8]
  * the JAX original's `checkpoint_<n>` (flax msgpack of its `State`; `load_score_sde_jax_checkpoint`):
      python -m score_jax.convert --config=configs/ve/cifar10_ncsnpp_continuous.py \
          --checkpoint=checkpoint_26 --workdir=runs/ve_ncsnpp
  * a diffusers folder (`google/ncsnpp-*`, `google/ddpm-*`; `load_diffusers_checkpoint`, no --config: it is
    derived from the folder's config.json and scheduler_config.json, and written to <workdir>/config.py):
      python -m score_jax.convert --checkpoint=ddpm-cifar10-32/ --workdir=runs/ddpm_hub

Exports of a training workdir's newest checkpoint:

      python -m score_jax.convert --workdir=runs/x --export=safetensors --out=x.safetensors
      python -m score_jax.convert --workdir=runs/x --export=diffusers --out=x_diffusers/

The PyTorch `ncsnpp` / `ddpm` networks keep their layers in a flat `all_modules`
list whose order is the creation order of the Flax modules, and whose sub-module
names inside each block equal Flax's automatic names. So entry `i` of `all_modules`
is the `i`-th top-level Flax sub-module that owns variables.
"""

import os
import re

import jax
import jax.numpy as jnp
import numpy as np
from flax import serialization

from score_jax import diffusers_format, optim, safetensors_io, torch_pickle
from score_jax.models.layout import network_layout  # noqa: F401 -- re-exported: the PyTorch port's module order


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
  owners, shapes = network_layout(config)
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
  owners, shapes = network_layout(config)

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


# --- The JAX original's checkpoints ------------------------------------------------------------------------

def load_score_sde_jax_checkpoint(path, config, *, ema=True):
  """Loads a `yang-song/score_sde` checkpoint (`checkpoint_<n>`: flax msgpack of its `State`) into variables
  for `get_model(config)`: `params_ema` (or, with `ema=False`, the optimizer's `target`).

  The original's networks and score_jax's create their modules in the same order, so Flax's automatic
  names agree; the Fourier features' `W`, a (stop-gradient) parameter there, is a constant here. msgpack
  holds data only: nothing in the file is executed.

  Raises:
    ValueError: not such a checkpoint, or names or shapes that do not fit the network of `config`.
  """
  try:
    with open(path, "rb") as f:
      state = serialization.msgpack_restore(f.read())
  except (OSError, ValueError, TypeError) as error:
    raise ValueError(f"cannot read {path} as a flax msgpack checkpoint: {error}") from None
  except Exception as error:  # noqa: BLE001 -- msgpack's own exceptions for malformed data
    raise ValueError(f"{path} is not a flax msgpack checkpoint: {type(error).__name__}: {error}") from None
  if not isinstance(state, dict) or "params_ema" not in state or "optimizer" not in state:
    keys = sorted(state) if isinstance(state, dict) else type(state).__name__
    raise ValueError(f"{path} is not a score_sde State (expected params_ema and optimizer; found {keys})")
  params = state["params_ema"] if ema else state["optimizer"].get("target")
  if not isinstance(params, dict):
    raise ValueError(f"{path} has no {'params_ema' if ema else 'optimizer.target'} parameters")
  _, shapes = network_layout(config)
  variables = {"params": {}}
  for name, module in params.items():
    collection = "constants" if name.startswith("GaussianFourierProjection") else "params"
    variables.setdefault(collection, {})[name] = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float32),
                                                                        module)
  _check_names(variables, shapes)
  _check_shapes(variables, shapes)
  return variables


def _check_names(variables, shapes):
  got = {jax.tree_util.keystr(k) for k, _ in jax.tree_util.tree_leaves_with_path(variables)}
  want = {jax.tree_util.keystr(k) for k, _ in jax.tree_util.tree_leaves_with_path(dict(shapes))}
  if got != want:
    raise ValueError(f"the checkpoint does not fit the network of this config: missing {sorted(want - got)[:20]}, "
                     f"unmapped {sorted(got - want)[:20]}")


# --- diffusers folders and safetensors: score_jax.diffusers_format, score_jax.safetensors_io -------------------

load_diffusers_checkpoint = diffusers_format.load_diffusers_checkpoint
save_diffusers_checkpoint = diffusers_format.save_diffusers_checkpoint
export_safetensors = safetensors_io.export_checkpoint
import_safetensors = safetensors_io.import_checkpoint


# --- Writing an orbax snapshot ------------------------------------------------------------------------------

def read_released_checkpoint(path, config=None):
  """`(config, raw variables, EMA variables, step, ckpt from the file name or None)` of a released checkpoint:
  a diffusers folder, a `.pth` of the PyTorch port, or the JAX original's `checkpoint_<n>`."""
  if os.path.isdir(path):
    config_from_folder, variables = load_diffusers_checkpoint(path)
    return config_from_folder, variables, variables, 0, None
  if config is None:
    raise ValueError(f"{path} needs --config: the config the checkpoint was trained with")
  match = re.fullmatch(r"checkpoint_(\d+)(\.pth)?", os.path.basename(str(path)))
  ckpt = int(match.group(1)) if match else None
  if str(path).endswith((".pth", ".pt", ".bin")):
    checkpoint = read_torch_checkpoint(path)
    has_ema = isinstance(checkpoint, dict) and "ema" in checkpoint
    variables = torch_state_dict_to_variables(checkpoint_state_dict(checkpoint, config, ema=False), config)
    ema_variables = variables
    if has_ema:
      ema_variables = torch_state_dict_to_variables(checkpoint_state_dict(checkpoint, config, ema=True), config)
    step = int(checkpoint.get("step", 0)) if isinstance(checkpoint, dict) and "model" in checkpoint else 0
    return config, variables, ema_variables, step, ckpt
  variables = load_score_sde_jax_checkpoint(path, config, ema=False)
  ema_variables = load_score_sde_jax_checkpoint(path, config, ema=True)
  with open(path, "rb") as f:
    step = int(np.asarray(serialization.msgpack_restore(f.read()).get("step", 0)))
  return config, variables, ema_variables, step, ckpt


def write_train_state_checkpoint(config, path, workdir, ckpt=None):
  """Converts a released checkpoint into the orbax snapshot `<workdir>/checkpoints/<ckpt * snapshot_freq>`.

  `path` is a `.pth` of the PyTorch port, the JAX original's `checkpoint_<n>` or a diffusers folder (then
  `config` may be None: it is derived from the folder and saved as `<workdir>/config.py`). `params` are
  the raw weights and `ema_params` the EMA weights (both the raw ones if there is no EMA); the optimizer
  state is fresh and `step` is the checkpoint's. `ckpt` defaults to `<k>` of a `checkpoint_<k>[.pth]` file
  name, else the step over `snapshot_freq`, else 1, so that `main.py --mode=eval` with
  `eval.begin_ckpt = eval.end_ckpt = ckpt` reads it.

  Returns:
    `(config, ckpt, orbax_step)`.
  """
  from score_jax import checkpoint as checkpoint_lib, train_state  # noqa: I001 -- heavy, CLI only

  config, variables, ema_variables, step, named_ckpt = read_released_checkpoint(path, config)
  variables = dict(variables)
  params = variables.pop("params")
  if ckpt is None:
    ckpt = named_ckpt if named_ckpt is not None else max(step // config.training.snapshot_freq, 1)
  state = train_state.TrainState(step=jnp.asarray(step, jnp.int32), params=params,
                                 ema_params=ema_variables["params"],
                                 opt_state=optim.get_optimizer(config).init(params), model_state=variables)
  orbax_step = ckpt * config.training.snapshot_freq
  manager = checkpoint_lib.get_manager(os.path.join(workdir, checkpoint_lib.SNAPSHOT_DIR))
  if orbax_step in manager.all_steps():
    raise ValueError(f"{manager.directory}/{orbax_step} exists already; choose another --workdir or --ckpt")
  checkpoint_lib.save(manager, orbax_step, state)
  checkpoint_lib.save_run_config(config, workdir)  # what `trained_model.load_model` builds the model from
  if os.path.isdir(path):  # the derived config, for main.py --config= and for people
    with open(os.path.join(workdir, "config.py"), "w") as f:
      f.write(diffusers_format.config_file(config, os.path.abspath(path)))
  return config, ckpt, orbax_step


def export_checkpoint(workdir, export, out):
  """Writes the newest checkpoint of `workdir` as `export` ("safetensors": every parameter, the EMA and the
  config; "diffusers": the EMA parameters as a diffusers folder) to `out`."""
  if export == "safetensors":
    return export_safetensors(workdir, out)
  if export == "diffusers":
    from score_jax import trained_model  # noqa: I001 -- heavy, CLI only
    _, variables, _ = trained_model.load_model(workdir, ema=True)
    return save_diffusers_checkpoint(out, trained_model.run_config(workdir), variables)
  raise ValueError(f"export={export!r} is not valid; choose one of: diffusers, safetensors")


def _main():
  import sys

  from absl import app, flags
  from ml_collections import config_flags

  flags_ = flags.FLAGS
  config_flags.DEFINE_config_file("config", None, "The config the checkpoint was trained with (not needed for a "
                                  "diffusers folder).", lock_config=True)
  flags.DEFINE_string("checkpoint", None, "Import: a .pth, the JAX original's checkpoint_<n>, or a diffusers folder.")
  flags.DEFINE_string("workdir", None, "Import: write <workdir>/checkpoints/<ckpt * snapshot_freq>; export: read "
                      "its newest checkpoint.")
  flags.DEFINE_integer("ckpt", None, "Snapshot number to store it as (default: k of checkpoint_<k>[.pth], else "
                       "step // snapshot_freq, else 1).")
  flags.DEFINE_enum("export", None, ["safetensors", "diffusers"], "Export the workdir's checkpoint instead.")
  flags.DEFINE_string("out", None, "--export: the file (safetensors) or folder (diffusers) to write.")
  flags.mark_flags_as_required(["workdir"])

  def main(argv):
    del argv
    try:
      if flags_.export:
        if not flags_.out:
          raise ValueError("--export needs --out (the workdir's config.json defines the model)")
        print(export_checkpoint(flags_.workdir, flags_.export, flags_.out))
        return
      if not flags_.checkpoint:
        raise ValueError("--checkpoint is required (or --export)")
      _, ckpt, step = write_train_state_checkpoint(flags_.config, flags_.checkpoint, flags_.workdir, flags_.ckpt)
    except (ValueError, OSError) as error:
      sys.exit(f"score_jax.convert: {error}")
    config_path = next((a.split("=", 1)[1] for a in sys.argv if a.startswith("--config=")), None)
    config_arg = f"--config={config_path or os.path.join(flags_.workdir, 'config.py')}"
    print(f"Wrote {os.path.join(flags_.workdir, 'checkpoints', str(step))} (checkpoint {ckpt}). Evaluate it with\n"
          f"  python main.py {config_arg} --workdir={flags_.workdir} --mode=eval "
          f"--config.eval.begin_ckpt={ckpt} --config.eval.end_ckpt={ckpt}")

  app.run(main)


if __name__ == "__main__":
  _main()
