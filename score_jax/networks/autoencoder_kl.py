"""The Stable Diffusion VAE (Rombach et al. 2022) in diffusers' `AutoencoderKL` layout, as plain Flax modules (NHWC).

Every sub-module carries the name diffusers gives it (diffusers' `encoder.down_blocks.0.resnets.1.conv2` is
Flax's `encoder/down_blocks_0/resnets_1/conv2`), so a diffusers state dict maps onto the variables by name
alone (`score_jax.autoencoder`). The network knows nothing of latent scaling or SDEs: `encode` gives the
posterior's moments, `decode` the image.
"""

import functools
from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from score_jax.networks import layers
from score_jax.networks import up_or_down_sampling as resample
from score_jax.networks.registry import compute_dtype, register_model
from score_jax.utils import choice_error

# diffusers' `get_activation` (the resnets' activation; the encoder's and decoder's last one is always SiLU).
ACTIVATIONS = {"silu": nn.silu, "swish": nn.silu, "relu": nn.relu, "mish": lambda x: x * jnp.tanh(nn.softplus(x)),
               "gelu": functools.partial(nn.gelu, approximate=False)}
DOWN_BLOCK_TYPES = ("DownEncoderBlock2D",)
UP_BLOCK_TYPES = ("UpDecoderBlock2D",)
# `AutoencoderKL.__init__`'s defaults for the keys a config.json leaves out.
DIFFUSERS_DEFAULTS = {"in_channels": 3, "out_channels": 3, "down_block_types": DOWN_BLOCK_TYPES,
                      "up_block_types": UP_BLOCK_TYPES, "block_out_channels": (64,), "layers_per_block": 1,
                      "act_fn": "silu", "latent_channels": 4, "norm_num_groups": 32, "scaling_factor": 0.18215,
                      "shift_factor": None, "use_quant_conv": True, "use_post_quant_conv": True,
                      "mid_block_add_attention": True}


def _conv(features, kernel_size, dtype, stride=1, padding=None):
  """torch's `Conv2d(kernel_size, stride, padding=kernel_size // 2)` unless `padding` ((top, bottom), (left, right))."""
  pad = kernel_size // 2
  return nn.Conv(features, (kernel_size, kernel_size), strides=(stride, stride),
                 padding=padding or ((pad, pad), (pad, pad)), dtype=dtype)


def _group_norm(groups, dtype):
  return nn.GroupNorm(num_groups=groups, epsilon=1e-6, dtype=dtype)


class ResnetBlock(nn.Module):
  """diffusers' `ResnetBlock2D` without time embedding: (GroupNorm, act, 3x3 conv) twice, 1x1 conv shortcut."""

  in_channels: int
  out_channels: int
  groups: int
  act_fn: str
  dtype: Any = None

  def setup(self):
    self.norm1 = _group_norm(self.groups, self.dtype)
    self.conv1 = _conv(self.out_channels, 3, self.dtype)
    self.norm2 = _group_norm(self.groups, self.dtype)
    self.conv2 = _conv(self.out_channels, 3, self.dtype)
    if self.in_channels != self.out_channels:
      self.conv_shortcut = _conv(self.out_channels, 1, self.dtype)

  def __call__(self, x):
    act = ACTIVATIONS[self.act_fn]
    h = self.conv1(act(self.norm1(x)))
    h = self.conv2(act(self.norm2(h)))
    return (self.conv_shortcut(x) if self.in_channels != self.out_channels else x) + h


class Attention(nn.Module):
  """diffusers' `Attention` as the VAE's mid block has it: GroupNorm, one head over all H*W positions, residual."""

  channels: int
  groups: int
  dtype: Any = None

  def setup(self):
    self.group_norm = _group_norm(self.groups, self.dtype)
    self.to_q, self.to_k, self.to_v = (nn.Dense(self.channels, dtype=self.dtype) for _ in range(3))
    self.to_out = [nn.Dense(self.channels, dtype=self.dtype)]

  def __call__(self, x):
    batch, height, width, channels = x.shape
    h = self.group_norm(x).reshape(batch, height * width, 1, channels)
    h = layers.attention(self.to_q(h), self.to_k(h), self.to_v(h))
    return x + self.to_out[0](h.reshape(batch, height, width, channels))


class MidBlock(nn.Module):
  """diffusers' `UNetMidBlock2D` without time embedding: resnet, attention (optional), resnet."""

  channels: int
  groups: int
  act_fn: str
  add_attention: bool = True
  dtype: Any = None

  def setup(self):
    self.resnets = [ResnetBlock(self.channels, self.channels, self.groups, self.act_fn, self.dtype) for _ in range(2)]
    if self.add_attention:
      self.attentions = [Attention(self.channels, self.groups, self.dtype)]

  def __call__(self, x):
    x = self.resnets[0](x)
    return self.resnets[1](self.attentions[0](x) if self.add_attention else x)


