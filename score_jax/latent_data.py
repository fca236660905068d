"""Latent data (Rombach et al. 2022): a run on `data.autoencoder`'s latents instead of pixels.

The images are encoded once into a cache of the posterior's moments (`score_jax.latent_cache`); each training
step draws z = mean + std eps (EDM2's practice) from a random stream of its own and normalises it
(`data.latent_norm`): "scaling" is the autoencoder's (z - shift_factor) scaling_factor, "channels" is EDM2's
(z - data.latent_mean) / data.latent_std * data.latent_target_std per channel. `LatentData` is a run's `Data`
in latent space: `scaler` normalises, `inverse_scaler` denormalises, decodes (jitted, `data.autoencoder_batch_size`
latents at a time) and maps the decoded [-1, 1] pixels to [0, 1], so samples and FID are decoded pixels.
"""

import functools
import hashlib
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from score_jax import datasets, diffusers_format, latent_cache
from score_jax.autoencoder import load_autoencoder
from score_jax.networks import autoencoder_kl
from score_jax.utils import choice_error

LATENT_NORMS = ("scaling", "channels")
DEFAULT_CACHE_ROOT = os.path.join("~", ".cache", "score_jax", "latents")  # or $SCORE_JAX_LATENT_CACHE
_DRAW_STREAM, _FLIP_STREAM, _EVAL_STREAM = 10, 11, 12  # random streams of their own (datasets' are 0 and 1)
# The data keys that decide which images are encoded, and how (recorded in the cache's fingerprint).
FINGERPRINT_DATA_KEYS = ("dataset", "image_size", "num_channels", "category", "tfrecords_path", "path", "eval_path",
                         "labels_from", "num_eval", "random_flip")


def latent_geometry(path):
  """`(latent_channels, downsample_factor, in_channels)` of the autoencoder at `path`, from a diffusers
  config.json alone (no weights read), else from the loaded autoencoder."""
  config_path = diffusers_format.find_file(path, ["config.json"], "vae") if os.path.isdir(path) else None
  if config_path:
    with open(config_path) as f:
      values = json.load(f)
    if values.get("_class_name") == "AutoencoderKL":
      values = {**autoencoder_kl.DIFFUSERS_DEFAULTS, **values}
      return values["latent_channels"], 2 ** (len(values["block_out_channels"]) - 1), values["in_channels"]
  autoencoder = load_autoencoder(path)  # a score_jax autoencoder workdir: its network tells
  return autoencoder.latent_channels, autoencoder.downsample_factor, autoencoder.module.in_channels


def resolve_latent_shape(config):
  """Records the latent geometry of `data.autoencoder` in `config` (`data.latent_channels`,
  `data.latent_factor`), read from the autoencoder when it is there (and checked against values stated or
  recorded before), else kept as recorded (a trained run's config.json: its network loads without the
  autoencoder); checks the latent keys. No-op for pixel runs.

  Raises:
    ValueError: one line naming the first bad key.
  """
  data = config.data
  if not data.autoencoder:
    return config
  if os.path.exists(data.autoencoder):
    channels, factor, in_channels = latent_geometry(data.autoencoder)
    if in_channels != data.num_channels:
      raise ValueError(f"data.autoencoder={data.autoencoder!r} encodes {in_channels}-channel images, but "
                       f"data.num_channels={data.num_channels}")
    stated = (data.latent_channels, data.latent_factor)
    if stated != (0, 0) and stated != (channels, factor):
      raise ValueError(f"data.latent_channels={stated[0]} and data.latent_factor={stated[1]} (stated or recorded) "
                       f"differ from data.autoencoder={data.autoencoder!r}'s {channels} and {factor}")
    data.latent_channels, data.latent_factor = channels, factor
  elif not data.latent_channels:
    raise ValueError(f"data.autoencoder={data.autoencoder!r} does not exist, and no latent shape is recorded "
                     "(data.latent_channels, data.latent_factor): point it at the autoencoder")
  check_latent_config(config)
  return config


