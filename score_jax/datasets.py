"""Data pipelines: batches as functions of the step, so a resumed run sees the same data.

A `Dataset` gives `train_batches(step, n)` -> `(n, global_batch, ...)` for the
`n` optimisation steps starting at `step`, and `eval_batches()` -> an iterable
of held-out batches. Arrays are the process-local part of the global batch.

Image sets (the reference's `datasets.py`) are random-access sources of uint8
`(H, W, C)` images: TFDS data sets through `tfds.data_source` (ArrayRecord, no
TensorFlow), FFHQ / CelebA-HQ TFRecords parsed here, the embedded 8x8 digits
of `score_jax/assets/`, and folders or zips of one's own images (`score_jax.image_folder`). Crops and resizes run on the host with PIL (see `resize`).
`get_dataset(config, labels=True)` pairs every image with its class label (the noise-conditional
classifier of `score_jax.classifier` trains on these) for the data sets in `LABELLED_DATASETS`.
"""

import dataclasses
import functools
import os
from concurrent import futures
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from PIL import Image

from score_jax import image_folder, tfrecord
from score_jax.toy_data import (DIGITS_TRAIN_SIZE, IMAGE_TOY_DATASETS, LABELLED_TOY_DATASETS, TOY_DATASETS,
                                TOY_NUM_CLASSES, load_digits)
from score_jax.utils import choice_error


def get_data_scaler(config):
  """Data in [0, 1] -> model space: [-1, 1] when `data.centered` (image data), else identity."""
  if config.data.centered and not config.data.dim:
    return lambda x: x * 2.0 - 1.0
  return lambda x: x


def get_data_inverse_scaler(config):
  """Inverse of `get_data_scaler`."""
  if config.data.centered and not config.data.dim:
    return lambda x: (x + 1.0) / 2.0
  return lambda x: x


def _local_slice(global_size):
  """This process's `slice` of a global batch of `global_size` examples."""
  per_process = global_size // jax.process_count()
  start = jax.process_index() * per_process
  return slice(start, start + per_process)


@dataclasses.dataclass(frozen=True)
class ToyDataset:
  """Fresh samples for every training step, drawn from `fold_in(seed, step)`; a fixed held-out set."""

  sampler: Callable
  seed: int
  batch_size: int
  eval_batch_size: int
  num_eval: int

  def _local(self, batch, axis):
    """This process's slice of the global batch (every process draws the same global batch); a labelled
    sampler's batches are `(points, labels)`."""
    local = _local_slice(jax.tree_util.tree_leaves(batch)[0].shape[axis])
    return jax.tree_util.tree_map(lambda x: jax.lax.slice_in_dim(x, local.start, local.stop, axis=axis), batch)

  def train_batches(self, step, n):
    keys = jax.vmap(lambda s: jax.random.fold_in(jax.random.PRNGKey(self.seed), s))(step + jnp.arange(n))
    batches = _sample_batches(self.sampler, keys, self.batch_size)
    return self._local(batches, axis=1)

  def eval_batches(self, split="eval"):
    """The fixed held-out set ("eval"), or as many fresh draws from the training distribution ("train")."""
    offset = {"eval": 1_000_003, "train": 2_000_003}[split]
    data = self.sampler(jax.random.PRNGKey(self.seed + offset), self.num_eval)
    for start in range(0, self.num_eval - self.eval_batch_size + 1, self.eval_batch_size):
      yield self._local(jax.tree_util.tree_map(lambda x: x[start:start + self.eval_batch_size], data), axis=0)


@functools.partial(jax.jit, static_argnums=(0, 2))
def _sample_batches(sampler, keys, batch_size):
  return jax.vmap(lambda key: sampler(key, batch_size))(keys)


@functools.lru_cache(maxsize=4)
def epoch_permutation(seed, epoch, size):
  """The order in which epoch `epoch` visits `size` examples: a pure function of `(seed, epoch)`."""
  return np.random.default_rng((seed, epoch)).permutation(size)


def example_indices(seed, size, positions):
  """Example index at each position of the endless stream that concatenates per-epoch permutations."""
  positions = np.asarray(positions, np.int64)
  epochs, offsets = np.divmod(positions, size)
  indices = np.empty_like(positions)
  for epoch in np.unique(epochs):
    at = epochs == epoch
    indices[at] = epoch_permutation(seed, int(epoch), size)[offsets[at]]
  return indices


