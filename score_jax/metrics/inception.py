"""The FID Inception-v3 (`pool_3` features and 1008-way logits) in Flax, NHWC.

This is the network of the "pt_inception-2015-12-05" weights: TensorFlow's 2015
Inception-v3 graph (the one behind the original FID and Inception Score code,
and TF-GAN's `pool_3` / `logits`) as ported to PyTorch by pytorch-fid
(Seitzer, 2020). It is torchvision's Inception3 layout without the auxiliary
head, with four FID-specific details:

* every convolution is bias-free and followed by BatchNorm (eps 1e-3) + ReLU;
* the pool branch of the 35x35 (A), 17x17 (C) blocks and of Mixed_7b (E) is a
  3x3 average pool that ignores the zero padding (`count_include_pad=False`);
* the pool branch of the last block, Mixed_7c, is a 3x3 *max* pool;
* the classifier is the original 1008-way fully connected layer on `pool_3`.

Pre-processing follows pytorch-fid: images in [0, 1] (uint8 is divided by 255)
are resized to 299x299 with `F.interpolate(mode="bilinear",
align_corners=False)` -- half-pixel centres, source coordinates clamped at 0,
no antialiasing, also when shrinking -- and mapped to [-1, 1] by `2x - 1`
(the reference's `(x - 127.5) / 127.5` of uint8). `resize="tf1"` switches to
TF1's `resize_bilinear(align_corners=False)` (no half-pixel offset) instead.

Module and variable names mirror the PyTorch state dict (`Mixed_5b.branch1x1.
conv.weight` -> `params/Mixed_5b/branch1x1/conv/kernel`), so loading is a
renaming plus transposes.
"""

import functools
import hashlib
import os
import re
import shutil
import tempfile
import urllib.error
import urllib.request
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from score_jax import torch_pickle

FID_WEIGHTS_URL = ("https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/"
                   "pt_inception-2015-12-05-6726825d.pth")
DEFAULT_CACHE_DIR = os.path.join("~", ".cache", "score_jax")
INPUT_SIZE = 299
NUM_CLASSES = 1008


class InceptionOutput(NamedTuple):
  pool3: Any   # (B, 2048) final average-pool features (FID, KID)
  logits: Any  # (B, 1008) classifier logits (Inception Score)


# --------------------------------------------------------------------------- pre-processing

def _interpolation_matrix(in_size, out_size, half_pixel_centers=True):
  """(out_size, in_size) weights of 1-D linear interpolation, rounded as torch's CPU upsample_bilinear2d does.

  Torch takes scale = float32(in / out) and src = scale * (dst + 0.5) - 0.5 with one rounding (a fused
  multiply-add), clamped at 0; float64 arithmetic rounded once to float32 reproduces it exactly.
  """
  scale = np.float64(np.float32(in_size) / np.float32(out_size))
  dst = np.arange(out_size, dtype=np.float64)
  src = np.maximum((scale * (dst + 0.5) - 0.5) if half_pixel_centers else dst * scale, 0.0).astype(np.float32)
  low = np.minimum(src.astype(np.int64), in_size - 1)
  high = np.minimum(low + 1, in_size - 1)
  frac = src - low.astype(np.float32)
  matrix = np.zeros((out_size, in_size), np.float32)
  np.add.at(matrix, (np.arange(out_size), low), 1.0 - frac)
  np.add.at(matrix, (np.arange(out_size), high), frac)
  return matrix


def resize_bilinear(images, size, half_pixel_centers=True):
  """Resizes NHWC `images` to `size` = (H', W') as two exact float32 matrix products (separable bilinear)."""
  height, width = size
  if images.shape[1:3] == (height, width):
    return images
  rows = jnp.asarray(_interpolation_matrix(images.shape[1], height, half_pixel_centers))
  cols = jnp.asarray(_interpolation_matrix(images.shape[2], width, half_pixel_centers))
  highest = jax.lax.Precision.HIGHEST
  images = jnp.einsum("oh,bhwc->bowc", rows, images, precision=highest)
  return jnp.einsum("pw,bowc->bopc", cols, images, precision=highest)


_RESIZE_MODES = {"pytorch": True, "tf1": False}  # name -> half_pixel_centers


