"""Layers shared by the score networks (DDPM and NCSN++ blocks).

Compute dtype (`model.dtype`): every block takes `dtype` (None: float32) for its convolutions, dense
layers and normalisation outputs; parameters stay float32, GroupNorm computes its statistics and
attention its softmax in float32, and the parameter-free or hand-written ops (NIN, the FIR
resampling) compute in their input's dtype.

Modules create their sub-modules in the order of the JAX original, so that Flax's
automatic names (`Conv_0`, `GroupNorm_1`, `NIN_3`, ...) match its checkpoints and
the PyTorch port's attribute names (tests/fixtures/REFCHECK.md, "Layout").
"""

import functools
import math
from typing import Any, Callable, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from score_jax.networks import up_or_down_sampling as resample
from score_jax.utils import choice_error

ACTIVATIONS = {
    "elu": nn.elu,
    "relu": nn.relu,
    "lrelu": functools.partial(nn.leaky_relu, negative_slope=0.2),
    "swish": nn.swish,
}


def get_act(name):
  """The activation named by `config.model.nonlinearity`."""
  if name.lower() not in ACTIVATIONS:
    raise choice_error("model.nonlinearity", name, ACTIVATIONS)
  return ACTIVATIONS[name.lower()]


def default_init(scale=1.0):
  """The reference's `variance_scaling(scale, 'fan_avg', 'uniform')`; scale 0 becomes 1e-10
  (docs/differences.md#zero-init-scale)."""
  return nn.initializers.variance_scaling(1e-10 if scale == 0 else scale, "fan_avg", "uniform")


def get_timestep_embedding(timesteps, embedding_dim, max_positions=10000):
  """Sinusoidal embedding of (float) time steps, sin block first (Vaswani et al. 2017; DDPM)."""
  assert timesteps.ndim == 1
  half_dim = embedding_dim // 2
  emb = math.log(max_positions) / (half_dim - 1)
  emb = jnp.exp(jnp.arange(half_dim, dtype=jnp.float32) * -emb)
  emb = timesteps.astype(jnp.float32)[:, None] * emb[None, :]
  emb = jnp.concatenate([jnp.sin(emb), jnp.cos(emb)], axis=1)
  if embedding_dim % 2 == 1:
    emb = jnp.pad(emb, [[0, 0], [0, 1]])
  return emb


class GaussianFourierProjection(nn.Module):
  """Random Fourier features [sin(2 pi x W), cos(2 pi x W)] with W ~ N(0, scale^2), not trained.

  W lives in the `"constants"` collection, so the optimizer never sees it; released
  checkpoints that store it among the parameters are mapped there on import.
  """

  embedding_size: int = 256
  scale: float = 1.0

  @nn.compact
  def __call__(self, x):
    W = self.variable("constants", "W",
                      lambda: self.scale * jax.random.normal(self.make_rng("params"), (self.embedding_size,)))
    x_proj = x[:, None] * W.value[None, :] * 2 * jnp.pi
    return jnp.concatenate([jnp.sin(x_proj), jnp.cos(x_proj)], axis=-1)


def conv3x3(out_ch, stride=1, bias=True, dilation=1, init_scale=1.0, dtype=None):
  """The reference's `ddpm_conv3x3`: SAME padding, `default_init(init_scale)` kernel, zero bias."""
  return nn.Conv(out_ch, (3, 3), strides=(stride, stride), padding="SAME", use_bias=bias,
                 kernel_dilation=(dilation, dilation), kernel_init=default_init(init_scale), dtype=dtype)


def conv1x1(out_ch, stride=1, bias=True, init_scale=1.0, dtype=None):
  """The reference's `ddpm_conv1x1`."""
  return nn.Conv(out_ch, (1, 1), strides=(stride, stride), padding="SAME", use_bias=bias,
                 kernel_init=default_init(init_scale), dtype=dtype)


def dense(features, dtype=None):
  """The time-embedding dense layers: `default_init()` kernel."""
  return nn.Dense(features, kernel_init=default_init(), dtype=dtype)


@functools.cache
def rematerialized(block_cls):
  """`block_cls` under gradient checkpointing (`nn.remat`: its activations are recomputed in the backward
  pass instead of stored), called as `block(x, temb, train)` with `train` static. The class keeps its
  name, so Flax's automatic names, and with them the checkpoints, are those of `block_cls`."""
  remat_cls = nn.remat(block_cls, static_argnums=(3,))
  remat_cls.__name__ = remat_cls.__qualname__ = block_cls.__name__
  return remat_cls