_TRAIN_STREAM, _EVAL_STREAM = 0, 1  # separate random streams for training and evaluation augmentation


def _to_float(images, keys, flip, dequantize):
  """uint8 images -> float32 in [0, 1]; optional random flip and uniform dequantization, one RNG per image.

  Dequantization is the reference's `(U[0, 1) + 255 x) / 256`, so pixel k lands in [k/256, (k+1)/256).
  """
  out = np.empty(images.shape, np.float32)
  for i, (image, key) in enumerate(zip(images, keys)):
    rng = np.random.default_rng(key)
    if flip and rng.random() < 0.5:
      image = image[:, ::-1]  # horizontal: the width axis of an HWC image
    if dequantize:
      out[i] = (image + rng.random(image.shape, np.float32)) / 256.0
    else:
      out[i] = image / np.float32(255.0)
  return out


@dataclasses.dataclass(frozen=True)
class ImageDataset:
  """Images from random-access sources, in a seeded per-epoch order; the batch of step s depends only on (seed, s).

  Each source is a sequence (`len`, `[i]`) of uint8 `(H, W, C)` images, already cropped and resized;
  with `labelled`, of `(image, label)` pairs, and every batch is `(images, int32 labels)`.
  Global batch position j of step s is example `permutation(seed, epoch)[(s * batch_size + j) % N]`;
  process i reads and augments only positions `[i * B / P, (i + 1) * B / P)`.
  """

  train_source: Sequence
  eval_source: Sequence
  seed: int
  batch_size: int
  eval_batch_size: int
  num_eval: int
  random_flip: bool = False
  uniform_dequantization: bool = False
  labelled: bool = False

  def train_batches(self, step, n):
    """float32 `(n, batch_size / process_count, H, W, C)` in [0, 1] for steps `step .. step + n - 1`."""
    steps = int(step) + np.arange(n)[:, None]
    columns = np.arange(self.batch_size)[_local_slice(self.batch_size)][None, :]
    indices = example_indices(self.seed, len(self.train_source), steps * self.batch_size + columns)
    images, labels = self._read(self.train_source, indices.ravel())
    keys = [(self.seed, _TRAIN_STREAM, int(s), int(j)) for s, j in np.broadcast(steps, columns)]
    images = _to_float(images, keys, self.random_flip, self.uniform_dequantization)
    images = images.reshape(indices.shape + images.shape[1:])
    return (images, labels.reshape(indices.shape)) if self.labelled else images

  def eval_batches(self, split="eval", uniform_dequantization=False):
    """One in-order pass over the first `num_eval` examples of `split` ("eval" or "train"), no flips.

    The last partial batch is dropped (`drop_remainder=True`, as the reference), so every
    batch has `eval_batch_size` examples; this process gets its slice of each.
    """
    source = {"eval": self.eval_source, "train": self.train_source}[split]
    size = min(len(source), self.num_eval) if self.num_eval else len(source)
    if size < self.eval_batch_size:
      raise ValueError(f"the {split} split has {size} examples, fewer than eval.batch_size={self.eval_batch_size}")
    local = np.arange(self.eval_batch_size)[_local_slice(self.eval_batch_size)]
    for b in range(size // self.eval_batch_size):
      images, labels = self._read(source, b * self.eval_batch_size + local)
      keys = [(self.seed, _EVAL_STREAM, b, int(j)) for j in local]
      images = _to_float(images, keys, False, uniform_dequantization)
      yield (images, labels) if self.labelled else images

  def _read(self, source, indices):
    """uint8 images and int32 labels (None when not `labelled`) of `source[indices]`."""
    if not self.labelled:
      return _gather(source, indices), None
    pairs = _gather(source, indices, stack=False)
    return np.stack([image for image, _ in pairs]), np.array([label for _, label in pairs], np.int32)


DECODING_THREADS = 8
_POOL = futures.ThreadPoolExecutor(max_workers=DECODING_THREADS)  # PIL decoding and resizing release the GIL


def set_decoding_threads(count):
  """Sets the size of the thread pool that reads, decodes and resizes images (default `DECODING_THREADS`)."""
  global _POOL
  if count < 1:
    raise ValueError(f"decoding threads must be >= 1, got {count}")
  _POOL.shutdown(wait=False)
  _POOL = futures.ThreadPoolExecutor(max_workers=count)


class ReadAhead:
  """`read(step)` for steps `s, s + stride, s + 2 stride, ...`, each read in a background thread while the
  caller trains on the one before, so that decoding never waits for the training thread (nor it for
  decoding, when decoding keeps up). The result of `read(step)` is `fn(step)` whatever was read ahead."""

  def __init__(self, fn, stride):
    self.fn, self.stride = fn, stride
    self._worker = futures.ThreadPoolExecutor(max_workers=1)
    self._ahead = None  # (step, future)

  def __call__(self, step):
    ahead, self._ahead = self._ahead, None
    batch = ahead[1].result() if ahead is not None and ahead[0] == step else self.fn(step)
    self._ahead = (step + self.stride, self._worker.submit(self.fn, step + self.stride))
    return batch



def _gather(source, indices, stack=True):
  if isinstance(source, np.ndarray):
    return source[indices]
  items = list(_POOL.map(source.__getitem__, (int(i) for i in indices)))
  return np.stack(items) if stack else items


# Host-side preprocessing of uint8 HWC images.

def resize(image, height, width, method="bilinear"):
  """Antialiased resize of a uint8 `(H, W, C)` image with PIL, rounded back to uint8.

  PIL widens its bilinear / bicubic filters by the downscaling factor: the antialiasing
  of the reference's `tf.image.resize(antialias=True)` (and of `jax.image.resize`, the same
  algorithm; they agree within 1/255, see the tests). PIL runs in C on images of any size,
  without a compile per input shape, releases the GIL, and keeps 8-bit levels for dequantization.
  """
  if image.shape[:2] == (height, width):
    return image
  resample = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC}[method]
  channels = [np.asarray(Image.fromarray(image[..., c]).resize((width, height), resample))
              for c in range(image.shape[-1])]
  return np.stack(channels, axis=-1)