def check_latent_config(config):
  """Raises one `ValueError` naming the first key that a latent run cannot have."""
  data = config.data
  if data.dim or data.dataset not in datasets.IMAGE_DATASETS:
    raise ValueError(f"data.autoencoder needs an image data set ({', '.join(datasets.IMAGE_DATASETS)}), not "
                     f"data.dataset={data.dataset!r}")
  if data.image_size % data.latent_factor:
    raise ValueError(f"data.image_size={data.image_size} is not a multiple of the autoencoder's downsampling "
                     f"factor {data.latent_factor} (data.autoencoder={data.autoencoder!r})")
  if not data.centered:
    raise ValueError("data.autoencoder needs data.centered=True: the autoencoder sees pixels in [-1, 1], and the "
                     "latents are normalised by data.latent_norm (nothing else may rescale them)")
  if data.uniform_dequantization:
    raise ValueError("data.uniform_dequantization=True has no meaning in latent space (data.autoencoder is set)")
  for key in ("enable_bpd", "enable_elbo"):
    if config.eval[key]:
      raise ValueError(f"eval.{key}=True: likelihoods of latents are not likelihoods of the images, and latent "
                       "runs do not report them (data.autoencoder is set)")
  if data.latent_norm not in LATENT_NORMS:
    raise choice_error("data.latent_norm", data.latent_norm, LATENT_NORMS)
  if data.latent_norm == "channels":
    for key in ("latent_mean", "latent_std"):
      if len(data[key]) != data.latent_channels:
        raise ValueError(f"data.{key} has {len(data[key])} values; data.latent_norm='channels' needs one per latent "
                         f"channel ({data.latent_channels})")
    if min(data.latent_std) <= 0 or data.latent_target_std <= 0:
      raise ValueError("data.latent_std and data.latent_target_std must be positive")
  if data.autoencoder_batch_size < 1:
    raise ValueError(f"data.autoencoder_batch_size={data.autoencoder_batch_size} must be >= 1")


def get_normalizer(config, autoencoder):
  """`(normalize, denormalize)`: raw latents <-> the model's space, per `data.latent_norm`."""
  data = config.data
  if data.latent_norm == "channels":
    mean, std = np.asarray(data.latent_mean, np.float32), np.asarray(data.latent_std, np.float32)
    scale, shift = np.float32(data.latent_target_std) / std, mean
  else:
    scale, shift = np.float32(autoencoder.scaling_factor), np.float32(autoencoder.shift_factor)
  return (lambda z: (z - shift) * scale), (lambda x: x / scale + shift)


@functools.partial(jax.jit, static_argnums=(0, 3))
def decode_batched(module, variables, z, batch_size):
  """`module.decode` of `z` in batches of `batch_size` (one `lax.map` step each; the last one padded)."""
  n = z.shape[0]
  if n <= batch_size:
    return module.apply(variables, z, method="decode")
  pad = -n % batch_size
  z = jnp.concatenate([z, jnp.zeros((pad,) + z.shape[1:], z.dtype)]).reshape((-1, batch_size) + z.shape[1:])
  x = jax.lax.map(lambda part: module.apply(variables, part, method="decode"), z)
  return x.reshape((-1,) + x.shape[2:])[:n]


def _local_slice(global_size):
  per_process = global_size // jax.process_count()
  return slice(jax.process_index() * per_process, (jax.process_index() + 1) * per_process)


def _normal(key, shape):
  return np.random.default_rng(key).standard_normal(shape, np.float32)