def add_class_embedding(temb, class_labels, num_classes, stddev=1.0):
  """`temb + embedding(class_labels)` for a class-conditional network (`model.num_classes > 0`), else `temb`.

  The table has `num_classes + 1` rows: the last is the null class, which `class_labels=None` means (the
  unconditional model of classifier-free guidance, Ho & Salimans 2022). Call it from a compact method:
  the table is the parameter `class_embedding` of the calling network (float32, like the time embedding),
  initialised N(0, stddev^2).
  """
  if not num_classes:
    if class_labels is not None:
      raise ValueError("class labels were given to an unconditional network (model.num_classes=0)")
    return temb
  if temb is None:
    raise ValueError("model.num_classes > 0 needs a noise-conditional network (model.conditional=True)")
  if class_labels is None:
    class_labels = jnp.full((temb.shape[0],), num_classes, jnp.int32)
  table = nn.Embed(num_classes + 1, temb.shape[-1], embedding_init=nn.initializers.normal(stddev),
                   name="class_embedding")
  return temb + table(jnp.asarray(class_labels, jnp.int32)).astype(temb.dtype)


def add_interval_embedding(temb, interval_labels, dtype=None):
  """`temb + E(interval_labels)` for a two-time network (a flow map u(x, r, t): `training.objective = "meanflow"`),
  else `temb` (`interval_labels=None`: a one-time network, whose parameters have no such embedding).

  `interval_labels` `(B,)` are the second time as the gap labels(t) - labels(r) between the labels of t and r (zero
  at r = t; `parameterization.AverageVelocity`), embedded beside the network's own time embedding as sinusoids and
  two dense layers, the parameters `interval_embed_0` and `interval_embed_1` of the calling network (float32, like
  the time embedding). The last layer starts at zero (weights and bias), so a fresh two-time network computes what
  the one-time network of the same other weights computes, for any r: a flow-matching model's weights start a
  flow map. Every network family calls this one function where it adds the class embedding.
  """
  if interval_labels is None:
    return temb
  if temb is None:
    raise ValueError("a second time (a flow map's r) needs a noise-conditional network (model.conditional=True)")
  features = temb.shape[-1]
  embedding = get_timestep_embedding(jnp.asarray(interval_labels, jnp.float32), features)
  embedding = nn.Dense(features, dtype=dtype, name="interval_embed_0")(embedding)
  embedding = nn.Dense(features, dtype=dtype, kernel_init=nn.initializers.zeros, name="interval_embed_1")(
      nn.swish(embedding))
  return temb + embedding.astype(temb.dtype)


