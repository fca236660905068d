"""diffusers-format `UNet2DModel` checkpoints <-> score_jax NCSN++ / DDPM variables and configs; DiTs read.

A diffusers checkpoint is a folder (as downloaded from the Hugging Face Hub): the network's `config.json` and
`diffusion_pytorch_model.safetensors` (or `.bin`), at its top or in `unet/` or `transformer/`, and the scheduler's
`scheduler_config.json` beside it or in `scheduler/` (for a pipeline's `unet/` or `transformer/` given alone, the
pipeline's `scheduler/`). Two families are read and written, a third read:

* NCSN++ (`google/ncsnpp-*`, `ScoreSdeVePipeline`): Skip / AttnSkip blocks, Fourier time embedding.
  The UNet takes data in [0, 1] (`center_input_sample`, score_jax `data.centered = False`) and sigma itself,
  and divides its output by sigma: the score_sde NCSN++ (VE, continuous, output_skip + input_skip pyramids,
  FIR, BigGAN blocks) with the reference parameterization. `ScoreSdeVeScheduler`'s sigma_min, sigma_max,
  num_train_timesteps and snr become the VE SDE and the Langevin corrector's snr.
* DDPM (`google/ddpm-*`, Ho et al.'s network): Down / AttnDown / Up / AttnUp blocks, positional time
  embedding of the integer step n in 0..N-1, eps prediction on data in [-1, 1]: score_jax's `ddpm` model
  (with `model.attn_per_up_resnet = True`: an attention block after every up resnet, diffusers' layout) on
  the discrete VP SDE whose betas are the scheduler's linear ones.
* DiT (`facebook/DiT-*`, `DiTPipeline`: `DiTTransformer2DModel`, or `Transformer2DModel` with `norm_type=
  "ada_norm_zero"` in the Hub's folders): score_jax's `dit` network with diffusers' conventions
  (`score_jax.diffusers_dit`), eps prediction of the integer step on the same discrete VP SDE (the scheduler's
  learned-variance output is read and dropped).

The parameter names are mapped module by module in the network's creation order (`models.layout.network_layout`),
every shape is checked, and names left over on either side are an error that lists them. Safetensors are
read with the `safetensors` package (numpy, no torch); `.bin` files with the safe unpickler of
`score_jax.torch_pickle`, which runs no code from the file.
"""

import json
import math
import os

import jax.numpy as jnp
import numpy as np

from score_jax import base_config, diffusers_dit, safetensors_io, torch_pickle
from score_jax.models.layout import network_layout

WEIGHTS = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")

# Leaf conversions, torch layout <-> Flax layout, by kind.
_TO_FLAX = {
    "conv": ("kernel", lambda w: w.transpose(2, 3, 1, 0)),      # OIHW -> HWIO
    "dense": ("kernel", lambda w: w.T),                          # Linear (out, in) -> (in, out)
    "linear_nin": ("W", lambda w: w.T),                          # Linear as NIN
    "conv_nin": ("W", lambda w: w[:, :, 0, 0].T),                # 1x1 conv as NIN
    "norm": ("scale", lambda w: w),
    "fourier": ("W", lambda w: w),
}
_TO_TORCH = {
    "conv": lambda k: k.transpose(3, 2, 0, 1),
    "dense": lambda k: k.T,
    "linear_nin": lambda k: k.T,
    "conv_nin": lambda k: k.T[:, :, None, None],
    "norm": lambda k: k,
    "fourier": lambda k: k,
}
_BIAS = {"conv": "bias", "dense": "bias", "linear_nin": "b", "conv_nin": "b", "norm": "bias", "fourier": None}

# Inside a score_jax block: Flax sub-module -> (diffusers sub-module, kind).
_RESNET_DDPM = {"GroupNorm_0": ("norm1", "norm"), "Conv_0": ("conv1", "conv"), "Dense_0": ("time_emb_proj", "dense"),
                "GroupNorm_1": ("norm2", "norm"), "Conv_1": ("conv2", "conv"), "NIN_0": ("conv_shortcut", "conv_nin")}
_RESNET_BIGGAN = {**{k: v for k, v in _RESNET_DDPM.items() if k != "NIN_0"}, "Conv_2": ("conv_shortcut", "conv")}
_ATTENTION = {"GroupNorm_0": ("group_norm", "norm"), "NIN_0": ("to_q", "linear_nin"), "NIN_1": ("to_k", "linear_nin"),
              "NIN_2": ("to_v", "linear_nin"), "NIN_3": ("to_out.0", "linear_nin")}
