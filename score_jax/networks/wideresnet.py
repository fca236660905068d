"""Noise-conditional Wide ResNet classifier (Zagoruyko & Komodakis 2016) for class-conditional sampling.

The classifier of Song et al. 2021 (Section 5, Appendix I.1): a WRN-28-10 whose residual blocks also
receive an embedding of the noise level sigma (random Fourier features of log sigma), trained on
perturbed data to model p(y | x(t)). With `WideResnet()` it has the reference's 38,913,242 weights
(38,913,114 parameters and the 128 fixed Fourier frequencies, kept in the "constants" collection).

Its output feeds `score_jax.controllable.classifier_log_prob_grad_fn`. The input is normalised once,
here, by per-image standardisation; the reference normalised with the CIFAR-10 mean/std first
(docs/differences.md#classifier-normalisation).
The module has no train/eval difference (GroupNorm, no dropout).

`dtype` (`classifier.dtype`) is the compute dtype of its convolutions and dense layers, as `model.dtype`
for the score networks: parameters stay float32, the noise embedding, the input standardisation and
GroupNorm's statistics are float32, and the logits come back as float32.
"""

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from score_jax.networks.layers import GaussianFourierProjection

# He-normal with fan-out (kh kw out) for convolutions; U(-1/sqrt(K), 1/sqrt(K)) for the K-way output layer.
conv_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


def output_init(key, shape, dtype=jnp.float32):
  bound = 1.0 / math.sqrt(shape[1])
  return jax.random.uniform(key, shape, dtype, -bound, bound)


def per_image_standardization(x):
  """(x - mean) / max(std, 1 / sqrt(D)) over each image's pixels and channels."""
  axes = tuple(range(1, x.ndim))
  mean = jnp.mean(x, axis=axes, keepdims=True)
  std = jnp.std(x, axis=axes, keepdims=True)
  return (x - mean) / jnp.maximum(std, 1.0 / math.sqrt(math.prod(x.shape[1:])))


def activation(x, dtype=None):
  """GroupNorm (min(C // 4, 32) groups, epsilon 1e-5; statistics in float32) then ReLU."""
  return nn.relu(nn.GroupNorm(num_groups=min(x.shape[-1] // 4, 32), epsilon=1e-5, dtype=dtype)(x))


def shortcut_add(block_x, x):
  """Residual sum; a shortcut of another shape is average-pooled to the stride and zero-padded in channels."""
  if x.shape != block_x.shape:
    stride = x.shape[1] // block_x.shape[1]
    x = nn.avg_pool(x, (stride, stride), (stride, stride))
    x = jnp.pad(x, [(0, 0)] * 3 + [(0, block_x.shape[-1] - x.shape[-1])])
  return block_x + x


class WideResnetBlock(nn.Module):
  """Pre-activation block, with the noise embedding added after the first convolution."""

  channels: int
  stride: int = 1
  activate_before_residual: bool = False
  dtype: Any = None  # compute dtype (None: float32)

  @nn.compact
  def __call__(self, x, temb):
    if self.activate_before_residual:
      x = activation(x, self.dtype)
      block_x = x
    else:
      block_x = activation(x, self.dtype)
    block_x = nn.Conv(self.channels, (3, 3), (self.stride, self.stride), padding="SAME", use_bias=False,
                      kernel_init=conv_init, dtype=self.dtype)(block_x)
    block_x = block_x + nn.Dense(self.channels, dtype=self.dtype)(nn.swish(temb))[:, None, None, :]
    block_x = nn.Conv(self.channels, (3, 3), padding="SAME", use_bias=False, kernel_init=conv_init,
                      dtype=self.dtype)(activation(block_x, self.dtype))
    return shortcut_add(block_x, x)


class WideResnetGroup(nn.Module):
  """`blocks_per_group` blocks; the first one strides."""

  blocks_per_group: int
  channels: int
  stride: int = 1
  activate_before_residual: bool = False
  dtype: Any = None

  @nn.compact
  def __call__(self, x, temb):
    for i in range(self.blocks_per_group):
      x = WideResnetBlock(self.channels, self.stride if i == 0 else 1,
                          self.activate_before_residual and i == 0, dtype=self.dtype)(x, temb)
    return x


class WideResnet(nn.Module):
  """WRN-(6 blocks_per_group + 4)-channel_multiplier conditioned on the noise level; logits `(B, num_outputs)`.

  Call as `apply(variables, x, noise_level)` with `x` NHWC and `noise_level` the `(B,)` perturbation std
  (for a VE SDE, `sde.marginal_prob(x, t)[1]`).
  """

  blocks_per_group: int = 4
  channel_multiplier: int = 10
  num_outputs: int = 10
  embedding_size: int = 128
  fourier_scale: float = 16.0
  temb_dim: int = 512
  dtype: Any = None  # compute dtype (`classifier.dtype`; None: float32); parameters stay float32

  @nn.compact
  def __call__(self, x, noise_level, train=False):
    del train  # no train-time behaviour
    out_dtype = jnp.promote_types(x.dtype, jnp.float32)  # float32 logits whatever the compute dtype
    temb = GaussianFourierProjection(self.embedding_size, self.fourier_scale)(jnp.log(noise_level))
    temb = nn.Dense(self.temb_dim)(nn.swish(nn.Dense(self.temb_dim)(temb)))  # the embedding itself is float32
    x = nn.Conv(16, (3, 3), padding="SAME", use_bias=False, kernel_init=conv_init,
                dtype=self.dtype)(per_image_standardization(x))
    k = self.channel_multiplier
    x = WideResnetGroup(self.blocks_per_group, 16 * k, activate_before_residual=True, dtype=self.dtype)(x, temb)
    x = WideResnetGroup(self.blocks_per_group, 32 * k, stride=2, dtype=self.dtype)(x, temb)
    x = WideResnetGroup(self.blocks_per_group, 64 * k, stride=2, dtype=self.dtype)(x, temb)
    x = jnp.mean(activation(x, self.dtype).astype(out_dtype), axis=(1, 2))  # global average pooling
    return nn.Dense(self.num_outputs, kernel_init=output_init, dtype=self.dtype)(x).astype(out_dtype)