def preprocess(images, resize="pytorch"):
  """uint8 (0..255) or float ([0, 1]) NHWC images -> float32 299x299 images in [-1, 1]."""
  if resize not in _RESIZE_MODES:
    raise ValueError(f"unknown resize {resize!r}; valid: {sorted(_RESIZE_MODES)}")
  scale = 1.0 / 255.0 if images.dtype == jnp.uint8 else 1.0
  images = jnp.asarray(images, jnp.float32) * scale
  images = resize_bilinear(images, (INPUT_SIZE, INPUT_SIZE), _RESIZE_MODES[resize])
  return 2.0 * images - 1.0


# --------------------------------------------------------------------------- network

class BasicConv(nn.Module):
  """Bias-free convolution + BatchNorm(eps 1e-3, running statistics) + ReLU."""
  features: int
  kernel_size: tuple = (1, 1)
  strides: int = 1
  padding: Any = 0  # int or (pad_h, pad_w), symmetric as in torch
  precision: Any = None

  @nn.compact
  def __call__(self, x):
    pad_h, pad_w = (self.padding, self.padding) if isinstance(self.padding, int) else self.padding
    x = nn.Conv(self.features, self.kernel_size, (self.strides, self.strides), ((pad_h, pad_h), (pad_w, pad_w)),
                use_bias=False, precision=self.precision, name="conv")(x)
    x = nn.BatchNorm(use_running_average=True, epsilon=1e-3, name="bn")(x)
    return nn.relu(x)


def _avg_pool_3x3(x):
  return nn.avg_pool(x, (3, 3), (1, 1), ((1, 1), (1, 1)), count_include_pad=False)


def _max_pool_3x3(x, strides=1):
  return nn.max_pool(x, (3, 3), (strides, strides), ((1, 1), (1, 1)) if strides == 1 else "VALID")


class InceptionA(nn.Module):
  """35x35 block (Mixed_5b-d): 1x1 | 1x1-5x5 | 1x1-3x3-3x3 | avg pool-1x1."""
  pool_features: int
  precision: Any = None

  @nn.compact
  def __call__(self, x):
    conv = lambda *args, **kw: BasicConv(*args, precision=self.precision, **kw)
    branch1x1 = conv(64, name="branch1x1")(x)
    branch5x5 = conv(64, (5, 5), padding=2, name="branch5x5_2")(conv(48, name="branch5x5_1")(x))
    branch3x3dbl = conv(64, name="branch3x3dbl_1")(x)
    branch3x3dbl = conv(96, (3, 3), padding=1, name="branch3x3dbl_2")(branch3x3dbl)
    branch3x3dbl = conv(96, (3, 3), padding=1, name="branch3x3dbl_3")(branch3x3dbl)
    branch_pool = conv(self.pool_features, name="branch_pool")(_avg_pool_3x3(x))
    return jnp.concatenate([branch1x1, branch5x5, branch3x3dbl, branch_pool], axis=-1)


class InceptionB(nn.Module):
  """35x35 -> 17x17 reduction (Mixed_6a)."""
  precision: Any = None

  @nn.compact
  def __call__(self, x):
    conv = lambda *args, **kw: BasicConv(*args, precision=self.precision, **kw)
    branch3x3 = conv(384, (3, 3), strides=2, name="branch3x3")(x)
    branch3x3dbl = conv(64, name="branch3x3dbl_1")(x)
    branch3x3dbl = conv(96, (3, 3), padding=1, name="branch3x3dbl_2")(branch3x3dbl)
    branch3x3dbl = conv(96, (3, 3), strides=2, name="branch3x3dbl_3")(branch3x3dbl)
    return jnp.concatenate([branch3x3, branch3x3dbl, _max_pool_3x3(x, strides=2)], axis=-1)


