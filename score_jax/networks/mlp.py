"""A time-conditioned MLP score model for flat (B, D) data such as the 2-D toys."""

import math
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from score_jax.networks import layers
from score_jax.networks.registry import compute_dtype, register_model


class MLPScoreModel(nn.Module):
  """Residual MLP: x -> D outputs, conditioned on the labels of the parameterization.

  `embedding_type='fourier'` embeds log(label) (continuous VE: the label is sigma);
  `'positional'` embeds the label itself (t * 999 for VP, an index for discrete models). With
  `num_classes`, the `(B,)` int `class_labels` (None: the null class) add a learned embedding; `interval_labels`
  `(B,)`, a flow map's second time (`layers.add_interval_embedding`), another.
  """

  hidden: int = 128
  num_layers: int = 3
  embedding_type: str = "positional"
  embedding_dim: int = 64
  fourier_scale: float = 16.0
  dropout: float = 0.0
  input_frequencies: int = 0  # sin / cos features of each coordinate at frequencies pi 2^k, k < this
  num_classes: int = 0  # class-conditional (`model.num_classes`): a class embedding added to the time embedding
  dtype: Any = None  # compute dtype (`model.dtype`; None: float32); parameters stay float32

  def _input_features(self, x):
    """x, with [sin, cos](pi 2^k x) of every coordinate for k < `input_frequencies` (Fourier features of the
    input, Tancik et al. 2020): sharp edges of low-dimensional densities need high frequencies in x."""
    if not self.input_frequencies:
      return x
    angles = x[..., None] * (math.pi * 2.0 ** jnp.arange(self.input_frequencies))
    return jnp.concatenate([x, jnp.sin(angles).reshape(x.shape[0], -1), jnp.cos(angles).reshape(x.shape[0], -1)],
                           axis=-1)

  @nn.compact
  def __call__(self, x, labels, train=False, class_labels=None, interval_labels=None):
    if self.embedding_type == "fourier":
      temb = layers.GaussianFourierProjection(self.embedding_dim // 2, self.fourier_scale)(jnp.log(labels))
    else:
      temb = layers.get_timestep_embedding(labels, self.embedding_dim)
    dense = lambda features, **kwargs: nn.Dense(features, dtype=self.dtype, **kwargs)
    temb = dense(self.hidden)(nn.swish(dense(self.hidden)(temb)))  # the embedding itself is float32
    temb = layers.add_class_embedding(temb, class_labels, self.num_classes)
    temb = layers.add_interval_embedding(temb, interval_labels, self.dtype)  # a flow map's second time
    h = dense(self.hidden)(self._input_features(x))
    for _ in range(self.num_layers):
      residual = dense(self.hidden)(nn.swish(h)) + temb
      residual = nn.Dropout(self.dropout, deterministic=not train)(nn.swish(residual))
      h = (h + dense(self.hidden)(residual)) / math.sqrt(2.0)
    return dense(x.shape[-1], kernel_init=layers.default_init(0.1))(nn.swish(h))


@register_model("mlp")
def build_mlp(config):
  model = config.model
  return MLPScoreModel(hidden=model.nf, num_layers=model.num_res_blocks, embedding_type=model.embedding_type,
                       embedding_dim=model.embedding_dim, fourier_scale=model.fourier_scale,
                       dropout=model.dropout, input_frequencies=model.input_frequencies,
                       num_classes=model.num_classes, dtype=compute_dtype(config.model.dtype))