def central_crop(image, size):
  """The centred `size x size` window."""
  top, left = (image.shape[0] - size) // 2, (image.shape[1] - size) // 2
  return image[top:top + size, left:left + size]


def resize_small(image, resolution):
  """Shorter side -> `resolution`, aspect ratio kept; sizes rounded to integers (the reference kept them
  float: see docs/differences.md#resize-rounding)."""
  height, width = image.shape[:2]
  ratio = resolution / min(height, width)
  return resize(image, round(height * ratio), round(width * ratio))


def crop_resize(image, resolution):
  """Largest centred square, then a bicubic antialiased resize (the reference's LSUN path)."""
  return resize(central_crop(image, min(image.shape[:2])), resolution, resolution, "bicubic")


# TFDS data sets, read without TensorFlow.

class DataNotPreparedError(ValueError):
  """A TFDS data set is not on disk in a random-access format."""


@dataclasses.dataclass(frozen=True)
class MappedSource:
  """`source[i]` passed through `fn` on read."""

  source: Sequence
  fn: Callable

  def __len__(self):
    return len(self.source)

  def __getitem__(self, i):
    return self.fn(self.source[i])


def tfds_source(name, split, data_dir=None, download=False):
  """`tfds.data_source(name, split)` with errors that say what to do.

  With `download` (`data.download`), a data set not yet prepared is prepared first, by TFDS's own
  download and preparation as ArrayRecord files (`prepare_tfds`: process 0; the other processes wait);
  without it, the run stops with the command that prepares it. `data_dir` None means tfds's default:
  $TFDS_DATA_DIR, else ~/tensorflow_datasets.
  """
  import tensorflow_datasets as tfds  # imported here: toy runs do not need it

  builder = tfds.builder(name, data_dir=data_dir)
  splits = builder.info.splits  # empty until the data set is prepared (and under tfds.testing.mock_data)
  if splits and split not in splits:
    raise ValueError(f"TFDS data set {name!r} has no split {split!r}; available splits: {', '.join(sorted(splits))}")
  try:
    return tfds.data_source(name, split=split, data_dir=data_dir, download=False)
  except Exception as error:  # tfds raises several types for "absent" and "prepared as TFRecord"
    if not download:
      raise DataNotPreparedError(_not_prepared(name, split, builder.data_dir, data_dir, error)
                                 + " (data.download=False: nothing is downloaded during the run)") from error
  prepare_tfds(name, data_dir)
  try:
    return tfds.data_source(name, split=split, data_dir=data_dir, download=False)
  except Exception as error:  # e.g. a copy already prepared as TFRecord files
    raise DataNotPreparedError(_not_prepared(name, split, builder.data_dir, data_dir, error)) from error