_SINGLE_CONV = {"Conv_0": ("", "conv")}
_BLOCKS = {"ResnetBlockDDPM": _RESNET_DDPM, "ResnetBlockBigGANpp": _RESNET_BIGGAN, "AttnBlock": _ATTENTION,
           "AttnBlockpp": _ATTENTION, "Combine": _SINGLE_CONV, "Downsample": _SINGLE_CONV, "Upsample": _SINGLE_CONV}
_TOP = {"Dense": "dense", "Conv": "conv", "GroupNorm": "norm", "GaussianFourierProjection": "fourier"}


# ------------------------------------------------------------------------------ the folder

def find_file(path, names, *subfolders):
  """The first of `names` in folder `path`, else in its `subfolders` (a pipeline's components); None if none."""
  for directory in (path, *(os.path.join(path, subfolder) for subfolder in subfolders)):
    for name in names:
      candidate = os.path.join(directory, name)
      if os.path.isfile(candidate):
        return candidate
  return None


def read_folder(path):
  """`(model_config, scheduler_config or None, state_dict)` of a diffusers checkpoint folder (numpy arrays): its
  UNet's or its transformer's."""
  if not os.path.isdir(path):
    raise ValueError(f"{path!r} is not a folder; a diffusers checkpoint is a folder with config.json and "
                     f"{' or '.join(WEIGHTS)}")
  config_path = find_file(path, ["config.json"], "unet", "transformer")
  weights_path = find_file(path, WEIGHTS, "unet", "transformer")
  if config_path is None or weights_path is None:
    raise ValueError(f"{path!r} has no config.json with {' or '.join(WEIGHTS)} (at its top or in unet/ or "
                     "transformer/)")
  with open(config_path) as f:
    unet_config = json.load(f)
  scheduler_path = find_file(path, ["scheduler_config.json"], "scheduler")
  pipeline = os.path.join(path, os.pardir)
  if scheduler_path is None and os.path.isfile(os.path.join(pipeline, "model_index.json")):  # a pipeline's unet/
    scheduler_path = find_file(pipeline, ["scheduler_config.json"], "scheduler")
  scheduler_config = None
  if scheduler_path is not None:
    with open(scheduler_path) as f:
      scheduler_config = json.load(f)
  return unet_config, scheduler_config, read_state_dict(weights_path)


def read_state_dict(weights_path):
  """`{name: numpy array}` of a diffusers weights file: safetensors, or a `.bin` read by the safe unpickler."""
  if weights_path.endswith(".safetensors"):
    state_dict, _ = safetensors_io.read(weights_path)
    return state_dict
  state_dict = torch_pickle.load(weights_path)
  if not isinstance(state_dict, dict):
    raise ValueError(f"{weights_path} holds a {type(state_dict).__name__}, not a state dict")
  return {key: np.asarray(value) for key, value in state_dict.items()}


# ------------------------------------------------------------------------------ configs

def _require(unet, key, allowed, default=None):
  value = unet.get(key, default)
  if value not in allowed:
    raise ValueError(f"diffusers config {key}={value!r} is not supported; score_jax reads {allowed}")
  return value