class LatentDataset:
  """Posterior draws of the cached latents in the pixel data set's order (`datasets.example_indices`): the batch
  of step s depends only on (seed, s). Encodes on first use; `train_source` is the pixel images (FID
  statistics)."""

  def __init__(self, pixels, encode, *, seed, batch_size, eval_batch_size, num_eval, flip, labelled):
    self.pixels, self._encode = pixels, encode
    self.seed, self.batch_size, self.eval_batch_size, self.num_eval = seed, batch_size, eval_batch_size, num_eval
    self.flip, self.labelled = flip, labelled

  @property
  def train_source(self):
    """The pixel training images (uint8 `(H, W, C)`, without labels): `--mode=fid_stats` reads them."""
    if self.pixels.labelled:
      return datasets.MappedSource(self.pixels.train_source, lambda pair: pair[0])
    return self.pixels.train_source

  @functools.cached_property
  def caches(self):
    """`{"train": LatentCache, "eval": LatentCache}`, encoded now where not yet on disk."""
    return self._encode()

  def _draw(self, split, indices, keys, flips):
    mean, std, labels = self.caches[split].gather(indices)
    if self.flip and split == "train":  # axis 1: as is, mirrored (held-out latents are encoded as they are)
      mean, std = (a[np.arange(len(a)), flips.astype(np.int64)] for a in (mean, std))
    eps = np.stack([_normal(key, mean.shape[1:]) for key in keys])
    return mean + std * eps, labels

  def train_batches(self, step, n):
    """float32 `(n, batch_size / process_count, h, w, c)` raw latent draws for steps `step .. step + n - 1`."""
    size = len(self.caches["train"])
    steps = int(step) + np.arange(n)[:, None]
    columns = np.arange(self.batch_size)[_local_slice(self.batch_size)][None, :]
    positions = steps * self.batch_size + columns
    indices = datasets.example_indices(self.seed, size, positions).ravel()
    epochs = (positions // size).ravel()
    flips = np.array([np.random.default_rng((self.seed, _FLIP_STREAM, int(e), int(i))).random() < 0.5
                      for e, i in zip(epochs, indices)])  # per example and epoch
    keys = [(self.seed, _DRAW_STREAM, int(s), int(j)) for s, j in np.broadcast(steps, columns)]
    z, labels = self._draw("train", indices, keys, flips)
    z = z.reshape(positions.shape + z.shape[1:])
    return (z, labels.reshape(positions.shape)) if self.labelled else z

  def eval_batches(self, split="eval"):
    """One in-order pass over the first `num_eval` held-out latents (split "eval") or training ones ("train"),
    unflipped, each drawn from its own fixed key; this process's slice of each batch."""
    cache = self.caches["train" if split == "train" else "eval"]
    size = min(len(cache), self.num_eval) if self.num_eval else len(cache)
    local = np.arange(self.eval_batch_size)[_local_slice(self.eval_batch_size)]
    for b in range(size // self.eval_batch_size):
      keys = [(self.seed, _EVAL_STREAM, b, int(j)) for j in local]
      z, labels = self._draw("train" if split == "train" else "eval", b * self.eval_batch_size + local, keys,
                             np.zeros(len(local), bool))
      yield (z, labels) if self.labelled else z


def cache_directory(config, fingerprint):
  """`data.latent_cache`, else a folder named by the fingerprint's hash under $SCORE_JAX_LATENT_CACHE (default
  ~/.cache/score_jax/latents)."""
  if config.data.latent_cache:
    return config.data.latent_cache
  digest = hashlib.sha256(json.dumps(fingerprint, sort_keys=True).encode()).hexdigest()[:16]
  root = os.environ.get("SCORE_JAX_LATENT_CACHE", DEFAULT_CACHE_ROOT)
  return os.path.join(os.path.expanduser(root), f"{config.data.dataset.lower()}_{config.data.image_size}_{digest}")


def has_labels(config):
  return config.data.dataset in datasets.NUM_CLASSES or (
      config.data.dataset == datasets.LABELLED_FOLDER and config.data.labels_from != "none")


class Prefix:
  """The first `size` items of `source`."""

  def __init__(self, source, size):
    self.source, self.size = source, size

  def __len__(self):
    return self.size

  def __getitem__(self, i):
    return self.source[i]


class LatentData:
  """A latent run's `datasets.Data`: `scaler` (normalise), `inverse_scaler` (denormalise, decode, to [0, 1]) and
  `dataset(labels)` (posterior draws of the cached moments). `autoencoder` None (a run that reads no companion)
  has no maps and encodes nothing (its `dataset` gives the pixel images as `train_source`)."""

  def __init__(self, config, autoencoder):
    self._config, self.autoencoder = config, autoencoder
    if autoencoder is None:
      self.scaler = self.inverse_scaler = _needs_autoencoder
      return
    normalize, denormalize = get_normalizer(config, autoencoder)
    batch_size = config.data.autoencoder_batch_size
    self.scaler = normalize
    self._denormalize = denormalize
    self.inverse_scaler = lambda x: (decode_batched(autoencoder.module, autoencoder.variables, denormalize(x),
                                                    batch_size) + 1.0) / 2.0

  def pixel_decoder(self):
    """`(decode, variables)`: `decode(variables, x)` maps a batch `x` in the model's (normalised latent) space to
    NHWC images in about [-1, 1], a pure function to trace inside a step (REPA's encoder reads the clean images);
    `variables` are the autoencoder's, to pass in as a frozen input (not compiled in as constants)."""
    if self.autoencoder is None:
      _needs_autoencoder()
    module, denormalize = self.autoencoder.module, self._denormalize
    return (lambda variables, x: module.apply(variables, denormalize(x), method="decode")), self.autoencoder.variables

  @functools.cache
  def dataset(self, labels=False):
    config = self._config
    labelled = has_labels(config)
    if labels and not labelled:
      raise ValueError(f"data.dataset={config.data.dataset!r} has no class labels")
    pixels = datasets.get_dataset(config, labels=labelled)
    return LatentDataset(pixels, functools.partial(self._encode, pixels, labelled), seed=config.seed,
                         batch_size=config.training.batch_size, eval_batch_size=config.eval.batch_size,
                         num_eval=config.data.num_eval, flip=config.data.random_flip, labelled=labels)

  def fingerprint(self, split, size):
    data = self._config.data
    return {"autoencoder": latent_cache.autoencoder_identity(data.autoencoder), "split": split, "size": size,
            "data": {key: data[key] for key in FINGERPRINT_DATA_KEYS}, "pixels": "[-1, 1]"}

  def _encode(self, pixels, labelled):
    config = self._config
    if self.autoencoder is None:
      _needs_autoencoder()
    eval_size = min(len(pixels.eval_source), config.data.num_eval) if config.data.num_eval else len(pixels.eval_source)
    splits = {"train": pixels.train_source, "eval": Prefix(pixels.eval_source, eval_size)}
    root = cache_directory(config, self.fingerprint("all", len(pixels.train_source)))
    caches = {}
    for split, source in splits.items():
      directory = os.path.join(root, split)
      latent_cache.check_fingerprint(directory, self.fingerprint(split, len(source)), "data.latent_cache")
      latent_cache.encode_split(self.autoencoder, source, directory, labelled=labelled, flip=config.data.random_flip
                                and split == "train", batch_size=config.data.autoencoder_batch_size,
                                desc=f"encoding {split}")
      if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(f"latent cache {directory}")  # every chunk written, by every process
      caches[split] = latent_cache.LatentCache(directory, len(source))
    logging.info("Latents of %s: %s", config.data.dataset, root)
    return caches


def _needs_autoencoder(*_):
  raise ValueError("data.autoencoder is set but this run loaded no autoencoder: build RunSetup with the "
                   "'autoencoder' companion")


def data_autoencoder(config):
  """The frozen autoencoder of `data.autoencoder` (None for pixel data), read once by the driver (`RunSetup`)."""
  return load_autoencoder(config.data.autoencoder) if config.data.autoencoder else None


def get_latent_data(config, autoencoder):
  """The `LatentData` of a prepared latent config with its loaded `autoencoder` (None: no maps, no data)."""
  return LatentData(config, autoencoder)