def _not_prepared(name, split, where, data_dir, error):
  root = data_dir or os.environ.get("TFDS_DATA_DIR", "~/tensorflow_datasets")
  return (f"cannot open TFDS data set {name!r} (split {split!r}) in {where} for random access "
          f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}). score_jax reads the "
          f"ArrayRecord format without TensorFlow. Prepare it once on a machine with network access: `tfds build "
          f"{name} --file_format=array_record --data_dir={root}` or `python -c \"import tensorflow_datasets as tfds; "
          f"tfds.data_source('{name}', download=True)\"`, then point TFDS_DATA_DIR at that folder (now {root})")


def prepare_tfds(name, data_dir=None):
  """Downloads and prepares the TFDS data set `name` as ArrayRecord files in `data_dir` (TFDS's own
  `download_and_prepare`, with its progress bars), on process 0 while the other processes wait.

  Raises:
    DataNotPreparedError: the preparation needs TensorFlow (TFDS encodes most data sets' images with it)
      and it is not installed, or process 0 could not prepare it.
  """
  import tensorflow_datasets as tfds

  failure = None
  if jax.process_index() == 0:
    builder = tfds.builder(name, data_dir=data_dir, file_format="array_record")
    logging.info("Preparing TFDS data set %r in %s: downloaded once, then read from there (data.download=True)",
                 name, builder.data_dir)
    try:
      builder.download_and_prepare()
    except ModuleNotFoundError as error:
      if error.name != "tensorflow":
        raise
      failure = (f"preparing TFDS data set {name!r} needs TensorFlow (TFDS encodes its images with it; reading "
                 "does not): `pip install tensorflow-cpu` and run again, or prepare it where TensorFlow is "
                 f"installed: `tfds build {name} --file_format=array_record`")
    except Exception as error:  # noqa: BLE001 -- no network, a full disk, a failed checksum: one line, then stop
      cause = str(error).splitlines()[0] if str(error) else ""
      failure = (f"could not download and prepare TFDS data set {name!r} in {builder.data_dir} "
                 f"({type(error).__name__}: {cause}); without network, prepare it elsewhere with `tfds build "
                 f"{name} --file_format=array_record`, point TFDS_DATA_DIR at it and set data.download=False")
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils

    prepared = multihost_utils.broadcast_one_to_all(np.int32(failure is None))  # the others wait here
    if not prepared and failure is None:
      failure = f"process 0 could not prepare TFDS data set {name!r} (see its log)"
  if failure:
    raise DataNotPreparedError(failure)


def _tfds_pair(name, train_split, eval_split, preprocess, config, labelled=False):
  if labelled:
    read = lambda example: (preprocess(example["image"]), int(example["label"]))  # noqa: E731
  else:
    read = lambda example: preprocess(example["image"])  # noqa: E731
  return tuple(MappedSource(tfds_source(name, split, download=config.data.download), read)
               for split in (train_split, eval_split))


def _resize_to(size):
  return lambda image: resize(image, size, size)


def cifar10(config, labelled=False):
  return _tfds_pair("cifar10", "train", "test", _resize_to(config.data.image_size), config, labelled)


def svhn(config, labelled=False):
  return _tfds_pair("svhn_cropped", "train", "test", _resize_to(config.data.image_size), config, labelled)


def mnist(config, labelled=False):
  return _tfds_pair("mnist", "train", "test", _resize_to(config.data.image_size), config, labelled)


def celeba(config):
  size = config.data.image_size
  return _tfds_pair("celeb_a", "train", "validation", lambda image: resize_small(central_crop(image, 140), size),
                    config)


