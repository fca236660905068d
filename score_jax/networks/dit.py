"""DiT: the diffusion transformer of Peebles & Xie 2023, "Scalable diffusion models with transformers", Sec. 3.

`(x (B,H,W,C), labels (B,)) -> (B,H,W,C)`, a plain network like the U-Nets:

* the input is cut into p x p patches, each embedded linearly (a convolution of stride p) into a token of width D,
  plus a fixed 2-D sine-cosine position embedding (MAE's);
* the conditioning c is the noise label's sinusoidal embedding (256 frequencies) through a 2-layer MLP, plus, for a
  class-conditional network (`model.num_classes`), a learned class embedding whose extra last row is the null class
  of classifier-free guidance (`class_labels=None` means it);
* `model.depth` adaLN-Zero blocks (Sec. 3.2): from SiLU(c) one dense layer, initialised to zero, gives a shift,
  scale and gate for each of multi-head self-attention and a GELU (tanh) MLP of `model.mlp_ratio` times D, each
  applied as x + gate * branch(LayerNorm(x) (1 + scale) + shift): every block starts as the identity;
* a last adaLN layer (zero-initialised too) and a dense layer to p * p output channels per token, unpatchified.

With `model.learn_sigma` the network has DiT's 2C output channels (the second C: the learned variance of
Nichol & Dhariwal's hybrid loss); score_jax reads the first C and drops the rest, so the network always returns
its input's channels (released DiT checkpoints import with their output layer whole).

Attention (`model.attention`): "xla" (softmax in float32), "cudnn" (`jax.nn.dot_product_attention`'s fused cuDNN
kernel; bfloat16 / float16 on a GPU; reverse-mode only, so not for objectives that take `jax.jvp` through the network,
such as `scm`) or "chunked" (queries in blocks of `model.attention_block`, each block recomputed in the backward
pass: memory O(N * block) instead of O(N^2) for N tokens; works under `jax.jvp`).

Intermediate tokens: each block's output `(B, N, D)` is sown into the `intermediates` collection as the tuple
`tokens` (block i's output at index i - 1), so that representation alignment (REPA) reads the tokens after block
`training.repa_depth` as `intermediates["tokens"][repa_depth - 1]` from
`model.apply(variables, x, labels, mutable=["intermediates"])`; without `mutable` nothing is stored.

Sizes S / B / L / XL with patch 2, 4 or 8: `dit_size("XL/2")` (the paper's Table 1).
`model.time_freq_shift` and `model.mlp_norm_eps` give diffusers' `DiTTransformer2DModel` conventions (1 and 1e-5;
DiT's own are 0 and 1e-6), which imported checkpoints set (`score_jax.diffusers_dit`).
"""

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from score_jax.networks import layers
from score_jax.networks.registry import compute_dtype, register_model
from score_jax.utils import choice_error

FREQUENCY_CHANNELS = 256  # the timestep's sinusoidal embedding, before its MLP
ATTENTION = ("xla", "cudnn", "chunked")
SIZES = {"S": (12, 384, 6), "B": (12, 768, 12), "L": (24, 1024, 16), "XL": (28, 1152, 16)}  # depth, D, heads


def dit_size(name):
  """The `model.*` keys of DiT-<size>/<patch>, e.g. "XL/2" (Peebles & Xie 2023, Table 1; sizes S, B, L, XL,
  patches 2, 4, 8): `{"depth", "hidden_size", "num_heads", "patch_size"}`."""
  size, _, patch = name.partition("/")
  if size not in SIZES or patch not in ("2", "4", "8"):
    raise ValueError(f"DiT size {name!r}: one of S, B, L, XL, a slash and a patch size 2, 4 or 8, e.g. 'XL/2'")
  depth, hidden_size, num_heads = SIZES[size]
  return dict(depth=depth, hidden_size=hidden_size, num_heads=num_heads, patch_size=int(patch))


def timestep_embedding(t, dim, freq_shift=0.0, max_period=10000.0):
  """[cos(t f), sin(t f)], f_i = max_period^(-i / (dim / 2 - freq_shift)) for i < dim / 2: `(B,) -> (B, dim)`
  (DiT's with freq_shift 0, diffusers' DiT with 1)."""
  half = dim // 2
  t = t.astype(jnp.promote_types(t.dtype, jnp.float32))
  frequencies = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=t.dtype) / (half - freq_shift))
  angles = t[:, None] * frequencies
  return jnp.concatenate([jnp.cos(angles), jnp.sin(angles)], axis=-1)


