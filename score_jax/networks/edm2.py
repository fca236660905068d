"""EDM2's magnitude-preserving U-Net (Karras et al. 2024, "Analyzing and improving the training dynamics of
diffusion models", config G), written from the paper.

Every layer keeps the expected magnitude of its activations and weights at one:

* `MPConv`: a convolution (or dense layer) without bias whose weight w is used as w / ||w_i|| sqrt(fan_in)
  per output channel i (unit norm per fan-in element), times an optional gain; training also writes the
  normalised weight back after every optimiser step (forced weight normalisation:
  `project_parameters`), so the stored weights stay at unit norm and the effective learning rate stays fixed.
* `mp_silu` (SiLU / 0.596: unit variance for unit-variance Gaussian input), `mp_sum` (the blend
  ((1 - t) a + t b) / sqrt((1 - t)^2 + t^2)) and `mp_cat` (concatenation with each part rescaled so the
  result keeps unit variance and b takes share t).
* pixel normalisation of the encoder's activations (each pixel's channel vector to unit RMS) in place of
  group normalisation; cosine attention (queries, keys and values pixel-normalised per head).
* The noise level enters as fixed random Fourier features of c_noise (the labels the `edm` parameterization
  supplies, ln(sigma) / 4), the class as its scaled one-hot vector, each through an `MPConv`, blended by
  `mp_sum` and passed through `mp_silu`; each block scales its residual branch by 1 + its projection, with a
  learned gain that starts at 0. The output layer's learned gain also starts at 0.
* A constant channel of ones joins the input; activations are clipped to +-256.

Widths and depths: `model.nf` channels times `model.ch_mult` per resolution, `model.num_res_blocks` blocks
per encoder level (one more per decoder level), self-attention at `model.attn_resolutions`, 64 channels per
attention head; `model.dropout` in the residual branch. `model.dtype` computes in bfloat16 (the weights are
normalised in float32); `model.remat` recomputes the blocks in the backward pass.
"""

import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from score_jax.networks import layers
from score_jax.networks.registry import compute_dtype, register_model

WEIGHT = "mp_weight"  # the name of every magnitude-preserving weight (`project_parameters` finds them by it)
EPS = 1e-4            # of the weight and pixel normalisations
CLIP = 256.0          # activation clipping


def normalize(x, axis, eps=EPS):
  """x / (eps + ||x|| / sqrt(n)) over `axis` (n its size): unit RMS."""
  x32 = x.astype(jnp.float32)
  n = math.prod(x.shape[a] for a in ((axis,) if isinstance(axis, int) else axis))
  norm = jnp.sqrt(jnp.sum(jnp.square(x32), axis=axis, keepdims=True))
  return (x32 / (eps + norm / math.sqrt(n))).astype(x.dtype)


def mp_silu(x):
  return nn.silu(x) / 0.596


def mp_sum(a, b, t=0.5):
  return ((1 - t) * a + t * b) / math.sqrt((1 - t) ** 2 + t**2)


def mp_cat(a, b, t=0.5):
  """[a, b] along channels with b's share t, at unit variance for unit-variance parts."""
  na, nb = a.shape[-1], b.shape[-1]
  scale = math.sqrt((na + nb) / ((1 - t) ** 2 + t**2))
  return jnp.concatenate([a * (scale / math.sqrt(na) * (1 - t)), b * (scale / math.sqrt(nb) * t)], axis=-1)


def _fan_in_axes(weight):
  return tuple(range(weight.ndim - 1))  # every axis but the output channels (flax's HWIO / IO layouts)


def project_parameters(params):
  """`params` with every magnitude-preserving weight re-normalised (forced weight normalisation, applied after
  each optimiser step by the training step)."""
  def project(path, leaf):
    if getattr(path[-1], "key", None) == WEIGHT:
      return normalize(leaf, _fan_in_axes(leaf))
    return leaf
  return jax.tree_util.tree_map_with_path(project, params)