def lsun(config):
  size, category = config.data.image_size, config.data.category
  if not category:
    raise ValueError("data.dataset='LSUN' needs data.category, e.g. 'bedroom' or 'church_outdoor'")
  if size == 128:
    preprocess = lambda image: central_crop(resize_small(image, size), size)  # noqa: E731
  else:
    preprocess = lambda image: crop_resize(image, size)  # noqa: E731
  return _tfds_pair(f"lsun/{category}", "train", "validation", preprocess, config)


# FFHQ / CelebA-HQ: TFRecord files of tf.train.Example protos (score_jax.tfrecord).

def tfrecords(config):
  """FFHQ / CelebA-HQ from `data.tfrecords_path`; evaluation reads the same records, as the reference."""
  if not config.data.tfrecords_path:
    raise ValueError(f"data.dataset={config.data.dataset!r} reads data.tfrecords_path, which is empty: set it "
                     "to the .tfrecords file (or glob) of the wanted resolution")
  source = tfrecord.TFRecordImages(config.data.tfrecords_path)
  return source, source


@dataclasses.dataclass(frozen=True)
class PairSource:
  """`(images[i], labels[i])` pairs of two arrays."""

  images: np.ndarray
  labels: np.ndarray

  def __len__(self):
    return len(self.images)

  def __getitem__(self, i):
    return self.images[i], int(self.labels[i])


def digits(config, labelled=False):
  """The embedded 8x8 digits at `data.image_size`: the first 1500 train, the last 297 are held out."""
  images, labels = load_digits(config.data.image_size)
  train, held_out = slice(None, DIGITS_TRAIN_SIZE), slice(DIGITS_TRAIN_SIZE, None)
  if labelled:
    return PairSource(images[train], labels[train]), PairSource(images[held_out], labels[held_out])
  return images[train], images[held_out]


# Images of one's own: a folder or a zip (score_jax.image_folder).

HELD_OUT_SEED = 0  # the fixed permutation that sets data.num_eval images of data.path aside, whatever the run's seed


def _scanned_files(path, labels_from, what, label_names=None):
  """`ImageFiles` of `path`, scanned once per process (a run builds its data twice when the model is
  class-conditional: the images alone and with labels), again when `path` has changed since."""
  stamp = os.path.getmtime(path) if path and os.path.exists(path) else None
  return _scan(path, labels_from, what, label_names, stamp)


@functools.lru_cache(maxsize=8)
def _scan(path, labels_from, what, label_names, stamp):
  del stamp  # part of the cache key only
  files = image_folder.ImageFiles(path, labels_from, what=what, label_names=label_names)
  files.scan()
  return files


def folder(config, labelled=False):
  """`data.path`'s images, centre-cropped and resized to `data.image_size`; held out: `data.eval_path`'s
  images, else `data.num_eval` of `data.path` chosen by a fixed permutation (the rest train)."""
  data = config.data
  files = _scanned_files(data.path, data.labels_from, "data.path")
  eval_files = None  # labelled in the training set's numbering: an eval folder missing a class shifts no label
  if data.eval_path:
    eval_files = _scanned_files(data.eval_path, data.labels_from, "data.eval_path", files.label_names or None)
  for source in (files, eval_files) if eval_files else (files,):
    if source.channels != data.num_channels:
      raise ValueError(f"the images of {source.path!r} have {source.channels} channels, but data.num_channels="
                       f"{data.num_channels}")
  if labelled and files.labels is None:
    raise ValueError("class labels of data.dataset='folder' need data.labels_from='dataset_json' or 'subfolders'")
  num_classes = config.model.num_classes
  if labelled and num_classes and num_classes != files.num_classes:
    raise ValueError(f"model.num_classes={num_classes}, but the labels of data.path={data.path!r} have "
                     f"{files.num_classes} classes")
  if files.label_names and jax.process_index() == 0 and data.labels_from == "subfolders":
    logging.info("Classes of %s: %s", data.path, ", ".join(f"{i}={n}" for i, n in enumerate(files.label_names)))
  size = data.image_size
  read_image = lambda image: crop_resize(image, size)  # noqa: E731
  pairs = lambda source: MappedSource(  # noqa: E731
      image_folder.Labelled(source), lambda pair: (read_image(pair[0]), pair[1])) if labelled else MappedSource(
          source, read_image)
  if eval_files is not None:
    return pairs(files), pairs(eval_files)
  if data.num_eval >= len(files):
    raise ValueError(f"data.num_eval={data.num_eval} would hold out every image of data.path={data.path!r} "
                     f"({len(files)} images): set data.num_eval lower or give data.eval_path")
  order = np.random.default_rng(HELD_OUT_SEED).permutation(len(files))
  held_out, train = np.sort(order[:data.num_eval]), np.sort(order[data.num_eval:])
  return (pairs(image_folder.Subset(files, train)), pairs(image_folder.Subset(files, held_out)))


