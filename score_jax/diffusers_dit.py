"""diffusers' DiT -> score_jax's `dit` network: its config and its weights (read by
`diffusers_format.load_diffusers_checkpoint`, which adds the discrete VP SDE of the folder's scheduler).

diffusers holds DiT as `DiTTransformer2DModel` (the Hub's facebook/DiT-* folders, converted with an older diffusers,
name it `Transformer2DModel` with `norm_type="ada_norm_zero"`, which diffusers loads as `DiTTransformer2DModel`). It
computes the network of Peebles & Xie with three conventions of its own, which the imported config sets:

* the timestep's sinusoids have frequencies 10000^(-i / (128 - 1)) (`downscale_freq_shift=1`; DiT's own 128):
  `model.time_freq_shift = 1`, cosines first as DiT;
* the layer norm before each MLP has epsilon `norm_eps` (1e-5 by default; DiT 1e-6): `model.mlp_norm_eps`;
* every block holds its own copy of the timestep MLP and the class table (`transformer_blocks.<i>.norm1.emb`), and
  the final layer reads block 0's. The Hub's checkpoints hold one embedding copied into every block (their
  conversion from DiT's); score_jax's network has one, and a checkpoint whose copies differ is refused.

The learned-sigma layout (`out_channels = 2 in_channels`: per pixel the C noise channels, then C variance
channels) is DiT's: `model.learn_sigma`, whose extra channels the network drops. The class table has
`num_embeds_ada_norm + 1` rows, the last the null class (diffusers' label dropout), as score_jax's.
The sine-cosine position embedding is computed, not stored (diffusers keeps it as a non-persistent buffer).
"""

import re

import jax
import jax.numpy as jnp
import numpy as np

from score_jax.networks import get_network

CLASSES = ("DiTTransformer2DModel", "Transformer2DModel")

# DiTTransformer2DModel's defaults for keys a config.json leaves out.
DEFAULTS = {"num_attention_heads": 16, "attention_head_dim": 72, "in_channels": 4, "out_channels": None,
            "num_layers": 28, "dropout": 0.0, "attention_bias": True, "sample_size": 32, "patch_size": 2,
            "activation_fn": "gelu-approximate", "num_embeds_ada_norm": 1000, "norm_type": "ada_norm_zero",
            "norm_elementwise_affine": False, "norm_eps": 1e-5, "cross_attention_dim": None,
            "num_vector_embeds": None, "only_cross_attention": False, "double_self_attention": False}
# Settings diffusers' DiT must have for score_jax's network to compute it.
REQUIRED = {"norm_type": "ada_norm_zero", "activation_fn": "gelu-approximate", "attention_bias": True,
            "norm_elementwise_affine": False, "cross_attention_dim": None, "num_vector_embeds": None,
            "only_cross_attention": False, "double_self_attention": False, "dropout": 0.0}

EMBEDDING = "transformer_blocks.{}.norm1.emb."
# diffusers name (with {} the block) -> (score_jax path, kind); the attention's q, k, v join into one `qkv`.
TOP = {"pos_embed.proj": (("patch_embed",), "conv"),
       EMBEDDING.format(0) + "timestep_embedder.linear_1": (("time_embed_0",), "dense"),
       EMBEDDING.format(0) + "timestep_embedder.linear_2": (("time_embed_1",), "dense"),
       EMBEDDING.format(0) + "class_embedder.embedding_table": (("class_embedding",), "table"),
       "proj_out_1": (("final_modulation",), "dense"), "proj_out_2": (("final_linear",), "dense")}
BLOCK = {"norm1.linear": "adaLN_modulation", "attn1.to_out.0": "proj", "ff.net.0.proj": "mlp_in",
         "ff.net.2": "mlp_out"}
QKV = ("attn1.to_q", "attn1.to_k", "attn1.to_v")


def is_dit(model_config):
  """Whether a diffusers model config (`config.json`) is a DiT."""
  name = model_config.get("_class_name")
  return name == CLASSES[0] or name == CLASSES[1] and model_config.get("norm_type") == "ada_norm_zero"