class InceptionC(nn.Module):
  """17x17 block (Mixed_6b-e) with factorised 7x7 convolutions of `channels_7x7` channels."""
  channels_7x7: int
  precision: Any = None

  @nn.compact
  def __call__(self, x):
    conv = lambda *args, **kw: BasicConv(*args, precision=self.precision, **kw)
    c7 = self.channels_7x7
    row, col = dict(kernel_size=(1, 7), padding=(0, 3)), dict(kernel_size=(7, 1), padding=(3, 0))
    branch1x1 = conv(192, name="branch1x1")(x)
    branch7x7 = conv(c7, name="branch7x7_1")(x)
    branch7x7 = conv(c7, **row, name="branch7x7_2")(branch7x7)
    branch7x7 = conv(192, **col, name="branch7x7_3")(branch7x7)
    branch7x7dbl = conv(c7, name="branch7x7dbl_1")(x)
    branch7x7dbl = conv(c7, **col, name="branch7x7dbl_2")(branch7x7dbl)
    branch7x7dbl = conv(c7, **row, name="branch7x7dbl_3")(branch7x7dbl)
    branch7x7dbl = conv(c7, **col, name="branch7x7dbl_4")(branch7x7dbl)
    branch7x7dbl = conv(192, **row, name="branch7x7dbl_5")(branch7x7dbl)
    branch_pool = conv(192, name="branch_pool")(_avg_pool_3x3(x))
    return jnp.concatenate([branch1x1, branch7x7, branch7x7dbl, branch_pool], axis=-1)


class InceptionD(nn.Module):
  """17x17 -> 8x8 reduction (Mixed_7a)."""
  precision: Any = None

  @nn.compact
  def __call__(self, x):
    conv = lambda *args, **kw: BasicConv(*args, precision=self.precision, **kw)
    branch3x3 = conv(320, (3, 3), strides=2, name="branch3x3_2")(conv(192, name="branch3x3_1")(x))
    branch7x7x3 = conv(192, name="branch7x7x3_1")(x)
    branch7x7x3 = conv(192, (1, 7), padding=(0, 3), name="branch7x7x3_2")(branch7x7x3)
    branch7x7x3 = conv(192, (7, 1), padding=(3, 0), name="branch7x7x3_3")(branch7x7x3)
    branch7x7x3 = conv(192, (3, 3), strides=2, name="branch7x7x3_4")(branch7x7x3)
    return jnp.concatenate([branch3x3, branch7x7x3, _max_pool_3x3(x, strides=2)], axis=-1)


class InceptionE(nn.Module):
  """8x8 block (Mixed_7b: average pool without padding; Mixed_7c: max pool, as in the 2015 graph)."""
  pool: str = "avg"
  precision: Any = None

  @nn.compact
  def __call__(self, x):
    conv = lambda *args, **kw: BasicConv(*args, precision=self.precision, **kw)
    row, col = dict(kernel_size=(1, 3), padding=(0, 1)), dict(kernel_size=(3, 1), padding=(1, 0))
    branch1x1 = conv(320, name="branch1x1")(x)
    branch3x3 = conv(384, name="branch3x3_1")(x)
    branch3x3 = [conv(384, **row, name="branch3x3_2a")(branch3x3), conv(384, **col, name="branch3x3_2b")(branch3x3)]
    branch3x3dbl = conv(448, name="branch3x3dbl_1")(x)
    branch3x3dbl = conv(384, (3, 3), padding=1, name="branch3x3dbl_2")(branch3x3dbl)
    branch3x3dbl = [conv(384, **row, name="branch3x3dbl_3a")(branch3x3dbl),
                    conv(384, **col, name="branch3x3dbl_3b")(branch3x3dbl)]
    pooled = _avg_pool_3x3(x) if self.pool == "avg" else _max_pool_3x3(x)
    branch_pool = conv(192, name="branch_pool")(pooled)
    return jnp.concatenate([branch1x1, *branch3x3, *branch3x3dbl, branch_pool], axis=-1)


