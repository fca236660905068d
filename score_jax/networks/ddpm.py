"""The DDPM U-Net (Ho et al. 2020), as used by the score_sde reference (`model.name = 'ddpm'`)."""

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from score_jax.networks import layers
from score_jax.networks.registry import compute_dtype, register_model


class DDPM(nn.Module):
  """`(x (B,H,W,C), labels (B,)) -> (B,H,W,C)`: a plain network; labels are embedded as positions, and
  with `num_classes` the `(B,)` int `class_labels` (None: the null class) as a learned table."""

  nf: int = 128
  ch_mult: Sequence[int] = (1, 2, 2, 2)
  num_res_blocks: int = 2
  attn_resolutions: Sequence[int] = (16,)
  dropout: float = 0.1
  resamp_with_conv: bool = True
  conditional: bool = True
  nonlinearity: str = "swish"
  attn_per_up_resnet: bool = False  # an attention block after every up resnet at the attention resolutions
  # (diffusers' AttnUpBlock2D layout of Ho et al.'s released models); False: one per up level (score_sde's)
  num_classes: int = 0  # class-conditional (`model.num_classes`): a class embedding added to the time embedding
  remat: bool = False  # gradient checkpointing of the residual blocks (`model.remat`): less memory, more compute
  dtype: Any = None  # compute dtype (`model.dtype`; None: float32); parameters stay float32

  def _resnet_block(self, out_ch=None):
    block_cls = layers.rematerialized(layers.ResnetBlockDDPM) if self.remat else layers.ResnetBlockDDPM
    return block_cls(act=layers.get_act(self.nonlinearity), out_ch=out_ch, dropout=self.dropout, dtype=self.dtype)

  def _embed(self, labels, class_labels, interval_labels=None):
    if not self.conditional:
      return layers.add_interval_embedding(layers.add_class_embedding(None, class_labels, self.num_classes),
                                           interval_labels)
    act = layers.get_act(self.nonlinearity)
    temb = layers.get_timestep_embedding(labels, self.nf)
    temb = layers.dense(4 * self.nf, self.dtype)(temb)  # the embedding itself is float32
    temb = layers.dense(4 * self.nf, self.dtype)(act(temb))
    temb = layers.add_class_embedding(temb, class_labels, self.num_classes)
    return layers.add_interval_embedding(temb, interval_labels, self.dtype)  # a flow map's second time

  def _encode(self, x, temb, train):
    hs = [layers.conv3x3(self.nf, dtype=self.dtype)(x)]
    for level, mult in enumerate(self.ch_mult):
      for _ in range(self.num_res_blocks):
        h = self._resnet_block(self.nf * mult)(hs[-1], temb, train)
        if h.shape[1] in self.attn_resolutions:
          h = layers.AttnBlock(dtype=self.dtype)(h)
        hs.append(h)
      if level != len(self.ch_mult) - 1:
        hs.append(layers.Downsample(with_conv=self.resamp_with_conv, dtype=self.dtype)(hs[-1]))
    return hs

  def _decode(self, h, hs, temb, train):
    for level in reversed(range(len(self.ch_mult))):
      for _ in range(self.num_res_blocks + 1):
        h = self._resnet_block(self.nf * self.ch_mult[level])(jnp.concatenate([h, hs.pop()], -1), temb, train)
        if self.attn_per_up_resnet and h.shape[1] in self.attn_resolutions:
          h = layers.AttnBlock(dtype=self.dtype)(h)
      if not self.attn_per_up_resnet and h.shape[1] in self.attn_resolutions:
        h = layers.AttnBlock(dtype=self.dtype)(h)
      if level != 0:
        h = layers.Upsample(with_conv=self.resamp_with_conv, dtype=self.dtype)(h)
    assert not hs
    return h

  @nn.compact
  def __call__(self, x, labels, train=False, class_labels=None, interval_labels=None):
    temb = self._embed(labels, class_labels, interval_labels)
    hs = self._encode(x, temb, train)
    h = self._resnet_block()(hs[-1], temb, train)
    h = layers.AttnBlock(dtype=self.dtype)(h)
    h = self._resnet_block()(h, temb, train)
    h = self._decode(h, hs, temb, train)
    h = layers.get_act(self.nonlinearity)(layers.group_norm(h.shape[-1], 32, self.dtype)(h))
    return layers.conv3x3(x.shape[-1], init_scale=0.0, dtype=self.dtype)(h)


@register_model("ddpm")
def build_ddpm(config):
  """The DDPM U-Net from `config.model`."""
  m = config.model
  return DDPM(nf=m.nf, ch_mult=tuple(m.ch_mult), num_res_blocks=m.num_res_blocks,
              attn_resolutions=tuple(m.attn_resolutions), dropout=m.dropout, resamp_with_conv=m.resamp_with_conv,
              conditional=m.conditional, nonlinearity=m.nonlinearity,
              attn_per_up_resnet=m.attn_per_up_resnet, num_classes=m.num_classes,
              remat=m.remat, dtype=compute_dtype(config.model.dtype))
