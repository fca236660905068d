"""NCSNv2 (Song & Ermon 2020) and NCSN (Song & Ermon 2019): RefineNet score networks.

The topology is the JAX original's (in `ncsnv2_64` the third RefineBlock has 2nf features, the PyTorch
port's nf: docs/differences.md#ncsnv2-64-width). Multi-scale fusion upsamples with `jax.image.resize`
(half-pixel bilinear; the port uses align_corners=True: docs/differences.md#ncsnv2-resize). NCSN v1 cannot
be built in either reference (docs/differences.md#ncsn-v1-builds); here it is NCSNv2's 32-64 px topology
with conditional InstanceNorm++ indexed by the noise label, one class per
noise scale (`model.num_scales`), and average-pooling in its CRP blocks.
"""

import functools
from typing import Any, Callable, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from score_jax.networks import layers, normalization
from score_jax.networks.registry import compute_dtype, register_model


def ncsn_conv(out_ch, kernel=3, bias=True, dilation=1, init_scale=1.0, dtype=None):
  """The reference's `ncsn_conv{1x1,3x3}`: PyTorch's default uniform fan-in init, for kernel and bias."""
  kernel_init = nn.initializers.variance_scaling(init_scale / 3, "fan_in", "uniform")
  return nn.Conv(out_ch, (kernel, kernel), padding="SAME", use_bias=bias, kernel_dilation=(dilation, dilation),
                 kernel_init=kernel_init, dtype=dtype,
                 bias_init=lambda key, shape, dtype=jnp.float32: kernel_init(key, (kernel, kernel, 1, shape[0]), dtype)[0, 0, 0])


def _normalize(norm, h, y):
  return norm()(h) if y is None else norm()(h, y)


class ConvMeanPool(nn.Module):
  """Convolution, then 2x2 mean pooling."""

  output_dim: int
  kernel_size: int = 3
  dtype: Any = None  # compute dtype (`model.dtype`; None: float32)

  @nn.compact
  def __call__(self, x):
    h = nn.Conv(self.output_dim, (self.kernel_size, self.kernel_size), padding="SAME", dtype=self.dtype)(x)
    return (h[:, ::2, ::2] + h[:, 1::2, ::2] + h[:, ::2, 1::2] + h[:, 1::2, 1::2]) / 4.0


class ResidualBlock(nn.Module):
  """Pre-activation residual block; `resample='down'` halves the resolution unless dilated."""

  output_dim: int
  norm: Callable
  resample: Optional[str] = None
  act: Callable = nn.elu
  dilation: int = 1
  dtype: Any = None  # compute dtype (`model.dtype`; None: float32)

  @nn.compact
  def __call__(self, x, y=None):
    h = self.act(_normalize(self.norm, x, y))
    if self.resample == "down":
      h = ncsn_conv(x.shape[-1], dilation=self.dilation, dtype=self.dtype)(h)
      h = self.act(_normalize(self.norm, h, y))
      if self.dilation > 1:
        h = ncsn_conv(self.output_dim, dilation=self.dilation, dtype=self.dtype)(h)
        shortcut = ncsn_conv(self.output_dim, dilation=self.dilation, dtype=self.dtype)(x)
      else:
        h = ConvMeanPool(self.output_dim, dtype=self.dtype)(h)
        shortcut = ConvMeanPool(self.output_dim, kernel_size=1, dtype=self.dtype)(x)
      return h + shortcut
    if self.output_dim == x.shape[-1]:
      shortcut = x
    else:
      shortcut = ncsn_conv(self.output_dim, kernel=3 if self.dilation > 1 else 1, dilation=self.dilation, dtype=self.dtype)(x)
    h = ncsn_conv(self.output_dim, dilation=self.dilation, dtype=self.dtype)(h)
    h = self.act(_normalize(self.norm, h, y))
    return ncsn_conv(self.output_dim, dilation=self.dilation, dtype=self.dtype)(h) + shortcut


class RCUBlock(nn.Module):
  """Residual conv units: `n_blocks` x (`n_stages` x [(norm) act conv]) + skip."""

  features: int
  n_blocks: int
  n_stages: int
  act: Callable = nn.relu
  norm: Optional[Callable] = None  # conditional blocks normalise first
  dtype: Any = None  # compute dtype (`model.dtype`; None: float32)

  @nn.compact
  def __call__(self, x, y=None):
    for _ in range(self.n_blocks):
      residual = x
      for _ in range(self.n_stages):
        x = x if y is None else _normalize(self.norm, x, y)
        x = ncsn_conv(self.features, bias=False, dtype=self.dtype)(self.act(x))
      x = x + residual
    return x


class MSFBlock(nn.Module):
  """Multi-resolution fusion: conv each input, resize to `shape`, sum."""

  shape: Sequence[int]
  features: int
  interpolation: str = "bilinear"
  norm: Optional[Callable] = None
  dtype: Any = None  # compute dtype (`model.dtype`; None: float32)

  @nn.compact
  def __call__(self, xs, y=None):
    method = {"bilinear": "bilinear", "nearest_neighbor": "nearest"}[self.interpolation]
    total = 0.0
    for x in xs:
      h = x if y is None else _normalize(self.norm, x, y)
      h = ncsn_conv(self.features, dtype=self.dtype)(h)
      total = total + jax.image.resize(h, (h.shape[0], *self.shape, self.features), method)
    return total