class InceptionV3(nn.Module):
  """FID Inception-v3: NHWC images (uint8 0..255 or float in [0, 1], any size) -> `InceptionOutput`.

  `resize` is "pytorch" (pytorch-fid's bilinear, align_corners=False) or "tf1";
  `precision` is passed to every convolution and the classifier (None: JAX's
  default, which on GPU/TPU may use reduced-precision matmuls).
  """
  resize: str = "pytorch"
  precision: Any = None

  @nn.compact
  def __call__(self, images):
    conv = lambda *args, **kw: BasicConv(*args, precision=self.precision, **kw)
    x = preprocess(images, self.resize)
    x = conv(32, (3, 3), strides=2, name="Conv2d_1a_3x3")(x)      # 149x149x32
    x = conv(32, (3, 3), name="Conv2d_2a_3x3")(x)                 # 147x147x32
    x = conv(64, (3, 3), padding=1, name="Conv2d_2b_3x3")(x)      # 147x147x64
    x = nn.max_pool(x, (3, 3), (2, 2))                            # 73x73x64
    x = conv(80, name="Conv2d_3b_1x1")(x)                         # 73x73x80
    x = conv(192, (3, 3), name="Conv2d_4a_3x3")(x)                # 71x71x192
    x = nn.max_pool(x, (3, 3), (2, 2))                            # 35x35x192
    for name, pool_features in (("Mixed_5b", 32), ("Mixed_5c", 64), ("Mixed_5d", 64)):
      x = InceptionA(pool_features, self.precision, name=name)(x)  # 35x35x256, 288, 288
    x = InceptionB(self.precision, name="Mixed_6a")(x)            # 17x17x768
    for name, channels_7x7 in (("Mixed_6b", 128), ("Mixed_6c", 160), ("Mixed_6d", 160), ("Mixed_6e", 192)):
      x = InceptionC(channels_7x7, self.precision, name=name)(x)
    x = InceptionD(self.precision, name="Mixed_7a")(x)            # 8x8x1280
    x = InceptionE("avg", self.precision, name="Mixed_7b")(x)     # 8x8x2048
    x = InceptionE("max", self.precision, name="Mixed_7c")(x)
    self.sow("intermediates", "spatial", x)                       # 8x8x2048: what REPA may align to
    pool3 = jnp.mean(x, axis=(1, 2))                              # (B, 2048)
    logits = nn.Dense(NUM_CLASSES, precision=self.precision, name="fc")(pool3)
    return InceptionOutput(pool3, logits)


# --------------------------------------------------------------------------- weights

def variable_shapes(model=None):
  """Shapes of the variables (`params`, `batch_stats`) of `model`, without computing anything."""
  model = model or InceptionV3()
  return jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, INPUT_SIZE, INPUT_SIZE, 3), jnp.float32))


def state_dict_to_variables(state_dict):
  """Maps a pytorch-fid Inception state dict (numpy arrays) to Flax variables, checking every name and shape.

  Ignores `num_batches_tracked`, an auxiliary head (`AuxLogits.*`) and a
  `module.` prefix; any other missing or unexpected entry is a `ValueError`.
  """
  variables = {"params": {}, "batch_stats": {}}
  for key, value in state_dict.items():
    key = key[len("module."):] if key.startswith("module.") else key
    if key.endswith("num_batches_tracked") or key.startswith("AuxLogits."):
      continue
    *path, leaf = key.split(".")
    value = np.asarray(value, np.float32)
    if path and path[-1] == "conv" and leaf == "weight":
      collection, leaf, value = "params", "kernel", value.transpose(2, 3, 1, 0)  # OIHW -> HWIO
    elif path and path[-1] == "bn" and leaf in ("weight", "bias", "running_mean", "running_var"):
      collection = "params" if leaf in ("weight", "bias") else "batch_stats"
      leaf = {"weight": "scale", "bias": "bias", "running_mean": "mean", "running_var": "var"}[leaf]
    elif path == ["fc"] and leaf in ("weight", "bias"):
      collection = "params"
      leaf, value = ("kernel", value.T) if leaf == "weight" else ("bias", value)
    else:
      raise ValueError(f"unexpected entry in the Inception state dict: {key}")
    node = variables[collection]
    for name in path:
      node = node.setdefault(name, {})
    node[leaf] = value
  _check_shapes(variables, variable_shapes())
  return jax.tree.map(jnp.asarray, variables)


def _check_shapes(variables, expected):
  got = {jax.tree_util.keystr(p): v.shape for p, v in jax.tree_util.tree_leaves_with_path(variables)}
  want = {jax.tree_util.keystr(p): v.shape for p, v in jax.tree_util.tree_leaves_with_path(expected)}
  problems = [f"missing {k}" for k in sorted(want.keys() - got.keys())]
  problems += [f"unexpected {k}" for k in sorted(got.keys() - want.keys())]
  problems += [f"{k}: {got[k]} != {want[k]}" for k in sorted(want.keys() & got.keys()) if got[k] != want[k]]
  if problems:
    raise ValueError(f"not the FID Inception weights ({len(problems)} problems): " + "; ".join(problems[:8]))


