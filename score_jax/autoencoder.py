"""A frozen autoencoder for latent diffusion (Rombach et al. 2022): `load_autoencoder(path) -> Autoencoder`.

`path` is a diffusers `AutoencoderKL` folder, as downloaded from the Hugging Face Hub (stabilityai/sd-vae-ft-mse):
`config.json` and `diffusion_pytorch_model.safetensors` (or `.bin`, read by `score_jax.torch_pickle`, which
runs no code from the file), at its top or in the `vae/` folder of a pipeline. The torch names map onto the
Flax network of `networks.autoencoder_kl` by name (its modules carry diffusers' names): conv kernels OIHW ->
HWIO, linear weights transposed. The attention's old names (`query`, `key`, `value`, `proj_attn`, of old
checkpoints such as CompVis/stable-diffusion-v1-4's VAE) are read as `to_q`, `to_k`, `to_v`, `to_out.0`, as
diffusers' own loader renames them (diffusers' Flax loader drops them: diffusers issue 4840). A missing,
unexpected or wrongly shaped tensor is refused with its name.

`path` may also be the workdir of a score_jax run of `training.objective = "autoencoder"`
(`objectives.autoencoder`): its config.json's `autoencoder_kl` network with a checkpoint's EMA parameters
(`trained_model.load_model`), and the scaling factor its training recorded for that checkpoint (`LATENT_SCALE_FILE`).
"""

import dataclasses
import functools
import json
import os
import re
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from score_jax import checkpoint, diffusers_format, trained_model
from score_jax.networks import autoencoder_kl

SUBFOLDER = "vae"  # a diffusers pipeline's autoencoder
LATENT_SCALE_FILE = "latent_scale.json"  # a trained autoencoder's workdir: {step: its scaling_factor}
LEGACY_ATTENTION = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}


@dataclasses.dataclass(frozen=True, eq=False)
class Autoencoder:
  """A loaded autoencoder: its network, variables and latent statistics; `encode` and `decode` jitted.

  Latent diffusion runs on `(mean - shift_factor) * scaling_factor` (and decodes `z / scaling_factor +
  shift_factor`); `encode` and `decode` themselves take and give unscaled latents.
  """

  module: autoencoder_kl.AutoencoderKL
  variables: Any
  scaling_factor: float
  shift_factor: float = 0.0

  @property
  def latent_channels(self):
    return self.module.latent_channels

  @property
  def downsample_factor(self):
    return self.module.downsample_factor

  def encode(self, x):
    """NHWC images in [-1, 1] -> `(mean, logvar)`, each `(B, H / f, W / f, latent_channels)`: the posterior's
    moments as diffusers' `latent_dist` gives them (logvar clamped to [-30, 20]), unscaled."""
    return _apply(self.module, "encode", self.variables, x)

  def decode(self, z):
    """NHWC unscaled latents `(B, h, w, latent_channels)` -> NHWC images `(B, h f, w f, C)` in about [-1, 1]."""
    return _apply(self.module, "decode", self.variables, z)


@functools.partial(jax.jit, static_argnums=(0, 1))
def _apply(module, method, variables, x):
  """One compiled program per network (equal configs share it), method and input shape."""
  return module.apply(variables, x, method=method)


def load_autoencoder(path, *, dtype=None):
  """The autoencoder stored at `path`: a diffusers `AutoencoderKL` folder or pipeline folder, or the workdir of a
  score_jax run of `training.objective = "autoencoder"` (its newest snapshot's EMA parameters, with the
  `scaling_factor` recorded at that snapshot: 1 / std of its training latents; shift 0).

  Args:
    path: the folder.
    dtype: the network's compute dtype (None or "float32": float32); parameters and outputs stay float32.

  Returns:
    An `Autoencoder`.
  """
  dtype = None if dtype in (None, "float32") else jnp.dtype(dtype)
  config_path = diffusers_format.find_file(path, ["config.json"], SUBFOLDER) if os.path.isdir(path) else None
  weights_path = diffusers_format.find_file(path, diffusers_format.WEIGHTS, SUBFOLDER) if config_path else None
  if weights_path:
    return _load_diffusers(config_path, weights_path, dtype)
  if os.path.isfile(os.path.join(path, checkpoint.CONFIG_FILE)):
    return _load_workdir(path, dtype)
  raise ValueError(f"{path!r} is not a diffusers AutoencoderKL folder (config.json with "
                   f"{' or '.join(diffusers_format.WEIGHTS)}, at its top or in {SUBFOLDER}/) nor a score_jax "
                   "autoencoder workdir (training.objective='autoencoder')")