def _sincos(dim, positions):
  """[sin(pos w), cos(pos w)], w_i = 10000^(-i / (dim / 2)): `(M,) -> (M, dim)`."""
  omega = 1.0 / 10000.0 ** (np.arange(dim // 2, dtype=np.float64) / (dim / 2))
  angles = np.outer(positions, omega)
  return np.concatenate([np.sin(angles), np.cos(angles)], axis=1)


def position_embedding(dim, height, width):
  """MAE's fixed 2-D sine-cosine embedding of a height x width token grid, row-major: `(height * width, dim)`;
  the first half embeds the column, the second the row."""
  rows, columns = np.meshgrid(np.arange(height, dtype=np.float64), np.arange(width, dtype=np.float64),
                              indexing="ij")
  embedding = np.concatenate([_sincos(dim // 2, columns.reshape(-1)), _sincos(dim // 2, rows.reshape(-1))], axis=1)
  return embedding.astype(np.float32)


def dot_product_attention(q, k, v):
  """softmax(q k^T / sqrt(d)) v per head, `(B, N, heads, d)` each; logits and softmax in float32 at least."""
  logits = jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=jnp.promote_types(q.dtype, jnp.float32))
  weights = jax.nn.softmax(logits / math.sqrt(q.shape[-1]), axis=-1).astype(v.dtype)
  return jnp.einsum("bhqk,bkhd->bqhd", weights, v)


def chunked_attention(q, k, v, block):
  """`dot_product_attention` over query blocks of `block` tokens, one at a time (`lax.map`), each recomputed in the
  backward pass (`jax.checkpoint`): O(N * block) memory for the logits instead of O(N^2)."""
  b, n, heads, d = q.shape
  if n <= block:
    return dot_product_attention(q, k, v)
  count = -(-n // block)
  q = jnp.pad(q, ((0, 0), (0, count * block - n), (0, 0), (0, 0)))  # padded queries, dropped below
  q = q.reshape(b, count, block, heads, d).swapaxes(0, 1)
  y = jax.lax.map(jax.checkpoint(lambda q_block: dot_product_attention(q_block, k, v)), q)
  return y.swapaxes(0, 1).reshape(b, count * block, heads, d)[:, :n]


def attention(q, k, v, implementation="xla", block=512):
  """Multi-head self-attention of `(B, N, heads, d)` queries, keys and values by `implementation` (`ATTENTION`)."""
  if implementation == "cudnn":
    return jax.nn.dot_product_attention(q, k, v, implementation="cudnn")
  if implementation == "chunked":
    return chunked_attention(q, k, v, block)
  return dot_product_attention(q, k, v)


def _dense(features, dtype, name, init=None):
  """A dense layer with DiT's init: Xavier-uniform weights (or `init`), zero biases."""
  return nn.Dense(features, dtype=dtype, kernel_init=init or nn.initializers.xavier_uniform(), name=name)


def _modulate(x, shift, scale):
  return x * (1 + scale) + shift


def _layer_norm(x, eps):
  return nn.LayerNorm(epsilon=eps, use_bias=False, use_scale=False, dtype=x.dtype)(x)


class DiTBlock(nn.Module):
  """An adaLN-Zero block: `(tokens (B, N, D), c (B, D)) -> (B, N, D)`."""

  num_heads: int
  mlp_ratio: float = 4.0
  attention: str = "xla"
  attention_block: int = 512
  mlp_norm_eps: float = 1e-6
  dtype: Any = None

  @nn.compact
  def __call__(self, x, c):
    b, n, width = x.shape
    modulation = _dense(6 * width, self.dtype, "adaLN_modulation", nn.initializers.zeros)(nn.silu(c))
    shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = jnp.split(modulation[:, None], 6, axis=-1)
    h = _modulate(_layer_norm(x, 1e-6), shift_msa, scale_msa)
    qkv = _dense(3 * width, self.dtype, "qkv")(h).reshape(b, n, 3, self.num_heads, width // self.num_heads)
    h = attention(qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2], self.attention, self.attention_block)
    x = x + gate_msa * _dense(width, self.dtype, "proj")(h.reshape(b, n, width))
    h = _modulate(_layer_norm(x, self.mlp_norm_eps), shift_mlp, scale_mlp)
    h = nn.gelu(_dense(int(width * self.mlp_ratio), self.dtype, "mlp_in")(h), approximate=True)
    return x + gate_mlp * _dense(width, self.dtype, "mlp_out")(h)


def unpatchify(tokens, grid, patch_size, channels):
  """`(B, h * w, p * p * channels)` tokens of a h x w grid -> `(B, h p, w p, channels)` (each token's outputs in
  (row, column, channel) order, DiT's)."""
  (h, w), p = grid, patch_size
  x = tokens.reshape(tokens.shape[0], h, w, p, p, channels).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(tokens.shape[0], h * p, w * p, channels)


class DiT(nn.Module):
  """`(x (B,H,W,C), labels (B,)) -> (B,H,W,C)`: DiT on p x p patches of x; `labels` the noise labels (any float:
  the parameterization's), `class_labels` `(B,)` ints of a class-conditional network (None: the null class)."""

  patch_size: int = 2
  hidden_size: int = 384
  depth: int = 12
  num_heads: int = 6
  mlp_ratio: float = 4.0
  learn_sigma: bool = False
  num_classes: int = 0
  attention: str = "xla"
  attention_block: int = 512
  time_freq_shift: float = 0.0
  mlp_norm_eps: float = 1e-6
  remat: bool = False
  dtype: Any = None

  def _conditioning(self, labels, class_labels, interval_labels=None):
    """c = MLP(sinusoids(labels)) + class embedding (+ a flow map's second time): `(B, D)`."""
    normal = nn.initializers.normal(0.02)
    c = timestep_embedding(labels, FREQUENCY_CHANNELS, self.time_freq_shift)
    c = _dense(self.hidden_size, self.dtype, "time_embed_0", normal)(c)
    c = _dense(self.hidden_size, self.dtype, "time_embed_1", normal)(nn.silu(c))
    c = layers.add_class_embedding(c, class_labels, self.num_classes, stddev=0.02)
    return layers.add_interval_embedding(c, interval_labels, self.dtype)

  @nn.compact
  def __call__(self, x, labels, train=False, class_labels=None, interval_labels=None):
    del train  # DiT has no dropout
    batch, height, width, channels = x.shape
    p = self.patch_size
    if height % p or width % p:
      raise ValueError(f"{height}x{width} inputs do not split into {p}x{p} patches (model.patch_size)")
    patch_init = nn.initializers.variance_scaling(1.0, "fan_avg", "uniform", in_axis=(0, 1, 2), out_axis=3)
    tokens = nn.Conv(self.hidden_size, (p, p), strides=(p, p), padding="VALID", dtype=self.dtype,
                     kernel_init=patch_init, name="patch_embed")(x)  # Xavier over the flattened patch, as DiT
    grid = tokens.shape[1:3]
    tokens = tokens.reshape(batch, -1, self.hidden_size)
    tokens = tokens + position_embedding(self.hidden_size, *grid).astype(tokens.dtype)
    c = self._conditioning(labels, class_labels, interval_labels)
    block_cls = nn.remat(DiTBlock) if self.remat else DiTBlock
    for index in range(self.depth):
      tokens = block_cls(self.num_heads, self.mlp_ratio, self.attention, self.attention_block, self.mlp_norm_eps,
                         dtype=self.dtype, name=f"block_{index}")(tokens, c)
      self.sow("intermediates", "tokens", tokens)
    shift, scale = jnp.split(_dense(2 * self.hidden_size, self.dtype, "final_modulation", nn.initializers.zeros)(
        nn.silu(c))[:, None], 2, axis=-1)
    tokens = _modulate(_layer_norm(tokens, 1e-6), shift, scale)
    out_channels = 2 * channels if self.learn_sigma else channels
    tokens = _dense(p * p * out_channels, self.dtype, "final_linear", nn.initializers.zeros)(tokens)
    return unpatchify(tokens, grid, p, out_channels)[..., :channels]  # learned variances dropped


@register_model("dit")
def build_dit(config):
  """DiT from `config.model` (`patch_size`, `hidden_size`, `depth`, `num_heads`, `mlp_ratio`, `learn_sigma`,
  `num_classes`, `attention`, `attention_block`, `time_freq_shift`, `mlp_norm_eps`, `remat`, `dtype`)."""
  m = config.model
  if m.attention not in ATTENTION:
    raise choice_error("model.attention", m.attention, ATTENTION)
  if m.attention == "cudnn" and m.dtype not in ("bfloat16", "float16"):
    raise ValueError(f"model.attention='cudnn' computes in bfloat16 or float16: set model.dtype, not {m.dtype!r}")
  if m.attention == "chunked" and m.attention_block < 1:
    raise ValueError(f"model.attention_block={m.attention_block} must be a positive number of queries")
  if m.hidden_size % m.num_heads or m.hidden_size % 4:
    raise ValueError(f"model.hidden_size={m.hidden_size} must be a multiple of 4 and of model.num_heads="
                     f"{m.num_heads}")
  return DiT(patch_size=m.patch_size, hidden_size=m.hidden_size, depth=m.depth, num_heads=m.num_heads,
             mlp_ratio=m.mlp_ratio, learn_sigma=m.learn_sigma, num_classes=m.num_classes, attention=m.attention,
             attention_block=m.attention_block, time_freq_shift=m.time_freq_shift, mlp_norm_eps=m.mlp_norm_eps,
             remat=m.remat, dtype=compute_dtype(m.dtype))