def load_inception_variables(path):
  """Reads a pytorch-fid `.pth` state dict (safely: no pickle code runs) into Flax variables."""
  return state_dict_to_variables(torch_pickle.load(path))


def _download(url, target):
  """Downloads `url` to `target` atomically; checks a torch-hub style `-<sha256 prefix>.` in the file name."""
  os.makedirs(os.path.dirname(target), exist_ok=True)
  with tempfile.NamedTemporaryFile(dir=os.path.dirname(target), delete=False) as tmp:
    try:
      with urllib.request.urlopen(url, timeout=60) as response:
        shutil.copyfileobj(response, tmp)
      tmp.close()
      expected = re.search(r"-([a-f0-9]{8,})\.", os.path.basename(url))
      if expected:
        with open(tmp.name, "rb") as f:
          digest = hashlib.sha256(f.read()).hexdigest()
        if not digest.startswith(expected.group(1)):
          raise ValueError(f"{url}: sha256 {digest[:16]}... does not start with {expected.group(1)}")
      os.replace(tmp.name, target)
    finally:
      if os.path.exists(tmp.name):
        os.remove(tmp.name)


def resolve_weights(path=None, url=None, cache_dir=None):
  """The local weights file: `path` if given, else `<cache_dir>/<basename of url>`, downloaded once if missing."""
  url = url or FID_WEIGHTS_URL
  if path:
    path = os.path.expanduser(path)
    if not os.path.exists(path):
      raise FileNotFoundError(f"Inception weights {path} not found: download {url} to {path} "
                              f"and pass eval.inception_path={path}")
    return path
  target = os.path.join(os.path.expanduser(cache_dir or DEFAULT_CACHE_DIR), os.path.basename(url))
  if not os.path.exists(target):
    try:
      _download(url, target)
    except (OSError, urllib.error.URLError, ValueError) as error:
      raise OSError(f"could not download the FID Inception weights ({error}): download {url} to {target} "
                    f"and pass eval.inception_path={target}") from error
  return target


@functools.lru_cache(maxsize=None)
def _jitted_apply(resize, precision):
  """One jitted `apply(variables, images)` per setting, shared by every `features_fn` (one compile per shape)."""
  model = InceptionV3(resize=resize, precision=precision)
  return jax.jit(model.apply)


def _fetch(output, size):
  return InceptionOutput(*(np.asarray(o)[:size] for o in output))


def get_inception_fn(path=None, url=None, cache_dir=None, *, batch_size=64, resize="pytorch", precision=None,
                     variables=None):
  """Builds the FID Inception feature extractor.

  Args:
    path: local `.pth` file of the pytorch-fid weights; takes precedence.
    url: where to download them when `path` is None (default `FID_WEIGHTS_URL`).
    cache_dir: download folder (default `~/.cache/score_jax`).
    batch_size: images per jitted call; the last chunk is zero-padded, so one compilation per image size.
    resize: "pytorch" (pytorch-fid) or "tf1"; see `InceptionV3`.
    precision: convolution / matmul precision (None: JAX's default).
    variables: Flax variables to use instead of a file (tests, benchmarks).

  Returns:
    `features_fn(images) -> InceptionOutput(pool3 (N, 2048), logits (N, 1008))`, numpy float32, for NHWC
    `images` (N, H, W, 3): uint8 in 0..255 or float in [0, 1].
  """
  if variables is None:
    variables = load_inception_variables(resolve_weights(path, url, cache_dir))
  variables = jax.device_put(variables)  # once, not with every batch
  apply_fn = _jitted_apply(resize, precision)

  def features_fn(images):
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3:
      raise ValueError(f"expected NHWC RGB images, got shape {images.shape}")
    outputs, pending = [InceptionOutput(np.zeros((0, 2048), np.float32), np.zeros((0, NUM_CLASSES), np.float32))], None
    for start in range(0, len(images), batch_size):
      chunk = images[start:start + batch_size]
      padded = np.concatenate([chunk, np.zeros((batch_size - len(chunk),) + chunk.shape[1:], chunk.dtype)])
      launched = (apply_fn(variables, padded), len(chunk))  # dispatched before the previous chunk is fetched
      if pending:
        outputs.append(_fetch(*pending))
      pending = launched
    if pending:
      outputs.append(_fetch(*pending))
    return InceptionOutput(*(np.concatenate(o) for o in zip(*outputs)))

  return features_fn