class MPConv(nn.Module):
  """A magnitude-preserving convolution (`kernel` > 0, NHWC) or dense layer (`kernel` = 0): no bias, weights
  N(0, 1) at init, used as normalise(w) * gain / sqrt(fan_in)."""

  features: int
  kernel: int = 3
  dtype: Any = None

  @nn.compact
  def __call__(self, x, gain=1.0):
    shape = (self.kernel, self.kernel, x.shape[-1], self.features) if self.kernel else (x.shape[-1], self.features)
    weight = self.param(WEIGHT, nn.initializers.normal(1.0), shape, jnp.float32)
    fan_in = math.prod(shape[:-1])
    weight = normalize(weight, _fan_in_axes(weight)) * (gain / math.sqrt(fan_in))
    dtype = self.dtype or x.dtype
    weight, x = weight.astype(dtype), x.astype(dtype)
    if not self.kernel:
      return x @ weight
    return jax.lax.conv_general_dilated(x, weight, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))


def fourier_features(x, channels):
  """sqrt(2) cos(2 pi (f x + phi)), `(B,) -> (B, channels)`, f ~ N(0, 1) and phi ~ U[0, 1) fixed for the
  architecture (the same in every run): unit variance."""
  draws = np.random.default_rng(0)
  frequencies = jnp.asarray(draws.standard_normal(channels), jnp.float32)
  phases = jnp.asarray(draws.uniform(size=channels), jnp.float32)
  return math.sqrt(2.0) * jnp.cos(2 * math.pi * (x.astype(jnp.float32)[:, None] * frequencies + phases))


def resample(x, mode):
  """2x average pooling ("down") or nearest-neighbour upsampling ("up"): EDM2's [1, 1] box filter."""
  if mode == "down":
    b, h, w, c = x.shape
    return x.reshape(b, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))
  if mode == "up":
    return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
  return x