def _levels(unet):
  """(nf, ch_mult, attention resolutions) of a UNet2DModel config."""
  channels = list(unet["block_out_channels"])
  nf = channels[0]
  if any(c % nf for c in channels):
    raise ValueError(f"block_out_channels={channels} are not multiples of the first")
  size = unet["sample_size"]
  attention = tuple(size // 2**i for i, name in enumerate(unet["down_block_types"]) if name.startswith("Attn"))
  return nf, tuple(c // nf for c in channels), attention


def _check_blocks(unet, down, attention_down, up, attention_up):
  down_types, up_types = list(unet["down_block_types"]), list(unet["up_block_types"])
  if len(down_types) != len(up_types) or set(down_types) - {down, attention_down} or set(up_types) - {up, attention_up}:
    raise ValueError(f"down_block_types={down_types}, up_block_types={up_types}: score_jax reads {down} / "
                     f"{attention_down} down and {up} / {attention_up} up blocks")
  mirrored = [name == attention_down for name in down_types][::-1]
  if mirrored != [name == attention_up for name in up_types]:
    raise ValueError(f"attention levels of down_block_types={down_types} and up_block_types={up_types} differ")


# UNet2DModel's defaults for keys a config.json leaves out (diffusers fills them in the same way).
UNET_DEFAULTS = {"in_channels": 3, "out_channels": 3, "center_input_sample": False, "time_embedding_type": "positional",
                 "freq_shift": 0, "flip_sin_to_cos": True, "layers_per_block": 2, "mid_block_scale_factor": 1,
                 "downsample_padding": 1, "dropout": 0.0, "act_fn": "silu", "attention_head_dim": 8,
                 "norm_num_groups": 32, "norm_eps": 1e-5, "resnet_time_scale_shift": "default",
                 "class_embed_type": None, "num_class_embeds": None}


def _discrete_vp(config, scheduler):
  """Eps prediction of the integer step n in 0..N-1 on data in [-1, 1] under the discrete VP SDE of a DDPM / DDIM
  scheduler's linear betas (score_sde's beta_i = beta_min / N + ...), sampled by ancestral steps."""
  model, training = config.model, config.training
  model.scale_by_sigma, config.data.centered = False, True
  training.sde, training.continuous = "vpsde", False
  _require(scheduler, "beta_schedule", ("linear",), "linear")
  _require(scheduler, "prediction_type", ("epsilon",), "epsilon")
  n = int(scheduler.get("num_train_timesteps", 1000))
  model.num_scales = n
  model.beta_min = float(scheduler.get("beta_start", 1e-4)) * n
  model.beta_max = float(scheduler.get("beta_end", 0.02)) * n
  config.sampling.predictor, config.sampling.corrector = "ancestral_sampling", "none"


def config_from_diffusers(unet, scheduler=None):
  """The score_jax config of a diffusers `UNet2DModel` or DiT config (and its scheduler's config), or a
  `ValueError` naming the setting score_jax cannot reproduce."""
  if diffusers_dit.is_dit(unet):
    config = base_config.get_config()
    diffusers_dit.set_network(config, unet)
    _discrete_vp(config, scheduler or {})
    return config
  unet = {**UNET_DEFAULTS, **unet}
  if unet.get("_class_name", "UNet2DModel") != "UNet2DModel":
    raise ValueError(f"{unet.get('_class_name')} is not a UNet2DModel")
  if unet.get("in_channels") != unet.get("out_channels"):
    raise ValueError(f"in_channels={unet.get('in_channels')} != out_channels={unet.get('out_channels')}")
  for key in ("class_embed_type", "num_class_embeds"):
    _require(unet, key, (None,))
  _require(unet, "act_fn", ("silu", "swish"))
  _require(unet, "resnet_time_scale_shift", ("default",), "default")
  _require(unet, "norm_eps", (1e-6,))
  config = base_config.get_config()  # the package's base: every key, the reference's CIFAR-10 values
  nf, ch_mult, attention = _levels(unet)
  model, data, training = config.model, config.data, config.training
  model.nf, model.ch_mult, model.attn_resolutions = nf, ch_mult, attention
  model.num_res_blocks, model.dropout = unet["layers_per_block"], float(unet.get("dropout", 0.0))
  model.nonlinearity, model.conditional, model.resamp_with_conv = "swish", True, True
  data.image_size, data.num_channels = unet["sample_size"], unet["in_channels"]
  data.dataset = "CIFAR10" if data.image_size == 32 and data.num_channels == 3 else "LSUN"
  scheduler = scheduler or {}
  if unet.get("time_embedding_type") == "fourier":  # NCSN++
    _check_blocks(unet, "SkipDownBlock2D", "AttnSkipDownBlock2D", "SkipUpBlock2D", "AttnSkipUpBlock2D")
    _require(unet, "center_input_sample", (True,))
    _require(unet, "norm_num_groups", (None,))
    if not math.isclose(unet.get("mid_block_scale_factor", 1.0), math.sqrt(2.0), rel_tol=1e-6):
      raise ValueError(f"mid_block_scale_factor={unet.get('mid_block_scale_factor')}: NCSN++ rescales skips by sqrt(2)")
    narrow = [nf * m for m, r in zip(ch_mult, (unet["sample_size"] // 2**i for i in range(len(ch_mult))))
              if r in attention and nf * m < 128]
    if narrow:
      raise ValueError(f"attention levels with {narrow} channels: diffusers' AttnSkip blocks use 32 norm groups "
                       "there (and a precedence slip in their resnets' group count), score_sde min(C // 4, 32); "
                       "the two networks agree only from 128 channels")
    model.name, model.fir, model.fir_kernel, model.skip_rescale = "ncsnpp", True, (1, 3, 3, 1), True
    model.resblock_type, model.progressive, model.progressive_input = "biggan", "output_skip", "input_skip"
    model.progressive_combine, model.embedding_type, model.fourier_scale = "sum", "fourier", 16.0
    model.scale_by_sigma, data.centered = True, False
    training.sde, training.continuous = "vesde", True
    model.sigma_min = float(scheduler.get("sigma_min", 0.01))
    model.sigma_max = float(scheduler.get("sigma_max", 1348.0))
    model.num_scales = int(scheduler.get("num_train_timesteps", 2000))
    config.sampling.snr = float(scheduler.get("snr", 0.15 if data.image_size > 32 else 0.16))
    config.sampling.predictor, config.sampling.corrector = "reverse_diffusion", "langevin"
  elif unet.get("time_embedding_type", "positional") == "positional":  # DDPM
    _check_blocks(unet, "DownBlock2D", "AttnDownBlock2D", "UpBlock2D", "AttnUpBlock2D")
    _require(unet, "center_input_sample", (False,))
    _require(unet, "norm_num_groups", (32,))
    _require(unet, "flip_sin_to_cos", (False,))
    _require(unet, "freq_shift", (1,))
    _require(unet, "downsample_padding", (0,))
    _require(unet, "mid_block_scale_factor", (1, 1.0))
    head = unet.get("attention_head_dim")
    if head is not None and head not in [nf * m for m in ch_mult]:
      raise ValueError(f"attention_head_dim={head}: score_jax's DDPM attention has one head")
    model.name, model.attn_per_up_resnet = "ddpm", True
    _discrete_vp(config, scheduler)
  else:
    raise ValueError(f"time_embedding_type={unet.get('time_embedding_type')!r}: score_jax reads fourier (NCSN++) "
                     "and positional (DDPM) UNets")
  return config


def _flat(tree, prefix=""):
  flat = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      flat.update(_flat(value, f"{prefix}{key}."))
    else:
      flat[f"{prefix}{key}"] = value
  return flat


def config_file(config, source):
  """The text of a config file (for `main.py --config=`) that builds `config` as the package's base config
  (`score_jax.base_config`) with the keys that differ from it; it runs wherever score_jax is installed."""
  base, wanted = _flat(base_config.get_config().to_dict()), _flat(config.to_dict())
  overrides = {k: v for k, v in sorted(wanted.items()) if base.get(k) != v}
  lines = [f"    {k!r}: {v!r}," for k, v in overrides.items()]
  return "\n".join([f'"""The score_jax config of {source}, derived by score_jax.convert from its diffusers config."""',
                    "", "from score_jax import base_config", "", "OVERRIDES = {",
                    *lines, "}", "", "", "def get_config():", "  config = base_config.get_config()",
                    "  config.update_from_flattened_dict(OVERRIDES)", "  return config", ""])


def config_to_diffusers(config):
  """`(unet_config, scheduler_config)` in diffusers' format for an NCSN++ (the diffusers-supported layout) or
  DDPM config; a `ValueError` for a layout diffusers' UNet2DModel does not have."""
  model, data = config.model, config.data
  size, levels = data.image_size, len(model.ch_mult)
  attention = [size // 2**i in tuple(model.attn_resolutions) for i in range(levels)]
  common = {"_class_name": "UNet2DModel", "sample_size": size, "in_channels": data.num_channels,
            "out_channels": data.num_channels, "layers_per_block": model.num_res_blocks,
            "block_out_channels": [model.nf * m for m in model.ch_mult], "act_fn": "silu", "norm_eps": 1e-6,
            "dropout": float(model.dropout), "attention_head_dim": None, "resnet_time_scale_shift": "default"}
  if model.name == "ncsnpp":
    expected = dict(fir=True, skip_rescale=True, resblock_type="biggan", progressive="output_skip",
                    progressive_input="input_skip", progressive_combine="sum", embedding_type="fourier",
                    scale_by_sigma=True)
    wrong = {k: model.get(k) for k, v in expected.items() if str(model.get(k)).lower() != str(v).lower()}
    if wrong or data.centered or config.training.sde.lower() != "vesde" or tuple(model.fir_kernel) != (1, 3, 3, 1):
      raise ValueError(f"diffusers' NCSN++ is the VE, uncentred score_sde NCSN++ with {expected}; this config has {wrong}")
    unet = {**common, "time_embedding_type": "fourier", "center_input_sample": True, "norm_num_groups": None,
            "mid_block_scale_factor": math.sqrt(2.0), "flip_sin_to_cos": True, "freq_shift": 1, "downsample_padding": 1,
            "down_block_types": ["AttnSkipDownBlock2D" if a else "SkipDownBlock2D" for a in attention],
            "up_block_types": ["AttnSkipUpBlock2D" if a else "SkipUpBlock2D" for a in attention[::-1]]}
    scheduler = {"_class_name": "ScoreSdeVeScheduler", "sigma_min": float(model.sigma_min),
                 "sigma_max": float(model.sigma_max), "num_train_timesteps": int(model.num_scales),
                 "snr": float(config.sampling.snr), "sampling_eps": 1e-5, "correct_steps": 1}
  elif model.name == "ddpm":
    if not model.get("attn_per_up_resnet", False) and any(attention):
      raise ValueError("diffusers' AttnUpBlock2D has an attention block after every up resnet: export a model "
                       "with model.attn_per_up_resnet=True")
    if not data.centered or config.training.sde.lower() != "vpsde":
      raise ValueError("diffusers' DDPM is the VP SDE's eps-prediction on data in [-1, 1] (data.centered=True)")
    unet = {**common, "time_embedding_type": "positional", "center_input_sample": False, "norm_num_groups": 32,
            "mid_block_scale_factor": 1, "flip_sin_to_cos": False, "freq_shift": 1, "downsample_padding": 0,
            "down_block_types": ["AttnDownBlock2D" if a else "DownBlock2D" for a in attention],
            "up_block_types": ["AttnUpBlock2D" if a else "UpBlock2D" for a in attention[::-1]]}
    n = int(model.num_scales)
    scheduler = {"_class_name": "DDPMScheduler", "num_train_timesteps": n, "beta_start": model.beta_min / n,
                 "beta_end": model.beta_max / n, "beta_schedule": "linear", "clip_sample": True,
                 "variance_type": "fixed_small"}
  else:
    raise ValueError(f"model.name={model.name!r}: the diffusers layout exists for ncsnpp and ddpm")
  return unet, scheduler


# ------------------------------------------------------------------------------ names

def _diffusers_modules(config):
  """The diffusers module (name prefix) of each variable-owning score_jax module, in creation order."""
  model = config.model
  levels, blocks = len(model.ch_mult), model.num_res_blocks
  size = config.data.image_size
  ncsnpp = model.name == "ncsnpp"
  modules = (["time_proj"] if ncsnpp else []) + ["time_embedding.linear_1", "time_embedding.linear_2", "conv_in"]
  for level in range(levels):
    attention = size // 2**level in tuple(model.attn_resolutions)
    for j in range(blocks):
      modules.append(f"down_blocks.{level}.resnets.{j}")
      if attention:
        modules.append(f"down_blocks.{level}.attentions.{j}")
    if level != levels - 1:
      if ncsnpp:
        modules += [f"down_blocks.{level}.resnet_down", f"down_blocks.{level}.skip_conv"]
      else:
        modules.append(f"down_blocks.{level}.downsamplers.0.conv")
  modules += ["mid_block.resnets.0", "mid_block.attentions.0", "mid_block.resnets.1"]
  per_resnet = model.get("attn_per_up_resnet", False) and not ncsnpp
  for i, level in enumerate(reversed(range(levels))):
    attention = size // 2**level in tuple(model.attn_resolutions)
    for j in range(blocks + 1):
      modules.append(f"up_blocks.{i}.resnets.{j}")
      if attention and per_resnet:
        modules.append(f"up_blocks.{i}.attentions.{j}")
    if attention and not per_resnet:
      modules.append(f"up_blocks.{i}.attentions.0")
    if ncsnpp:
      modules += [f"up_blocks.{i}.skip_norm", f"up_blocks.{i}.skip_conv"] if level else ["conv_norm_out", "conv_out"]
      if level:
        modules.append(f"up_blocks.{i}.resnet_up")
    elif level:
      modules.append(f"up_blocks.{i}.upsamplers.0.conv")
  if not ncsnpp:
    modules += ["conv_norm_out", "conv_out"]
  return modules


def _kind(flax_name):
  return flax_name.rsplit("_", 1)[0]


def name_map(config):
  """`{(collection, Flax path...): (diffusers name, leaf kind, "weight" | "bias")}` for the network of
  `config` (an NCSN++ of the diffusers layout or a DDPM), every variable once."""
  owners, shapes = network_layout(config)
  modules = _diffusers_modules(config)
  if len(owners) != len(modules):
    raise ValueError(f"the {config.model.name} network of this config has {len(owners)} modules, its diffusers "
                     f"layout {len(modules)}: not a layout diffusers has")
  mapping = {}
  for owner, prefix in zip(owners, modules):
    collection = "constants" if owner.startswith("GaussianFourierProjection") else "params"
    kind = _kind(owner)
    if kind in _TOP:
      members = {None: ("", _TOP[kind])}
    elif kind in _BLOCKS:
      members = _BLOCKS[kind]
    else:
      raise ValueError(f"score_jax module {owner} has no diffusers counterpart")
    for sub, (diffusers_sub, leaf_kind) in members.items():
      path = (collection, owner) if sub is None else (collection, owner, sub)
      node = shapes[collection][owner] if sub is None else shapes[collection][owner].get(sub)
      if node is None:
        continue  # e.g. a resnet without a shortcut
      name = ".".join(filter(None, [prefix, diffusers_sub]))
      flax_weight, _ = _TO_FLAX[leaf_kind]
      mapping[path + (flax_weight,)] = (f"{name}.weight", leaf_kind, "weight")
      if _BIAS[leaf_kind]:
        mapping[path + (_BIAS[leaf_kind],)] = (f"{name}.bias", leaf_kind, "bias")
  return mapping, shapes


def state_dict_to_variables(state_dict, config):
  """A diffusers UNet2DModel (or DiT) state dict -> variables of `get_model(config)`; every name and shape checked."""
  if config.model.name == "dit":
    return diffusers_dit.state_dict_to_variables(state_dict, config)
  mapping, shapes = name_map(config)
  wanted = {name for name, _, _ in mapping.values()}
  ignored = {k for k in state_dict if k.endswith("time_proj.W")}  # diffusers' legacy alias of time_proj.weight
  missing, unmapped = sorted(wanted - set(state_dict)), sorted(set(state_dict) - wanted - ignored)
  if missing or unmapped:
    raise ValueError(f"the diffusers state dict does not fit the {config.model.name} network of this config: "
                     f"missing {missing[:20]}{' ...' if len(missing) > 20 else ''}, unmapped "
                     f"{unmapped[:20]}{' ...' if len(unmapped) > 20 else ''}")
  variables = {}
  for path, (name, kind, part) in mapping.items():
    value = np.asarray(state_dict[name], np.float32)
    value = _TO_FLAX[kind][1](value) if part == "weight" else value
    node = variables
    for key in path[:-1]:
      node = node.setdefault(key, {})
    leaf_shape = _leaf(shapes, path).shape
    if value.shape != leaf_shape:
      raise ValueError(f"{name}: shape {np.shape(state_dict[name])} does not give {leaf_shape} for "
                       f"{'/'.join(path)}")
    node[path[-1]] = jnp.asarray(value)
  return variables


def _leaf(shapes, path):
  node = shapes
  for key in path:
    node = node[key]
  return node


def variables_to_state_dict(variables, config):
  """score_jax variables of an NCSN++ (diffusers layout) or DDPM -> a diffusers UNet2DModel state dict."""
  mapping, _ = name_map(config)
  state_dict = {}
  for path, (name, kind, part) in mapping.items():
    value = np.asarray(_leaf(variables, path), np.float32)
    state_dict[name] = np.ascontiguousarray(_TO_TORCH[kind](value) if part == "weight" else value)
  return state_dict


# ------------------------------------------------------------------------------ public

def load_diffusers_checkpoint(path):
  """A diffusers checkpoint folder -> `(config, variables)` for `get_model(config)`."""
  unet, scheduler, state_dict = read_folder(path)
  config = config_from_diffusers(unet, scheduler)
  return config, state_dict_to_variables(state_dict, config)


def save_diffusers_checkpoint(path, config, variables):
  """Writes `variables` of an NCSN++ / DDPM model as a diffusers folder: `config.json`,
  `diffusion_pytorch_model.safetensors` and `scheduler_config.json` (`UNet2DModel.from_pretrained(path)` loads it)."""
  unet, scheduler = config_to_diffusers(config)
  state_dict = variables_to_state_dict(variables, config)
  os.makedirs(path, exist_ok=True)
  safetensors_io.write(os.path.join(path, WEIGHTS[0]), state_dict)
  for name, content in (("config.json", unet), ("scheduler_config.json", scheduler)):
    with open(os.path.join(path, name), "w") as f:
      json.dump(content, f, indent=1)
  return path


__all__ = ["config_from_diffusers", "config_to_diffusers", "find_file", "load_diffusers_checkpoint", "name_map",
           "read_folder", "read_state_dict", "save_diffusers_checkpoint", "state_dict_to_variables",
           "variables_to_state_dict"]