def set_network(config, transformer):
  """Sets `config.model` and the data shape for a diffusers DiT config; a `ValueError` names a setting score_jax's
  network does not compute."""
  transformer = {**DEFAULTS, **transformer}
  for key, value in REQUIRED.items():
    if transformer[key] != value:
      raise ValueError(f"diffusers DiT config {key}={transformer[key]!r} is not supported; score_jax reads {value!r}")
  channels = transformer["in_channels"]
  out_channels = transformer["out_channels"] or channels
  if out_channels not in (channels, 2 * channels):
    raise ValueError(f"out_channels={out_channels}: score_jax's DiT returns in_channels={channels}, optionally "
                     "with as many learned-variance channels")
  model, data = config.model, config.data
  model.name, model.patch_size, model.depth = "dit", transformer["patch_size"], transformer["num_layers"]
  model.num_heads = transformer["num_attention_heads"]
  model.hidden_size = model.num_heads * transformer["attention_head_dim"]
  model.mlp_ratio, model.learn_sigma = 4.0, out_channels == 2 * channels
  model.num_classes, model.dropout = transformer["num_embeds_ada_norm"], 0.0
  model.time_freq_shift, model.mlp_norm_eps = 1.0, float(transformer["norm_eps"])
  data.image_size, data.num_channels = transformer["sample_size"], channels
  data.dataset, data.labels_from = "folder", "subfolders"  # ImageNet as an image folder, one subfolder a class
  config.training.class_dropout = 0.1  # diffusers' LabelEmbedding's


def _to_flax(kind, value):
  if kind == "conv":
    return value.transpose(2, 3, 1, 0)  # OIHW -> HWIO
  return value.T if kind == "dense" else value


def _check_copies(state_dict, depth):
  """Every block's copy of the conditioning embedding equals block 0's (the network has one); returns their names."""
  copies = set()
  for name in sorted(state_dict):
    match = re.fullmatch(r"transformer_blocks\.(\d+)\.norm1\.emb\.(.*)", name)
    if match and match.group(1) != "0":
      first = EMBEDDING.format(0) + match.group(2)
      if int(match.group(1)) >= depth:
        raise ValueError(f"{name}: the config has {depth} blocks")
      if first not in state_dict or not np.array_equal(state_dict[name], state_dict[first]):
        raise ValueError(f"{name} differs from {first}: score_jax's DiT has one timestep and class embedding, the "
                         "Hub's checkpoints copy it into every block")
      copies.add(name)
  return copies


def _weights(state_dict, depth):
  """`{score_jax path: (diffusers name, array in Flax layout)}` of every DiT weight."""
  weights = {}
  for prefix, (path, kind) in TOP.items():
    weight, bias = prefix + ".weight", prefix + ".bias"
    weights[path + ("embedding" if kind == "table" else "kernel",)] = (weight, _to_flax(kind, state_dict[weight]))
    if kind != "table":
      weights[path + ("bias",)] = (bias, state_dict[bias])
  for index in range(depth):
    block = f"transformer_blocks.{index}."
    for name, flax_name in BLOCK.items():
      weight, bias = block + name + ".weight", block + name + ".bias"
      weights[(f"block_{index}", flax_name, "kernel")] = (weight, state_dict[weight].T)
      weights[(f"block_{index}", flax_name, "bias")] = (bias, state_dict[bias])
    weights[(f"block_{index}", "qkv", "kernel")] = (
        block + "attn1.to_{q,k,v}.weight", np.concatenate([state_dict[block + n + ".weight"].T for n in QKV], axis=1))
    weights[(f"block_{index}", "qkv", "bias")] = (
        block + "attn1.to_{q,k,v}.bias", np.concatenate([state_dict[block + n + ".bias"] for n in QKV]))
  return weights


def _wanted_names(depth):
  names = {f"{prefix}.{leaf}" for prefix, (_, kind) in TOP.items() for leaf in ("weight", "bias")
           if leaf == "weight" or kind != "table"}
  for index in range(depth):
    for name in (*BLOCK, *QKV):
      names |= {f"transformer_blocks.{index}.{name}.weight", f"transformer_blocks.{index}.{name}.bias"}
  return names


def state_dict_to_variables(state_dict, config):
  """A diffusers DiT state dict -> variables of the `dit` network of `config`; every name and shape checked."""
  depth = config.model.depth
  state_dict = {name: np.asarray(value, np.float32) for name, value in state_dict.items()}
  wanted = _wanted_names(depth)
  missing = sorted(wanted - set(state_dict))
  unmapped = sorted(set(state_dict) - wanted - _check_copies(state_dict, depth))
  if missing or unmapped:
    raise ValueError(f"the diffusers state dict does not fit a DiT of {depth} blocks: missing {missing[:20]}, "
                     f"unmapped {unmapped[:20]}")
  size, channels = config.data.image_size, config.data.num_channels
  shapes = jax.eval_shape(lambda: get_network(config).init(
      jax.random.key(0), jnp.zeros((1, size, size, channels)), jnp.zeros((1,))))["params"]
  params = {}
  for path, (name, value) in _weights(state_dict, depth).items():
    node, want = params, shapes
    for key in path[:-1]:
      node, want = node.setdefault(key, {}), want[key]
    if value.shape != want[path[-1]].shape:
      raise ValueError(f"{name}: shape {value.shape} in score_jax's layout, the network's "
                       f"{'/'.join(path)} is {want[path[-1]].shape}")
    node[path[-1]] = jnp.asarray(value)
  return {"params": params}
