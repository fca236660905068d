"""Layers shared by the score networks."""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp


def default_init(scale=1.0):
  """The reference's `variance_scaling(scale, 'fan_avg', 'uniform')`; scale 0 becomes 1e-10 (B16)."""
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