def record_latent_scale(workdir, step, scaling_factor):
  """Records `scaling_factor` (1 / the std of the training latents) of checkpoint `step` in `<workdir>/`
  `LATENT_SCALE_FILE`, which `load_autoencoder(workdir)` reads (the training driver writes it at each snapshot)."""
  scales = latent_scales(workdir)
  scales[int(step)] = float(scaling_factor)
  path = os.path.join(workdir, LATENT_SCALE_FILE)
  with open(path + ".tmp", "w") as f:
    json.dump({str(k): v for k, v in sorted(scales.items())}, f, indent=1)
  os.replace(path + ".tmp", path)


def latent_scales(workdir):
  """`{step: scaling_factor}` recorded in a trained autoencoder's workdir (empty when none is)."""
  path = os.path.join(workdir, LATENT_SCALE_FILE)
  if not os.path.exists(path):
    return {}
  with open(path) as f:
    return {int(step): float(value) for step, value in json.load(f).items()}


def _load_workdir(workdir, dtype):
  """The autoencoder a score_jax run trained (`training.objective = "autoencoder"`): the network of its config.json
  with the EMA parameters of the newest checkpoint whose latent scale was recorded, shift 0."""
  objective = trained_model.run_config(workdir).training.objective
  if objective != "autoencoder":
    raise ValueError(f"{workdir!r} is not a diffusers AutoencoderKL folder (no weights) nor a score_jax autoencoder "
                     f"workdir: its config.json has training.objective={objective!r}, not 'autoencoder'")
  scales = latent_scales(workdir)
  if not scales:
    raise ValueError(f"{workdir!r} has no {LATENT_SCALE_FILE} (written at each snapshot of its training): "
                     "train it with `python main.py --mode=train` until a snapshot")
  model, variables, step = trained_model.load_model(workdir, step=max(scales))
  module = model.network if dtype is None else model.network.clone(dtype=dtype)
  return Autoencoder(module, jax.device_get(variables), scaling_factor=scales[step], shift_factor=0.0)


def _load_diffusers(config_path, weights_path, dtype):
  with open(config_path) as f:
    config = json.load(f)
  module = autoencoder_kl.from_diffusers_config(config, dtype)
  params = state_dict_to_params(diffusers_format.read_state_dict(weights_path), module)
  config = {**autoencoder_kl.DIFFUSERS_DEFAULTS, **config}
  return Autoencoder(module, {"params": params}, scaling_factor=float(config["scaling_factor"]),
                     shift_factor=float(config["shift_factor"] or 0.0))  # null: no shift


def torch_name(flax_path):
  """("encoder", "down_blocks_0", "resnets_1", "conv2", "kernel") -> "encoder.down_blocks.0.resnets.1.conv2.weight"."""
  *modules, leaf = flax_path
  return ".".join([re.sub(r"_(\d+)$", r".\1", name) for name in modules] + ["bias" if leaf == "bias" else "weight"])


def today_name(key):
  """An attention tensor's old diffusers name -> today's ("...attentions.0.query.weight" -> "...to_q.weight")."""
  if ".attentions." not in key:
    return key
  *prefix, module, leaf = key.split(".")
  return ".".join([*prefix, LEGACY_ATTENTION.get(module, module), leaf])


def _to_flax(value, leaf):
  value = np.asarray(value, np.float32)
  if leaf == "kernel":
    return value.transpose(2, 3, 1, 0) if value.ndim == 4 else value.T  # conv OIHW -> HWIO; Linear's (out, in)
  return value


def state_dict_to_params(state_dict, module):
  """A diffusers `AutoencoderKL` state dict (either attention naming) -> the `params` of `module`."""
  x = jnp.zeros((1, module.downsample_factor, module.downsample_factor, module.in_channels))
  shapes = traverse_util.flatten_dict(jax.eval_shape(module.init, jax.random.key(0), x)["params"])
  wanted = {torch_name(path): path for path in shapes}
  names = {}  # today's name -> the file's
  for key in state_dict:
    name = today_name(key)
    if name in names:
      raise ValueError("the state dict holds both {} and {}".format(*sorted((names[name], key))))
    names[name] = key
  missing, unexpected = sorted(set(wanted) - set(names)), sorted(names[k] for k in set(names) - set(wanted))
  if missing or unexpected:
    first = f"missing {missing[0]}" if missing else f"unexpected {unexpected[0]}"
    raise ValueError(f"the state dict does not fit this AutoencoderKL config: {first} ({len(missing)} missing, "
                     f"{len(unexpected)} unexpected)")
  flat = {}
  for name, path in wanted.items():
    value = _to_flax(state_dict[names[name]], path[-1])
    want = shapes[path].shape
    if value.shape != want:
      raise ValueError(f"{names[name]}: shape {np.shape(state_dict[names[name]])} does not fit {'/'.join(path)} "
                       f"{want}")
    flat[path] = jnp.asarray(value)
  return traverse_util.unflatten_dict(flat)
