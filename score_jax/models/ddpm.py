"""The DDPM U-Net (Ho et al. 2020), as used by the score_sde reference (`model.name = 'ddpm'`)."""

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from score_jax.models import layers
from score_jax.models.registry import register_model


class DDPM(nn.Module):
  """`(x (B,H,W,C), labels (B,)) -> (B,H,W,C)`; labels are time steps (or sigma indices with `scale_by_sigma`)."""

  nf: int = 128
  ch_mult: Sequence[int] = (1, 2, 2, 2)
  num_res_blocks: int = 2
  attn_resolutions: Sequence[int] = (16,)
  dropout: float = 0.1
  resamp_with_conv: bool = True
  conditional: bool = True
  scale_by_sigma: bool = False
  centered: bool = True
  nonlinearity: str = "swish"
  sigma_min: float = 0.01  # sigma table for `scale_by_sigma` (VE)
  sigma_max: float = 50.0
  num_scales: int = 1000

  def _resnet_block(self, out_ch=None):
    return layers.ResnetBlockDDPM(act=layers.get_act(self.nonlinearity), out_ch=out_ch, dropout=self.dropout)

  def _embed(self, labels):
    if not self.conditional:
      return None
    act = layers.get_act(self.nonlinearity)
    temb = layers.get_timestep_embedding(labels, self.nf)
    temb = nn.Dense(4 * self.nf, kernel_init=layers.default_init())(temb)
    return nn.Dense(4 * self.nf, kernel_init=layers.default_init())(act(temb))

  def _encode(self, x, temb, train):
    hs = [layers.conv3x3(self.nf)(x)]
    for level, mult in enumerate(self.ch_mult):
      for _ in range(self.num_res_blocks):
        h = self._resnet_block(self.nf * mult)(hs[-1], temb, train)
        if h.shape[1] in self.attn_resolutions:
          h = layers.AttnBlock()(h)
        hs.append(h)
      if level != len(self.ch_mult) - 1:
        hs.append(layers.Downsample(with_conv=self.resamp_with_conv)(hs[-1]))
    return hs

  def _decode(self, h, hs, temb, train):
    for level in reversed(range(len(self.ch_mult))):
      for _ in range(self.num_res_blocks + 1):
        h = self._resnet_block(self.nf * self.ch_mult[level])(jnp.concatenate([h, hs.pop()], -1), temb, train)
      if h.shape[1] in self.attn_resolutions:
        h = layers.AttnBlock()(h)
      if level != 0:
        h = layers.Upsample(with_conv=self.resamp_with_conv)(h)
    assert not hs
    return h

  @nn.compact
  def __call__(self, x, labels, train=False):
    temb = self._embed(labels)
    if not self.centered:
      x = 2 * x - 1.0  # data in [0, 1] -> [-1, 1]
    hs = self._encode(x, temb, train)
    h = self._resnet_block()(hs[-1], temb, train)
    h = layers.AttnBlock()(h)
    h = self._resnet_block()(h, temb, train)
    h = self._decode(h, hs, temb, train)
    h = layers.get_act(self.nonlinearity)(layers.group_norm(h.shape[-1], 32)(h))
    h = layers.conv3x3(x.shape[-1], init_scale=0.0)(h)
    if self.scale_by_sigma:
      sigmas = jnp.asarray(layers.sigma_table(self.sigma_min, self.sigma_max, self.num_scales), h.dtype)
      h = h / sigmas[labels.astype(jnp.int32)][:, None, None, None]
    return h


@register_model("ddpm")
def build_ddpm(config):
  """The DDPM U-Net from `config.model` (+ `data.centered`)."""
  m = config.model
  return DDPM(nf=m.nf, ch_mult=tuple(m.ch_mult), num_res_blocks=m.num_res_blocks,
              attn_resolutions=tuple(m.attn_resolutions), dropout=m.dropout, resamp_with_conv=m.resamp_with_conv,
              conditional=m.conditional, scale_by_sigma=m.scale_by_sigma, centered=config.data.centered,
              nonlinearity=m.nonlinearity, sigma_min=m.sigma_min, sigma_max=m.sigma_max, num_scales=m.num_scales)