class Downsample(nn.Module):
  """diffusers' `Downsample2D(padding=0)`: zero padding at the bottom and right only, 3x3 conv of stride 2."""

  channels: int
  dtype: Any = None

  def setup(self):
    self.conv = _conv(self.channels, 3, self.dtype, stride=2, padding=((0, 1), (0, 1)))

  def __call__(self, x):
    return self.conv(x)


class Upsample(nn.Module):
  """diffusers' `Upsample2D`: nearest-neighbour 2x, 3x3 conv."""

  channels: int
  dtype: Any = None

  def setup(self):
    self.conv = _conv(self.channels, 3, self.dtype)

  def __call__(self, x):
    return self.conv(resample.naive_upsample_2d(x))


class ResnetLevel(nn.Module):
  """`DownEncoderBlock2D` (resnets, then `downsamplers`) or `UpDecoderBlock2D` (resnets, then `upsamplers`)."""

  in_channels: int
  out_channels: int
  num_layers: int
  groups: int
  act_fn: str
  resample: str = ""  # "down", "up" or "" (the last level)
  dtype: Any = None

  def setup(self):
    self.resnets = [ResnetBlock(self.in_channels if i == 0 else self.out_channels, self.out_channels, self.groups,
                                self.act_fn, self.dtype) for i in range(self.num_layers)]
    if self.resample == "down":
      self.downsamplers = [Downsample(self.out_channels, self.dtype)]
    elif self.resample == "up":
      self.upsamplers = [Upsample(self.out_channels, self.dtype)]

  def __call__(self, x):
    for resnet in self.resnets:
      x = resnet(x)
    if self.resample:
      x = (self.downsamplers if self.resample == "down" else self.upsamplers)[0](x)
    return x


class Encoder(nn.Module):
  """diffusers' VAE `Encoder`: conv_in, the down levels, the mid block, GroupNorm, SiLU, conv_out."""

  block_out_channels: Sequence[int]
  layers_per_block: int
  out_channels: int  # 2 * latent_channels: the posterior's mean and log-variance
  groups: int
  act_fn: str
  add_attention: bool = True
  dtype: Any = None

  def setup(self):
    channels, levels = self.block_out_channels, len(self.block_out_channels)
    self.conv_in = _conv(channels[0], 3, self.dtype)
    self.down_blocks = [ResnetLevel(channels[max(i - 1, 0)], channels[i], self.layers_per_block, self.groups,
                                    self.act_fn, "down" if i < levels - 1 else "", self.dtype) for i in range(levels)]
    self.mid_block = MidBlock(channels[-1], self.groups, self.act_fn, self.add_attention, self.dtype)
    self.conv_norm_out = _group_norm(self.groups, self.dtype)
    self.conv_out = _conv(self.out_channels, 3, self.dtype)

  def __call__(self, x):
    h = self.conv_in(x)
    for block in self.down_blocks:
      h = block(h)
    return self.conv_out(nn.silu(self.conv_norm_out(self.mid_block(h))))


class Decoder(nn.Module):
  """diffusers' VAE `Decoder`: conv_in, the mid block, the up levels (one resnet more), GroupNorm, SiLU, conv_out."""

  block_out_channels: Sequence[int]
  layers_per_block: int
  out_channels: int
  groups: int
  act_fn: str
  add_attention: bool = True
  dtype: Any = None

  def setup(self):
    channels, levels = self.block_out_channels[::-1], len(self.block_out_channels)
    self.conv_in = _conv(channels[0], 3, self.dtype)
    self.mid_block = MidBlock(channels[0], self.groups, self.act_fn, self.add_attention, self.dtype)
    self.up_blocks = [ResnetLevel(channels[max(i - 1, 0)], channels[i], self.layers_per_block + 1, self.groups,
                                  self.act_fn, "up" if i < levels - 1 else "", self.dtype) for i in range(levels)]
    self.conv_norm_out = _group_norm(self.groups, self.dtype)
    self.conv_out = _conv(self.out_channels, 3, self.dtype)

  def __call__(self, z):
    h = self.mid_block(self.conv_in(z))
    for block in self.up_blocks:
      h = block(h)
    return self.conv_out(nn.silu(self.conv_norm_out(h)))


