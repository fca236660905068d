"""NCSN++ and DDPM++ (Song et al. 2021, Sec. 4 and App. H): one U-Net with architecture options.

DDPM++ is this network with `fir=False`, `progressive_input='none'` and positional
embeddings; NCSN++ adds FIR resampling, input/output pyramids and Fourier features.
Sub-modules are created in the JAX original's order, so parameter names match its
checkpoints (and, through `score_jax.convert`, the PyTorch port's).
"""

import math
from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from score_jax.networks import layers
from score_jax.networks.registry import compute_dtype, register_model
from score_jax.utils import choice_error

_PROGRESSIVE = ("none", "output_skip", "residual")
_PROGRESSIVE_INPUT = ("none", "input_skip", "residual")
_RESBLOCKS = ("ddpm", "biggan")
_EMBEDDINGS = ("fourier", "positional")


class NCSNpp(nn.Module):
  """The NCSN++ / DDPM++ U-Net: `(x (B,H,W,C), labels (B,)) -> (B,H,W,C)`.

  `labels` are the noise conditioning the parameterization supplies (`score_jax.parameterization`):
  Fourier features embed log(labels), positional ones the labels themselves. With `num_classes`, the
  `(B,)` int `class_labels` (None: the null class) add an embedding to the time embedding. A plain network: input
  scaling and the meaning of the output belong to the parameterization.
  """

  nf: int = 128
  ch_mult: Sequence[int] = (1, 2, 2, 2)
  num_res_blocks: int = 4
  attn_resolutions: Sequence[int] = (16,)
  dropout: float = 0.1
  resamp_with_conv: bool = True
  conditional: bool = True
  fir: bool = True
  fir_kernel: Sequence[int] = (1, 3, 3, 1)
  skip_rescale: bool = True
  resblock_type: str = "biggan"
  progressive: str = "none"
  progressive_input: str = "residual"
  progressive_combine: str = "sum"
  embedding_type: str = "fourier"
  fourier_scale: float = 16.0
  init_scale: float = 0.0
  nonlinearity: str = "swish"
  num_classes: int = 0  # class-conditional (`model.num_classes`): a class embedding added to the time embedding
  remat: bool = False  # gradient checkpointing of the residual blocks (`model.remat`): less memory, more compute
  dtype: Any = None  # compute dtype (`model.dtype`; None: float32); parameters stay float32

  def _resnet_block(self, **kwargs):
    common = dict(act=layers.get_act(self.nonlinearity), dropout=self.dropout, init_scale=self.init_scale,
                  skip_rescale=self.skip_rescale, dtype=self.dtype)
    if self.resblock_type == "ddpm":
      return self._block_class(layers.ResnetBlockDDPMpp)(**common, **kwargs)
    return self._block_class(layers.ResnetBlockBigGANpp)(**common, fir=self.fir, fir_kernel=self.fir_kernel, **kwargs)

  def _block_class(self, block_cls):
    return layers.rematerialized(block_cls) if self.remat else block_cls

  def _attn_block(self):
    return layers.AttnBlockpp(init_scale=self.init_scale, skip_rescale=self.skip_rescale, dtype=self.dtype)

  def _merge(self, a, b):
    return (a + b) / math.sqrt(2.0) if self.skip_rescale else a + b

  def _embed(self, labels, class_labels, interval_labels=None):
    """Time (and class) embedding (B, 4nf), or None for an unconditional network."""
    if self.embedding_type == "fourier":
      temb = layers.GaussianFourierProjection(self.nf, self.fourier_scale)(jnp.log(labels))
    else:
      temb = layers.get_timestep_embedding(labels, self.nf)
    if not self.conditional:
      return layers.add_interval_embedding(layers.add_class_embedding(None, class_labels, self.num_classes),
                                           interval_labels)
    act = layers.get_act(self.nonlinearity)
    temb = layers.dense(4 * self.nf, self.dtype)(temb)  # the embedding itself is float32
    temb = layers.dense(4 * self.nf, self.dtype)(act(temb))
    temb = layers.add_class_embedding(temb, class_labels, self.num_classes)
    return layers.add_interval_embedding(temb, interval_labels, self.dtype)  # a flow map's second time

  def _encode(self, x, temb, train):
    """Encoder; returns the skip stack (its last entry feeds the middle block)."""
    input_pyramid = x
    hs = [layers.conv3x3(self.nf, dtype=self.dtype)(x)]
    for level, mult in enumerate(self.ch_mult):
      for _ in range(self.num_res_blocks):
        h = self._resnet_block(out_ch=self.nf * mult)(hs[-1], temb, train)
        if h.shape[1] in self.attn_resolutions:
          h = self._attn_block()(h)
        hs.append(h)
      if level == len(self.ch_mult) - 1:
        break
      if self.resblock_type == "ddpm":
        h = layers.Downsample(with_conv=self.resamp_with_conv, fir=self.fir, fir_kernel=self.fir_kernel,
                              dtype=self.dtype)(hs[-1])
      else:
        h = self._resnet_block(down=True)(hs[-1], temb, train)
      if self.progressive_input == "input_skip":
        input_pyramid = layers.Downsample(fir=self.fir, fir_kernel=self.fir_kernel, dtype=self.dtype)(input_pyramid)
        h = layers.Combine(method=self.progressive_combine, dtype=self.dtype)(input_pyramid, h)
      elif self.progressive_input == "residual":
        input_pyramid = layers.Downsample(out_ch=h.shape[-1], with_conv=True, fir=self.fir,
                                          fir_kernel=self.fir_kernel, dtype=self.dtype)(input_pyramid)
        h = input_pyramid = self._merge(input_pyramid, h)
      hs.append(h)
    return hs

  def _output_head(self, h, out_ch, bias=True, init_scale=None):
    act = layers.get_act(self.nonlinearity)
    h = act(layers.group_norm(h.shape[-1], dtype=self.dtype)(h))
    init_scale = self.init_scale if init_scale is None else init_scale
    return layers.conv3x3(out_ch, bias=bias, init_scale=init_scale, dtype=self.dtype)(h)

  def _decode(self, h, hs, temb, train, num_channels):
    """Decoder with the output pyramid; consumes the skip stack `hs`."""
    pyramid = None
    for level in reversed(range(len(self.ch_mult))):
      for _ in range(self.num_res_blocks + 1):
        h = self._resnet_block(out_ch=self.nf * self.ch_mult[level])(jnp.concatenate([h, hs.pop()], -1), temb,
                                                                      train)
      if h.shape[1] in self.attn_resolutions:
        h = self._attn_block()(h)
      coarsest = level == len(self.ch_mult) - 1
      if self.progressive == "output_skip":
        if not coarsest:
          pyramid = layers.Upsample(fir=self.fir, fir_kernel=self.fir_kernel, dtype=self.dtype)(pyramid)
        pyramid_h = self._output_head(h, num_channels)
        pyramid = pyramid_h if coarsest else pyramid + pyramid_h
      elif self.progressive == "residual":
        if coarsest:
          pyramid = self._output_head(h, h.shape[-1], init_scale=1.0)
        else:
          pyramid = layers.Upsample(out_ch=h.shape[-1], with_conv=True, fir=self.fir,
                                    fir_kernel=self.fir_kernel, dtype=self.dtype)(pyramid)
          h = pyramid = self._merge(pyramid, h)
      if level != 0:
        if self.resblock_type == "ddpm":
          h = layers.Upsample(with_conv=self.resamp_with_conv, fir=self.fir, fir_kernel=self.fir_kernel,
                              dtype=self.dtype)(h)
        else:
          h = self._resnet_block(up=True)(h, temb, train)
    assert not hs
    if self.progressive == "output_skip":
      return pyramid
    return self._output_head(h, num_channels)

  @nn.compact
  def __call__(self, x, labels, train=False, class_labels=None, interval_labels=None):
    for key, value, choices in [("progressive", self.progressive, _PROGRESSIVE),
                                ("progressive_input", self.progressive_input, _PROGRESSIVE_INPUT),
                                ("resblock_type", self.resblock_type, _RESBLOCKS),
                                ("embedding_type", self.embedding_type, _EMBEDDINGS)]:
      if value not in choices:
        raise choice_error(f"model.{key}", value, choices)
    temb = self._embed(labels, class_labels, interval_labels)
    hs = self._encode(x, temb, train)
    h = self._resnet_block()(hs[-1], temb, train)
    h = self._attn_block()(h)
    h = self._resnet_block()(h, temb, train)
    return self._decode(h, hs, temb, train, x.shape[-1])


@register_model("ncsnpp")
def build_ncsnpp(config):
  """NCSN++ / DDPM++ from `config.model` (+ `training.continuous`)."""
  m = config.model
  if m.embedding_type.lower() == "fourier" and not config.training.continuous:
    raise ValueError("model.embedding_type='fourier' needs training.continuous=True (the reference asserts it)")
  return NCSNpp(
      nf=m.nf, ch_mult=tuple(m.ch_mult), num_res_blocks=m.num_res_blocks,
      attn_resolutions=tuple(m.attn_resolutions), dropout=m.dropout, resamp_with_conv=m.resamp_with_conv,
      conditional=m.conditional, fir=m.fir, fir_kernel=tuple(m.fir_kernel), skip_rescale=m.skip_rescale,
      resblock_type=m.resblock_type.lower(), progressive=m.progressive.lower(),
      progressive_input=m.progressive_input.lower(), progressive_combine=m.progressive_combine.lower(),
      embedding_type=m.embedding_type.lower(), fourier_scale=m.fourier_scale, init_scale=m.init_scale,
      nonlinearity=m.nonlinearity, num_classes=m.num_classes, remat=m.remat,
      dtype=compute_dtype(config.model.dtype))