class Block(nn.Module):
  """An encoder ("enc") or decoder ("dec") block: optional resampling, the residual branch conv -> x (1 + emb)
  -> conv blended with the input by `mp_sum` (t = 0.3), optional cosine self-attention blended likewise."""

  out_channels: int
  flavor: str
  resample_mode: str = "keep"
  attention: bool = False
  channels_per_head: int = 64
  dropout: float = 0.0
  res_balance: float = 0.3
  attn_balance: float = 0.3
  dtype: Any = None

  @nn.compact
  def __call__(self, x, emb, train):
    conv = lambda features, kernel, name: MPConv(features, kernel, dtype=self.dtype, name=name)  # noqa: E731
    x = resample(x, self.resample_mode)
    needs_skip = x.shape[-1] != self.out_channels
    if self.flavor == "enc":
      if needs_skip:
        x = conv(self.out_channels, 1, "conv_skip")(x)
      x = normalize(x, axis=-1)  # pixel normalisation
    y = conv(self.out_channels, 3, "conv_res0")(mp_silu(x))
    emb_gain = self.param("emb_gain", nn.initializers.zeros, (), jnp.float32)
    scale = conv(self.out_channels, 0, "emb_linear")(emb, gain=emb_gain) + 1
    y = mp_silu(y * scale[:, None, None, :].astype(y.dtype))
    if self.dropout:
      y = nn.Dropout(self.dropout, deterministic=not train)(y)
    y = conv(self.out_channels, 3, "conv_res1")(y)
    if self.flavor == "dec" and needs_skip:
      x = conv(self.out_channels, 1, "conv_skip")(x)
    x = mp_sum(x.astype(y.dtype), y, self.res_balance)
    if self.attention:
      x = mp_sum(x, self._attention(x, conv), self.attn_balance)
    return jnp.clip(x, -CLIP, CLIP)

  def _attention(self, x, conv):
    b, h, w, c = x.shape
    heads = max(c // self.channels_per_head, 1)  # narrow (test) networks: one head
    qkv = conv(3 * c, 1, "attn_qkv")(x).reshape(b, h * w, heads, 3, c // heads)
    q, k, v = (normalize(qkv[:, :, :, i], axis=-1) for i in range(3))  # cosine attention
    logits = jnp.einsum("bqhc,bkhc->bhqk", q, k).astype(jnp.float32) / math.sqrt(c // heads)
    y = jnp.einsum("bhqk,bkhc->bqhc", jax.nn.softmax(logits, axis=-1).astype(v.dtype), v)
    return conv(c, 1, "attn_proj")(y.reshape(b, h, w, c))


class EDM2UNet(nn.Module):
  """`(x (B,H,W,C), labels (B,)) -> (B,H,W,C)`: EDM2's U-Net; `labels` are the noise conditioning c_noise
  (the `edm` parameterization's ln(sigma) / 4), `class_labels` `(B,)` ints of a class-conditional model
  (`num_classes`; the null class `num_classes` or None: no class)."""

  nf: int = 192
  ch_mult: Sequence[int] = (1, 2, 3, 4)
  num_res_blocks: int = 3
  attn_resolutions: Sequence[int] = (16, 8)
  dropout: float = 0.0
  num_classes: int = 0
  label_balance: float = 0.5
  concat_balance: float = 0.5
  remat: bool = False
  dtype: Any = None

  def _block(self, out_channels, flavor, **options):
    block_cls = layers.rematerialized(Block) if self.remat else Block
    return block_cls(out_channels, flavor, dropout=self.dropout, dtype=self.dtype, **options)

  def _embedding(self, labels, class_labels, batch, interval_labels=None):
    emb_channels = self.nf * max(self.ch_mult)
    emb = MPConv(emb_channels, 0, name="emb_noise")(fourier_features(labels, self.nf))
    if self.num_classes:
      classes = jnp.full((batch,), self.num_classes) if class_labels is None else jnp.asarray(class_labels)
      one_hot = jax.nn.one_hot(classes, self.num_classes) * math.sqrt(self.num_classes)  # the null class: zeros
      emb = mp_sum(emb, MPConv(emb_channels, 0, name="emb_label")(one_hot), self.label_balance)
    # A flow map's second time: added (zero at initialisation), not blended, so a fresh two-time network is this one.
    return mp_silu(layers.add_interval_embedding(emb, interval_labels))

  @nn.compact
  def __call__(self, x, labels, train=False, class_labels=None, interval_labels=None):
    emb = self._embedding(labels, class_labels, x.shape[0], interval_labels)
    out_channels = x.shape[-1]
    x = jnp.concatenate([x, jnp.ones_like(x[..., :1])], axis=-1)
    skips = []
    for level, mult in enumerate(self.ch_mult):
      channels, res = self.nf * mult, x.shape[1] if level == 0 else x.shape[1] // 2
      if level == 0:
        x = MPConv(channels, 3, dtype=self.dtype, name=f"enc_{res}_conv")(x)
      else:
        x = self._block(x.shape[-1], "enc", resample_mode="down", name=f"enc_{res}_down")(x, emb, train)
      skips.append(x)
      for index in range(self.num_res_blocks):
        x = self._block(channels, "enc", attention=res in self.attn_resolutions,
                        name=f"enc_{res}_block{index}")(x, emb, train)
        skips.append(x)
    for level, mult in reversed(list(enumerate(self.ch_mult))):
      channels, res = self.nf * mult, x.shape[1]
      if level == len(self.ch_mult) - 1:
        x = self._block(x.shape[-1], "dec", attention=True, name=f"dec_{res}_in0")(x, emb, train)
        x = self._block(x.shape[-1], "dec", name=f"dec_{res}_in1")(x, emb, train)
      else:  # resampling keeps the channels; the level's first block changes them
        res *= 2
        x = self._block(x.shape[-1], "dec", resample_mode="up", name=f"dec_{res}_up")(x, emb, train)
      for index in range(self.num_res_blocks + 1):
        x = mp_cat(x, skips.pop().astype(x.dtype), self.concat_balance)
        x = self._block(channels, "dec", attention=res in self.attn_resolutions,
                        name=f"dec_{res}_block{index}")(x, emb, train)
    gain = self.param("out_gain", nn.initializers.zeros, (), jnp.float32)
    return MPConv(out_channels, 3, dtype=self.dtype, name="out_conv")(x, gain=gain).astype(jnp.float32)

  project_parameters = staticmethod(project_parameters)


@register_model("edm2")
def build_edm2(config):
  """EDM2's U-Net from `config.model` (`nf`, `ch_mult`, `num_res_blocks`, `attn_resolutions`, `dropout`,
  `num_classes`, `remat`, `dtype`)."""
  m = config.model
  return EDM2UNet(nf=m.nf, ch_mult=tuple(m.ch_mult), num_res_blocks=m.num_res_blocks,
                  attn_resolutions=tuple(m.attn_resolutions), dropout=m.dropout, num_classes=m.num_classes,
                  remat=m.remat, dtype=compute_dtype(config.model.dtype))