class CRPBlock(nn.Module):
  """Chained residual pooling: repeatedly pool (max; mean if conditional), conv, and add."""

  features: int
  n_stages: int = 2
  act: Callable = nn.relu
  norm: Optional[Callable] = None
  dtype: Any = None  # compute dtype (`model.dtype`; None: float32)

  @nn.compact
  def __call__(self, x, y=None):
    x = path = self.act(x)
    for _ in range(self.n_stages):
      if y is None:
        path = nn.max_pool(path, (5, 5), strides=(1, 1), padding="SAME")
      else:
        path = nn.avg_pool(_normalize(self.norm, path, y), (5, 5), strides=(1, 1), padding="SAME")
      path = ncsn_conv(self.features, bias=False, dtype=self.dtype)(path)
      x = path + x
    return x


class RefineBlock(nn.Module):
  """RefineNet block: RCU per input, fusion to `output_shape` (unless `start`), CRP, output RCU."""

  output_shape: Sequence[int]
  features: int
  act: Callable = nn.relu
  interpolation: str = "bilinear"
  start: bool = False
  end: bool = False
  norm: Optional[Callable] = None
  dtype: Any = None  # compute dtype (`model.dtype`; None: float32)

  @nn.compact
  def __call__(self, xs, y=None):
    hs = [RCUBlock(x.shape[-1], n_blocks=2, n_stages=2, act=self.act, norm=self.norm, dtype=self.dtype)(x, y)
          for x in xs]
    if self.start:
      h = hs[0]
    else:
      h = MSFBlock(self.output_shape, self.features, self.interpolation, norm=self.norm, dtype=self.dtype)(hs, y)
    h = CRPBlock(self.features, act=self.act, norm=self.norm, dtype=self.dtype)(h, y)
    return RCUBlock(self.features, n_blocks=3 if self.end else 1, n_stages=2, act=self.act, norm=self.norm,
                    dtype=self.dtype)(h, y)


# (output_dim / nf, resample, dilation) for each residual block of the backbone; a stage is two blocks,
# and the output of each stage feeds a RefineBlock.
_STAGES = {
    "ncsnv2_64": [(1, None, 1), (2, "down", 1), (2, "down", 2), (2, "down", 4)],
    "ncsnv2_128": [(1, None, 1), (2, "down", 1), (2, "down", 1), (4, "down", 2), (4, "down", 4)],
    "ncsnv2_256": [(1, None, 1), (2, "down", 1), (2, "down", 1), (2, "down", 1), (4, "down", 2), (4, "down", 4)],
}
# RefineBlock features / nf, from the coarsest stage to the finest.
_REFINE = {"ncsnv2_64": [2, 2, 2, 1], "ncsnv2_128": [4, 2, 2, 1, 1], "ncsnv2_256": [4, 2, 2, 2, 1, 1]}


class NCSNv2(nn.Module):
  """`(x (B,H,W,C), labels (B,) int sigma indices) -> (B,H,W,C)`; NCSN v1 when `conditional`."""

  architecture: str = "ncsnv2_64"
  nf: int = 128
  nonlinearity: str = "elu"
  normalization: str = "InstanceNorm++"
  interpolation: str = "bilinear"
  conditional: bool = False  # NCSN v1: noise-conditional normalisation
  num_scales: int = 232  # noise levels: the classes of NCSN v1's conditional normalisation
  dtype: Any = None  # compute dtype (`model.dtype`; None: float32)

  @nn.compact
  def __call__(self, x, labels, train=False):
    del train  # no dropout
    act = layers.get_act(self.nonlinearity)
    norm = normalization.get_normalization(self.normalization, self.conditional, self.num_scales)
    y = labels.astype(jnp.int32) if self.conditional else None
    h = ncsn_conv(self.nf, dtype=self.dtype)(x)
    stages = []
    for mult, resample, dilation in _STAGES[self.architecture]:
      h = ResidualBlock(mult * self.nf, norm, resample, act, dilation, dtype=self.dtype)(h, y)
      h = ResidualBlock(mult * self.nf, norm, None, act, dilation, dtype=self.dtype)(h, y)
      stages.append(h)
    refine = functools.partial(RefineBlock, act=act, interpolation=self.interpolation,
                               norm=norm if self.conditional else None, dtype=self.dtype)
    features = _REFINE[self.architecture]
    h = refine(stages[-1].shape[1:3], features[0] * self.nf, start=True)([stages[-1]], y)
    for i, skip in enumerate(reversed(stages[:-1]), start=1):
      h = refine(skip.shape[1:3], features[i] * self.nf, end=i == len(stages) - 1)([skip, h], y)
    h = act(_normalize(norm, h, y))
    return ncsn_conv(x.shape[-1], dtype=self.dtype)(h)


def _builder(architecture, conditional=False):
  def build(config):
    m = config.model
    return NCSNv2(architecture=architecture, nf=m.nf, nonlinearity=m.nonlinearity, normalization=m.normalization,
                  interpolation=m.interpolation, conditional=conditional,
                  num_scales=m.num_scales, dtype=compute_dtype(config.model.dtype))
  return build


build_ncsnv2_64 = register_model("ncsnv2_64")(_builder("ncsnv2_64"))
build_ncsnv2_128 = register_model("ncsnv2_128")(_builder("ncsnv2_128"))
build_ncsnv2_256 = register_model("ncsnv2_256")(_builder("ncsnv2_256"))
build_ncsn = register_model("ncsn")(_builder("ncsnv2_64", conditional=True))

