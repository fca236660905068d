"""Instance normalisations of NCSN / NCSNv2 (Song & Ermon 2019, App. A; 2020).

InstanceNorm++ normalises each channel over space and adds back the channel means,
standardised across channels, with a learned weight `alpha`. The JAX original (and
score_jax by default) uses the biased variance of the channel means; the PyTorch port
uses the unbiased one (docs/differences.md#instance-norm-variance): `unbiased_channel_var=True`
reproduces the port.
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from score_jax.utils import choice_error


def _scale_init(key, shape, dtype=jnp.float32):
  return 1.0 + 0.02 * jax.random.normal(key, shape, dtype)


def _instance_norm_plus(x, unbiased_channel_var):
  """Returns the instance-normalised `x` and the standardised channel means (B, C), in float32."""
  x = x.astype(jnp.float32)  # statistics in float32 whatever the compute dtype
  means = jnp.mean(x, axis=(1, 2))
  m = jnp.mean(means, axis=-1, keepdims=True)
  v = jnp.var(means, axis=-1, keepdims=True, ddof=1 if unbiased_channel_var else 0)
  means_plus = (means - m) / jnp.sqrt(v + 1e-5)
  h = (x - means[:, None, None, :]) / jnp.sqrt(jnp.var(x, axis=(1, 2), keepdims=True) + 1e-5)
  return h, means_plus


class InstanceNorm2dPlus(nn.Module):
  """InstanceNorm++: `gamma * (IN(x) + alpha * standardised channel means) + beta`; params (1, 1, 1, C)."""

  bias: bool = True
  unbiased_channel_var: bool = False  # True: the PyTorch port (docs/differences.md#instance-norm-variance)

  @nn.compact
  def __call__(self, x):
    shape = (1, 1, 1, x.shape[-1])
    alpha = self.param("alpha", _scale_init, shape)
    gamma = self.param("gamma", _scale_init, shape)
    h, means_plus = _instance_norm_plus(x, self.unbiased_channel_var)
    h = gamma * (h + means_plus[:, None, None, :] * alpha)
    h = h + self.param("beta", nn.initializers.zeros, shape) if self.bias else h
    return h.astype(x.dtype)


class ConditionalInstanceNorm2dPlus(nn.Module):
  """InstanceNorm++ whose gamma, alpha (, beta) are rows of an embedding indexed by the noise label."""

  num_classes: int
  bias: bool = True
  unbiased_channel_var: bool = False

  @nn.compact
  def __call__(self, x, y):
    channels = x.shape[-1]

    def embedding_init(key, shape, dtype=jnp.float32):  # gamma, alpha ~ N(1, 0.02); beta = 0
      scales = _scale_init(key, (shape[0], 2 * channels), dtype)
      return jnp.concatenate([scales, jnp.zeros((shape[0], shape[1] - 2 * channels), dtype)], axis=-1)

    embed = nn.Embed(self.num_classes, (3 if self.bias else 2) * channels, embedding_init=embedding_init)
    rows = embed(y.astype(jnp.int32))[:, None, None, :]
    h, means_plus = _instance_norm_plus(x, self.unbiased_channel_var)
    gamma, alpha = rows[..., :channels], rows[..., channels:2 * channels]
    h = gamma * (h + means_plus[:, None, None, :] * alpha)
    h = h + rows[..., 2 * channels:] if self.bias else h
    return h.astype(x.dtype)


def get_normalization(name, conditional=False, num_classes=None):
  """A factory `() -> norm module` for `config.model.normalization`."""
  if name != "InstanceNorm++":
    raise choice_error("model.normalization", name, ("InstanceNorm++",))
  if conditional:
    return functools.partial(ConditionalInstanceNorm2dPlus, num_classes=num_classes)
  return InstanceNorm2dPlus