IMAGE_DATASETS = {
    "CIFAR10": cifar10,
    "SVHN": svhn,
    "MNIST": mnist,
    "CELEBA": celeba,
    "LSUN": lsun,
    "FFHQ": tfrecords,
    "CelebAHQ": tfrecords,
    "digits": digits,
    "folder": folder,
}
DATASETS = {**TOY_DATASETS, **IMAGE_TOY_DATASETS, **IMAGE_DATASETS}
LABELLED_DATASETS = ("CIFAR10", "MNIST", "SVHN", "digits", "folder")  # image data sets with class labels
LABELLED_FOLDER = "folder"  # labelled when data.labels_from says where its labels are; its class count comes from them
NUM_CLASSES = {"CIFAR10": 10, "MNIST": 10, "SVHN": 10, "digits": 10, **TOY_NUM_CLASSES}  # every labelled set


def get_dataset(config, labels=False, batch_size=None):
  """Builds the data set named by `config.data.dataset`.

  Args:
    labels: batches are `(data, int32 labels)`; only for the data sets in `NUM_CLASSES` (the labelled
      images, and the toys with a natural label: 8gaussians' mode, checkerboard's square, moons' moon).
    batch_size: the training batch size (default `training.batch_size`).
  """
  name = config.data.dataset
  if name not in DATASETS:
    raise choice_error("data.dataset", name, DATASETS)
  if labels and name not in NUM_CLASSES and name != LABELLED_FOLDER:
    raise ValueError(f"data.dataset={name!r} has no class labels; labelled data sets: {', '.join(NUM_CLASSES)}")
  if name in IMAGE_DATASETS:
    if labels:
      train_source, eval_source = IMAGE_DATASETS[name](config, labelled=True)
    else:
      train_source, eval_source = IMAGE_DATASETS[name](config)
    expected = (config.data.image_size, config.data.image_size, config.data.num_channels)
    shape = tuple((train_source[0][0] if labels else train_source[0]).shape)
    if shape != expected:
      raise ValueError(f"data.dataset={name!r} gives images of shape {shape}, but "
                       f"data.image_size and data.num_channels ask for {expected}")
    return ImageDataset(train_source, eval_source, seed=config.seed,
                        batch_size=batch_size or config.training.batch_size,
                        eval_batch_size=config.eval.batch_size, num_eval=config.data.num_eval,
                        random_flip=config.data.random_flip,
                        uniform_dequantization=config.data.uniform_dequantization, labelled=labels)
  if name in IMAGE_TOY_DATASETS:
    sampler = functools.partial(IMAGE_TOY_DATASETS[name], image_size=config.data.image_size,
                                num_channels=config.data.num_channels)
  else:
    sampler = LABELLED_TOY_DATASETS[name] if labels else TOY_DATASETS[name]
  return ToyDataset(sampler=sampler, seed=config.seed, batch_size=config.training.batch_size,
                    eval_batch_size=config.eval.batch_size, num_eval=config.data.num_eval)


class Data:
  """A run's data as its config states it, before any is read: the maps between the data's [0, 1] space and
  the model's (`scaler`, `inverse_scaler`) and the data sets, each built on first use (`dataset(labels)`), so
  that sampling and editing read no data."""

  def __init__(self, config):
    self._config = config
    self.scaler = get_data_scaler(config)
    self.inverse_scaler = get_data_inverse_scaler(config)

  @functools.cache
  def dataset(self, labels=False):
    """`get_dataset(config, labels)`, built once."""
    return get_dataset(self._config, labels=labels)


def get_data(config):
  """The `Data` of a (completed) config."""
  return Data(config)

