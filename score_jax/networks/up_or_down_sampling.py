"""FIR and naive 2x resampling of NHWC images (the StyleGAN2 ops used by NCSN++).

`upfirdn_2d` is the one primitive: zero-insertion upsampling, padding (negative
pads crop), true convolution with a 2-D FIR kernel, then subsampling
(Karras et al. 2020, "Analyzing and improving the image quality of StyleGAN").
"""

from typing import Callable, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np


def setup_kernel(k):
  """1-D taps -> their outer product (or a 2-D kernel as is), normalised to sum 1."""
  k = np.asarray(k, dtype=np.float32)
  if k.ndim == 1:
    k = np.outer(k, k)
  return k / np.sum(k)


def _pad_or_crop(x, axis, before, after):
  pads = [(0, 0)] * x.ndim
  pads[axis] = (max(before, 0), max(after, 0))
  x = jnp.pad(x, pads)
  start, stop = max(-before, 0), x.shape[axis] - max(-after, 0)
  return jax.lax.slice_in_dim(x, start, stop, axis=axis)


def upfirdn_2d(x, k, up=1, down=1, pad0=0, pad1=0):
  """Upsample by `up` (zero insertion), pad by (pad0, pad1), convolve with `k`, keep every `down`-th pixel."""
  batch, height, width, channels = x.shape
  if up > 1:
    x = x.reshape(batch, height, 1, width, 1, channels)
    x = jnp.pad(x, [(0, 0), (0, 0), (0, up - 1), (0, 0), (0, up - 1), (0, 0)])
    x = x.reshape(batch, height * up, width * up, channels)
  x = _pad_or_crop(_pad_or_crop(x, 1, pad0, pad1), 2, pad0, pad1)
  # Convolution = correlation with the flipped kernel, one filter per channel.
  w = jnp.asarray(np.ascontiguousarray(k[::-1, ::-1]), x.dtype)
  w = jnp.tile(w[:, :, None, None], (1, 1, 1, channels))
  x = jax.lax.conv_general_dilated(x, w, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                   feature_group_count=channels)
  return x[:, ::down, ::down, :]


def upsample_2d(x, k=(1, 3, 3, 1), factor=2, gain=1.0):
  """FIR upsampling by `factor`; a constant image stays constant (times `gain`)."""
  k = setup_kernel(k) * (gain * factor ** 2)
  p = k.shape[0] - factor
  return upfirdn_2d(x, k, up=factor, pad0=(p + 1) // 2 + factor - 1, pad1=p // 2)


def downsample_2d(x, k=(1, 3, 3, 1), factor=2, gain=1.0):
  """FIR low-pass filtering followed by subsampling by `factor`."""
  k = setup_kernel(k) * gain
  p = k.shape[0] - factor
  return upfirdn_2d(x, k, down=factor, pad0=(p + 1) // 2, pad1=p // 2)


def _conv(x, w, stride=1, padding="VALID", lhs_dilation=None):
  return jax.lax.conv_general_dilated(x, w.astype(x.dtype), (stride, stride), padding, lhs_dilation=lhs_dilation,
                                      dimension_numbers=("NHWC", "HWIO", "NHWC"))


def conv_downsample_2d(x, w, k=(1, 3, 3, 1), factor=2, gain=1.0):
  """FIR filtering and a stride-`factor` convolution with the HWIO kernel `w`, padded once."""
  conv_size = w.shape[0]
  k = setup_kernel(k) * gain
  p = (k.shape[0] - factor) + (conv_size - 1)
  x = upfirdn_2d(x, k, pad0=(p + 1) // 2, pad1=p // 2)
  return _conv(x, w, stride=factor)


def upsample_conv_2d(x, w, k=(1, 3, 3, 1), factor=2, gain=1.0):
  """A stride-`factor` transposed convolution with the HWIO kernel `w`, then FIR filtering.

  Never reached by a shipped config (the PyTorch port's version crashes: docs/differences.md#fir-upsample-conv).
  """
  conv_size = w.shape[0]
  k = setup_kernel(k) * (gain * factor ** 2)
  p = (k.shape[0] - factor) - (conv_size - 1)
  pad = conv_size - 1  # full correlation of the zero-inserted input
  x = _conv(x, w, padding=[(pad, pad), (pad, pad)], lhs_dilation=(factor, factor))
  return upfirdn_2d(x, k, pad0=(p + 1) // 2 + factor - 1, pad1=p // 2 + 1)


def naive_upsample_2d(x, factor=2):
  """Nearest-neighbour upsampling (each pixel becomes a factor x factor block)."""
  batch, height, width, channels = x.shape
  x = jnp.broadcast_to(x[:, :, None, :, None, :], (batch, height, factor, width, factor, channels))
  return x.reshape(batch, height * factor, width * factor, channels)


def naive_downsample_2d(x, factor=2):
  """Mean over factor x factor blocks."""
  batch, height, width, channels = x.shape
  x = x.reshape(batch, height // factor, factor, width // factor, factor, channels)
  return jnp.mean(x, axis=(2, 4))


class Conv2d(nn.Module):
  """Convolution with optional fused FIR up/down-sampling; params `weight` (HWIO) and `bias`."""

  fmaps: int
  kernel: int
  up: bool = False
  down: bool = False
  resample_kernel: Sequence[int] = (1, 3, 3, 1)
  use_bias: bool = True
  kernel_init: Optional[Callable] = None

  @nn.compact
  def __call__(self, x):
    assert not (self.up and self.down) and self.kernel % 2 == 1
    kernel_init = self.kernel_init or nn.initializers.variance_scaling(1.0, "fan_avg", "uniform")
    w = self.param("weight", kernel_init, (self.kernel, self.kernel, x.shape[-1], self.fmaps))
    if self.up:
      x = upsample_conv_2d(x, w, k=self.resample_kernel)
    elif self.down:
      x = conv_downsample_2d(x, w, k=self.resample_kernel)
    else:
      x = _conv(x, w, padding="SAME")
    if self.use_bias:
      x = x + self.param("bias", nn.initializers.zeros, (self.fmaps,)).astype(x.dtype)
    return x