def group_norm(channels, num_groups=None, dtype=None):
  """GroupNorm with epsilon 1e-6 (statistics in float32); `num_groups=None` is NCSN++'s `min(C // 4, 32)`."""
  return nn.GroupNorm(num_groups=num_groups or min(channels // 4, 32), epsilon=1e-6, dtype=dtype)


class NIN(nn.Module):
  """A per-pixel dense layer ("network in network"): params `W` (in, out) and `b`."""

  num_units: int
  init_scale: float = 0.1

  @nn.compact
  def __call__(self, x):
    W = self.param("W", default_init(self.init_scale), (x.shape[-1], self.num_units))
    b = self.param("b", nn.initializers.zeros, (self.num_units,))
    return jnp.tensordot(x, W.astype(x.dtype), axes=1) + b.astype(x.dtype)  # in the input's dtype


def attention(q, k, v):
  """Softmax(q k^T / sqrt(C)) v over `(B, positions, heads, C)`, through `jax.nn.dot_product_attention`:
  cuDNN's fused kernel where the platform has one (GPU, 16-bit inputs), XLA's elsewhere."""
  return jax.nn.dot_product_attention(q, k, v)


def reference_attention(q, k, v):
  """The same attention written out (the reference's einsum and softmax), for tests and comparisons."""
  logits = jnp.einsum("bqhc,bkhc->bhqk", q, k) * (q.shape[-1] ** -0.5)
  return jnp.einsum("bhqk,bkhc->bqhc", jax.nn.softmax(logits, axis=-1), v)


class AttnBlockpp(nn.Module):
  """Single-head self-attention over all H*W positions (DDPM's block; NCSN++ variant)."""

  skip_rescale: bool = False
  init_scale: float = 0.0
  num_groups: Optional[int] = None  # None: min(C // 4, 32)
  dtype: Optional[Any] = None

  @nn.compact
  def __call__(self, x):
    batch, height, width, channels = x.shape
    h = group_norm(channels, self.num_groups, self.dtype)(x)
    q, k, v = (NIN(channels)(h).reshape(batch, height * width, 1, channels) for _ in range(3))
    h = attention(q, k, v).reshape(batch, height, width, channels)
    h = NIN(channels, init_scale=self.init_scale)(h)
    return (x + h) / math.sqrt(2.0) if self.skip_rescale else x + h


class AttnBlock(AttnBlockpp):
  """DDPM's attention block: 32 groups, no rescaling, (almost) zero-initialised output."""

  num_groups: Optional[int] = 32


class Upsample(nn.Module):
  """2x upsampling: nearest (+ 3x3 conv) or FIR (+ fused transposed conv)."""

  out_ch: Optional[int] = None
  with_conv: bool = False
  fir: bool = False
  fir_kernel: Sequence[int] = (1, 3, 3, 1)
  dtype: Optional[Any] = None

  @nn.compact
  def __call__(self, x):
    out_ch = self.out_ch or x.shape[-1]
    if not self.fir:
      h = resample.naive_upsample_2d(x)
      return conv3x3(out_ch, dtype=self.dtype)(h) if self.with_conv else h
    if not self.with_conv:
      return resample.upsample_2d(x, self.fir_kernel)
    return resample.Conv2d(out_ch, 3, up=True, resample_kernel=self.fir_kernel, kernel_init=default_init())(x)


class Downsample(nn.Module):
  """2x downsampling: stride-2 3x3 conv or 2x2 mean; FIR filter (+ fused conv)."""

  out_ch: Optional[int] = None
  with_conv: bool = False
  fir: bool = False
  fir_kernel: Sequence[int] = (1, 3, 3, 1)
  dtype: Optional[Any] = None

  @nn.compact
  def __call__(self, x):
    out_ch = self.out_ch or x.shape[-1]
    if not self.fir:
      return conv3x3(out_ch, stride=2, dtype=self.dtype)(x) if self.with_conv else resample.naive_downsample_2d(x)
    if not self.with_conv:
      return resample.downsample_2d(x, self.fir_kernel)
    return resample.Conv2d(out_ch, 3, down=True, resample_kernel=self.fir_kernel, kernel_init=default_init())(x)


class ResnetBlockDDPMpp(nn.Module):
  """DDPM residual block: GN-act-conv, + Dense(temb), GN-act-dropout-conv, NIN/conv shortcut."""

  act: Callable = nn.swish
  out_ch: Optional[int] = None
  conv_shortcut: bool = False
  dropout: float = 0.1
  skip_rescale: bool = False
  init_scale: float = 0.0
  num_groups: Optional[int] = None  # None: min(C // 4, 32)
  dtype: Optional[Any] = None

  @nn.compact
  def __call__(self, x, temb=None, train=False):
    channels = x.shape[-1]
    out_ch = self.out_ch or channels
    h = self.act(group_norm(channels, self.num_groups, self.dtype)(x))
    h = conv3x3(out_ch, dtype=self.dtype)(h)
    if temb is not None:
      h += dense(out_ch, self.dtype)(self.act(temb))[:, None, None, :]
    h = self.act(group_norm(out_ch, self.num_groups, self.dtype)(h))
    h = nn.Dropout(self.dropout)(h, deterministic=not train)
    h = conv3x3(out_ch, init_scale=self.init_scale, dtype=self.dtype)(h)
    if channels != out_ch:
      x = conv3x3(out_ch, dtype=self.dtype)(x) if self.conv_shortcut else NIN(out_ch)(x)
    return (x + h) / math.sqrt(2.0) if self.skip_rescale else x + h


class ResnetBlockDDPM(ResnetBlockDDPMpp):
  """The original DDPM block (Ho et al. 2020): 32 groups, no rescaling."""

  num_groups: Optional[int] = 32


class ResnetBlockBigGANpp(nn.Module):
  """BigGAN residual block with optional FIR/naive up- or down-sampling of both branches."""

  act: Callable = nn.swish
  up: bool = False
  down: bool = False
  out_ch: Optional[int] = None
  dropout: float = 0.1
  fir: bool = False
  fir_kernel: Sequence[int] = (1, 3, 3, 1)
  skip_rescale: bool = True
  init_scale: float = 0.0
  dtype: Optional[Any] = None

  def _resample(self, x):
    if self.up:
      return resample.upsample_2d(x, self.fir_kernel) if self.fir else resample.naive_upsample_2d(x)
    if self.down:
      return resample.downsample_2d(x, self.fir_kernel) if self.fir else resample.naive_downsample_2d(x)
    return x

  @nn.compact
  def __call__(self, x, temb=None, train=False):
    channels = x.shape[-1]
    out_ch = self.out_ch or channels
    h = self.act(group_norm(channels, dtype=self.dtype)(x))
    h, x = self._resample(h), self._resample(x)
    h = conv3x3(out_ch, dtype=self.dtype)(h)
    if temb is not None:
      h += dense(out_ch, self.dtype)(self.act(temb))[:, None, None, :]
    h = self.act(group_norm(out_ch, dtype=self.dtype)(h))
    h = nn.Dropout(self.dropout)(h, deterministic=not train)
    h = conv3x3(out_ch, init_scale=self.init_scale, dtype=self.dtype)(h)
    if channels != out_ch or self.up or self.down:
      x = conv1x1(out_ch, dtype=self.dtype)(x)
    return (x + h) / math.sqrt(2.0) if self.skip_rescale else x + h


class Combine(nn.Module):
  """Merges the input pyramid `x` into `y`: 1x1 conv to y's channels, then concat or sum."""

  method: str = "cat"
  dtype: Optional[Any] = None

  @nn.compact
  def __call__(self, x, y):
    h = conv1x1(y.shape[-1], dtype=self.dtype)(x)
    if self.method == "cat":
      return jnp.concatenate([h, y], axis=-1)
    if self.method == "sum":
      return h + y
    raise choice_error("model.progressive_combine", self.method, ("cat", "sum"))