class AutoencoderKL(nn.Module):
  """diffusers' `AutoencoderKL` (the fields of its config.json); `encode` and `decode` are its two halves.

  `dtype` is the compute dtype (None: float32); parameters stay float32, and so do the outputs.
  """

  in_channels: int = 3
  out_channels: int = 3
  block_out_channels: Sequence[int] = (64,)
  layers_per_block: int = 1
  latent_channels: int = 4
  norm_num_groups: int = 32
  act_fn: str = "silu"
  mid_block_add_attention: bool = True
  use_quant_conv: bool = True
  use_post_quant_conv: bool = True
  dtype: Any = None

  def setup(self):
    common = dict(block_out_channels=tuple(self.block_out_channels), layers_per_block=self.layers_per_block,
                  groups=self.norm_num_groups, act_fn=self.act_fn, add_attention=self.mid_block_add_attention,
                  dtype=self.dtype)
    self.encoder = Encoder(out_channels=2 * self.latent_channels, **common)
    self.decoder = Decoder(out_channels=self.out_channels, **common)
    if self.use_quant_conv:
      self.quant_conv = _conv(2 * self.latent_channels, 1, self.dtype)
    if self.use_post_quant_conv:
      self.post_quant_conv = _conv(self.latent_channels, 1, self.dtype)

  @property
  def downsample_factor(self):
    """Image side / latent side: one 2x downsampling between consecutive levels."""
    return 2 ** (len(self.block_out_channels) - 1)

  def encode(self, x):
    """NHWC images in [-1, 1] -> `(mean, logvar)` of the posterior (diffusers' `latent_dist`), logvar in [-30, 20]."""
    moments = self.encoder(x)
    if self.use_quant_conv:
      moments = self.quant_conv(moments)
    mean, logvar = jnp.split(moments.astype(jnp.float32), 2, axis=-1)
    return mean, jnp.clip(logvar, -30.0, 20.0)

  def decode(self, z):
    """NHWC latents (unscaled) -> NHWC images."""
    if self.use_post_quant_conv:
      z = self.post_quant_conv(z)
    return self.decoder(z).astype(jnp.float32)

  def __call__(self, x, labels=None, train=False):
    """The posterior's mean decoded (used to create every variable); `labels` and `train`, which a score
    network's caller passes (`models.ScoreModel`), are ignored."""
    del labels, train
    return self.decode(self.encode(x)[0])


@register_model("autoencoder_kl")
def autoencoder_from_config(config):
  """The `AutoencoderKL` that `training.objective = "autoencoder"` trains: `model.ae_channels` (diffusers'
  `block_out_channels`: one level each, 2x downsampling between levels), `model.ae_layers_per_block`,
  `model.latent_channels`, `model.ae_norm_groups`, `model.ae_attention` (the mid block's), SiLU, quant convs;
  `data.num_channels` in and out."""
  model = config.model
  if config.training.objective != "autoencoder":
    raise ValueError(f"model.name='autoencoder_kl' is trained by training.objective='autoencoder' (it takes no "
                     f"noise level), not {config.training.objective!r}")
  channels = tuple(model.ae_channels)
  bad = [c for c in channels if c <= 0 or c % model.ae_norm_groups]
  if not channels or bad:
    raise ValueError(f"model.ae_channels={channels} must be positive multiples of model.ae_norm_groups="
                     f"{model.ae_norm_groups} (one per level)")
  if model.ae_layers_per_block < 1 or model.latent_channels < 1:
    raise ValueError(f"model.ae_layers_per_block={model.ae_layers_per_block} and model.latent_channels="
                     f"{model.latent_channels} must be at least 1")
  return AutoencoderKL(in_channels=config.data.num_channels, out_channels=config.data.num_channels,
                       block_out_channels=channels, layers_per_block=model.ae_layers_per_block,
                       latent_channels=model.latent_channels, norm_num_groups=model.ae_norm_groups,
                       mid_block_add_attention=model.ae_attention, dtype=compute_dtype(model.dtype))


def from_diffusers_config(config, dtype=None):
  """The `AutoencoderKL` of a diffusers `AutoencoderKL` config.json (a dict; its defaults for missing keys).

  Block types other than `DownEncoderBlock2D` / `UpDecoderBlock2D` are refused; `sample_size`, the scaling
  and shift factors and the pipelines' hints (`force_upcast`, `latents_mean`, ...) do not shape the network.
  """
  config = {**DIFFUSERS_DEFAULTS, **config}
  if config.get("_class_name", "AutoencoderKL") != "AutoencoderKL":
    raise ValueError(f"{config['_class_name']} is not an AutoencoderKL")
  levels = len(config["block_out_channels"])
  for key, known in (("down_block_types", DOWN_BLOCK_TYPES), ("up_block_types", UP_BLOCK_TYPES)):
    unknown = [name for name in config[key] if name not in known]
    if unknown or len(config[key]) != levels:
      raise ValueError(f"{key}={list(config[key])}: score_jax's AutoencoderKL reads {levels} {' / '.join(known)} "
                       f"blocks (one per block_out_channels entry)")
  if config["act_fn"] not in ACTIVATIONS:
    raise choice_error("act_fn", config["act_fn"], ACTIVATIONS)
  return AutoencoderKL(
      in_channels=config["in_channels"], out_channels=config["out_channels"],
      block_out_channels=tuple(config["block_out_channels"]), layers_per_block=config["layers_per_block"],
      latent_channels=config["latent_channels"], norm_num_groups=config["norm_num_groups"], act_fn=config["act_fn"],
      mid_block_add_attention=config["mid_block_add_attention"], use_quant_conv=config["use_quant_conv"],
      use_post_quant_conv=config["use_post_quant_conv"], dtype=dtype)
