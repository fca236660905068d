"""Data pipelines: step-indexed order, exact resume, per-host slices, preprocessing, TFDS, TFRecords, digits."""

import http.server
import io
import struct
import threading

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from configs import default_cifar10_configs, digits as digits_config
from score_jax import datasets, tfrecord, toy_data
from score_jax.run_setup import validate_config


def _image_config(dataset, **overrides):
  config = default_cifar10_configs.get_default_configs()
  config.data.dataset = dataset
  config.training.batch_size = 4
  config.eval.batch_size = 4
  config.data.num_eval = 0
  for key, value in overrides.items():
    section, name = key.split(".")
    config[section][name] = value
  return config


def _coded_images(n, size=4):
  """Image i holds the value i in its left column and 0 elsewhere: identifiable and not mirror-symmetric."""
  images = np.zeros((n, size, size, 1), np.uint8)
  images[:, :, 0, 0] = np.arange(n)[:, None]
  return images


def _dataset(n=10, batch_size=4, **kwargs):
  kwargs = {"seed": 3, "eval_batch_size": 4, "num_eval": 0, **kwargs}
  return datasets.ImageDataset(_coded_images(n), _coded_images(n)[::-1].copy(), batch_size=batch_size, **kwargs)


def _ids(batches):
  return np.round(batches[..., :, 0, 0] * 255).max(axis=-1).astype(int)  # (n, batch): the coded index


class _CountingSource:
  def __init__(self, images):
    self.images, self.reads = images, []

  def __len__(self):
    return len(self.images)

  def __getitem__(self, i):
    self.reads.append(i)
    return self.images[i]


def _as_process(monkeypatch, index, count):
  monkeypatch.setattr(jax, "process_index", lambda: index)
  monkeypatch.setattr(jax, "process_count", lambda: count)


# The order of examples: a pure function of (seed, step).

def test_every_epoch_is_a_permutation_and_epochs_differ():
  ids = _ids(_dataset().train_batches(0, 5)).ravel()  # 20 positions = 2 epochs of 10
  assert sorted(ids[:10]) == list(range(10)) and sorted(ids[10:]) == list(range(10))
  assert list(ids[:10]) != list(ids[10:])


def test_order_depends_on_the_seed_only():
  a, b = _dataset().train_batches(0, 5), _dataset().train_batches(0, 5)
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(_ids(a), _ids(_dataset(seed=4).train_batches(0, 5)))


def test_resume_reads_the_same_batches():
  straight = _dataset(random_flip=True, uniform_dequantization=True).train_batches(0, 7)
  resumed = _dataset(random_flip=True, uniform_dequantization=True).train_batches(4, 3)  # nothing read before
  np.testing.assert_array_equal(resumed, straight[4:])
  one_by_one = np.concatenate([_dataset().train_batches(s, 1) for s in range(7)])
  np.testing.assert_array_equal(one_by_one, _dataset().train_batches(0, 7))


def test_each_process_reads_only_its_slice(monkeypatch):
  images = _coded_images(10)
  full = datasets.ImageDataset(images, images, seed=3, batch_size=4, eval_batch_size=4, num_eval=0,
                               random_flip=True, uniform_dequantization=True)
  expected, expected_eval = full.train_batches(2, 3), np.stack(list(full.eval_batches()))
  parts = []
  for index in range(2):
    _as_process(monkeypatch, index, 2)
    source = _CountingSource(images)
    local = datasets.ImageDataset(source, source, seed=3, batch_size=4, eval_batch_size=4, num_eval=0,
                                  random_flip=True, uniform_dequantization=True)
    parts.append(local.train_batches(2, 3))
    assert parts[-1].shape == (3, 2, 4, 4, 1) and len(source.reads) == 3 * 2
    parts.append(np.stack(list(local.eval_batches())))
  np.testing.assert_array_equal(np.concatenate(parts[0::2], axis=1), expected)
  np.testing.assert_array_equal(np.concatenate(parts[1::2], axis=1), expected_eval)


# Augmentation and evaluation.

def test_flips_only_in_training():
  dataset = _dataset(n=50, batch_size=50, random_flip=True)
  batch = dataset.train_batches(0, 4).reshape(200, 4, 4, 1)
  flipped = batch[:, :, 0, 0].max(axis=1) == 0  # the coded column moved to the right edge
  assert 0.35 < flipped.mean() < 0.65
  unflipped = batch[flipped][:, :, ::-1]
  np.testing.assert_allclose(unflipped, _coded_images(50)[_ids(unflipped)] / 255.0, atol=1e-7)
  for eval_batch in dataset.eval_batches():
    assert (eval_batch[:, :, 1:] == 0).all()
  assert not (_ids(_dataset(n=50, batch_size=50).train_batches(0, 4)) == 0).all()


def test_pixels_in_unit_range_and_dequantization_bounds():
  plain = _dataset(n=256, batch_size=64).train_batches(0, 4)
  dequantized = _dataset(n=256, batch_size=64, uniform_dequantization=True).train_batches(0, 4)
  levels = np.round(plain * 255)
  np.testing.assert_allclose(plain, levels / 255, atol=1e-7)
  noise = dequantized * 256 - levels  # (U + 255 x) / 256 with x = k / 255: U = 256 y - k in [0, 1)
  assert noise.min() >= -1e-4 and noise.max() < 1 + 1e-4 and 0.45 < noise.mean() < 0.55
  assert dequantized.dtype == np.float32 and dequantized.min() >= 0 and dequantized.max() < 1


def test_eval_pass_is_in_order_and_drops_the_remainder():
  batches = list(_dataset(n=10, num_eval=9).eval_batches())
  assert len(batches) == 2  # 9 // 4, the last example dropped
  np.testing.assert_array_equal(_ids(np.stack(batches)).ravel(), np.arange(9, 1, -1))
  train_pass = list(_dataset(n=10).eval_batches(split="train"))
  np.testing.assert_array_equal(_ids(np.stack(train_pass)).ravel(), np.arange(8))
  noisy = next(_dataset(n=10).eval_batches(uniform_dequantization=True))
  np.testing.assert_array_equal(noisy, next(_dataset(n=10).eval_batches(uniform_dequantization=True)))
  assert np.abs(noisy - next(_dataset(n=10).eval_batches())).max() > 0
  with pytest.raises(ValueError, match="fewer than eval.batch_size"):
    next(_dataset(n=3).eval_batches())


# Resizing and cropping.

def test_pil_resize_agrees_with_antialiased_jax_resize():
  rng = np.random.default_rng(0)
  coarse = rng.integers(0, 256, (12, 10, 3)).astype(np.float32)
  image = np.asarray(jax.image.resize(coarse, (140, 120, 3), "cubic")).clip(0, 255).round().astype(np.uint8)
  for size, method, jax_method in [(64, "bilinear", "linear"), (37, "bicubic", "cubic"), (200, "bilinear", "linear")]:
    ours = datasets.resize(image, size, size, method).astype(np.float32)
    theirs = jax.image.resize(jnp.asarray(image, jnp.float32), (size, size, 3), jax_method, antialias=True)
    difference = np.abs(ours - np.clip(theirs, 0, 255))  # PIL clips bicubic overshoot into uint8
    assert ours.shape == (size, size, 3)
    assert difference.max() <= 1.25 and difference.mean() < 0.35  # rounding to uint8, plus float error


def test_crops_and_integer_sizes():
  image = np.zeros((218, 178, 3), np.uint8)
  assert datasets.central_crop(image, 140).shape == (140, 140, 3)
  assert datasets.resize_small(np.zeros((218, 179, 3), np.uint8), 64).shape == (78, 64, 3)  # 77.9 rounded to an integer
  assert datasets.crop_resize(image, 32).shape == (32, 32, 3)
  marked = np.zeros((6, 4, 1), np.uint8)
  marked[1:5, :, 0] = 7
  assert (datasets.central_crop(marked, 4) == 7).all()


# TFDS data sets, mocked (no files, no network).

@pytest.mark.parametrize("dataset, overrides, shape", [
    ("CIFAR10", {}, (32, 32, 3)),
    ("CIFAR10", {"data.image_size": 16}, (16, 16, 3)),
    ("CELEBA", {"data.image_size": 64}, (64, 64, 3)),
    ("MNIST", {"data.num_channels": 1}, (32, 32, 1)),
])
def test_tfds_pipelines(dataset, overrides, shape):
  config = _image_config(dataset, **{"data.random_flip": True, **overrides})
  with tfds.testing.mock_data(num_examples=6):
    dataset_a, dataset_b = datasets.get_dataset(config), datasets.get_dataset(config)
    batches = dataset_a.train_batches(1, 2)
    np.testing.assert_array_equal(batches, dataset_b.train_batches(1, 2))
    eval_batches = list(dataset_a.eval_batches())
  assert batches.shape == (2, 4) + shape and batches.dtype == np.float32
  assert 0 <= batches.min() and batches.max() <= 1 and batches.std() > 0.01
  if shape == (32, 32, 3):  # no resize: the uint8 levels k / 255 pass through
    np.testing.assert_allclose(batches * 255, np.round(batches * 255), atol=1e-4)
  assert len(eval_batches) == 1 and eval_batches[0].shape == (4,) + shape


def test_tfds_missing_split_lists_the_available_ones(monkeypatch):
  class FakeBuilder:
    data_dir = "/nowhere"

    class info:  # noqa: N801
      splits = {"train": None, "test": None}

  monkeypatch.setattr(tfds, "builder", lambda name, data_dir=None: FakeBuilder)
  with pytest.raises(ValueError, match="has no split 'validation'; available splits: test, train"):
    datasets.tfds_source("cifar10", "validation")


def test_tfds_not_prepared_says_what_to_do(tmp_path):
  with pytest.raises(datasets.DataNotPreparedError) as error:
    datasets.tfds_source("cifar10", "train", data_dir=str(tmp_path))
  for hint in ("tfds build cifar10 --file_format=array_record", "download=True", "TFDS_DATA_DIR", str(tmp_path)):
    assert hint in str(error.value)
  assert isinstance(error.value, ValueError)  # main.py prints it as one line


class LocalDigits(tfds.core.GeneratorBasedBuilder):
  """A TFDS data set that "downloads" the test's digits over HTTP from localhost (TFDS's own download
  manager and ArrayRecord writer; its images are PNG bytes, which TFDS stores without TensorFlow)."""

  VERSION = tfds.core.Version("1.0.0")
  URL = None  # set by the test: where the server is

  def _info(self):
    return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
        "image": tfds.features.Image(shape=(8, 8, 1)), "label": tfds.features.ClassLabel(num_classes=10)}))

  def _split_generators(self, dl_manager):
    path = dl_manager.download(self.URL)
    return {"train": self._generate_examples(path, 0), "test": self._generate_examples(path, 1)}

  def _generate_examples(self, path, part):
    with open(path, "rb") as f, np.load(f) as data:
      images, labels = data["images"], data["labels"]
    for i in range(part, len(images), 2):
      png = io.BytesIO()
      Image.fromarray(images[i, ..., 0]).save(png, format="png")
      yield i, {"image": png.getvalue(), "label": int(labels[i])}


@pytest.fixture
def digits_server(tmp_path):
  """An HTTP server on localhost with `digits.npz` (the first 40 8x8 digits); counts the GET requests."""
  images, labels = toy_data.load_digits(8)
  np.savez(tmp_path / "digits.npz", images=images[:40], labels=labels[:40])
  requests = []

  class Handler(http.server.SimpleHTTPRequestHandler):
    def __init__(self, *args, **kwargs):
      super().__init__(*args, directory=str(tmp_path), **kwargs)

    def do_GET(self):  # noqa: N802 -- http.server's name
      requests.append(self.path)
      super().do_GET()

    def log_message(self, *args):
      pass

  server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
  threading.Thread(target=server.serve_forever, daemon=True).start()
  LocalDigits.URL = f"http://127.0.0.1:{server.server_port}/digits.npz"
  yield images[:40], labels[:40], requests
  server.shutdown()


def test_missing_tfds_data_is_prepared_once_on_first_use(digits_server, tmp_path):
  images, labels, requests = digits_server
  data_dir = str(tmp_path / "tfds")
  with pytest.raises(datasets.DataNotPreparedError) as error:
    datasets.tfds_source("local_digits", "train", data_dir=data_dir, download=False)
  assert "data.download=False" in str(error.value) and "\n" not in str(error.value)
  assert requests == []
  train = datasets.tfds_source("local_digits", "train", data_dir=data_dir, download=True)
  test = datasets.tfds_source("local_digits", "test", data_dir=data_dir, download=True)
  assert requests == ["/digits.npz"]  # downloaded once, for both splits
  assert (len(train), len(test)) == (20, 20)
  by_label = sorted((int(example["label"]), example["image"].tobytes()) for example in (train[i] for i in range(20)))
  expected = sorted((int(labels[i]), images[i].tobytes()) for i in range(0, 40, 2))
  assert by_label == expected  # TFDS shuffles on write: the same examples, in its own order


def test_a_failed_download_is_one_line(monkeypatch, tmp_path):
  def offline(self, *args, **kwargs):
    raise OSError("[Errno -3] Temporary failure in name resolution\nmore detail")

  monkeypatch.setattr(LocalDigits, "download_and_prepare", offline)
  with pytest.raises(datasets.DataNotPreparedError) as error:
    datasets.tfds_source("local_digits", "train", data_dir=str(tmp_path), download=True)
  message = str(error.value)
  assert "could not download and prepare TFDS data set 'local_digits'" in message and "\n" not in message
  assert "data.download=False" in message and "name resolution" in message


def test_preparing_without_tensorflow_says_what_to_install(monkeypatch, tmp_path):
  def needs_tensorflow(self, *args, **kwargs):
    raise ModuleNotFoundError("No module named 'tensorflow'", name="tensorflow")

  monkeypatch.setattr(LocalDigits, "download_and_prepare", needs_tensorflow)
  with pytest.raises(datasets.DataNotPreparedError, match="needs TensorFlow .*pip install tensorflow-cpu"):
    datasets.tfds_source("local_digits", "train", data_dir=str(tmp_path), download=True)


# FFHQ / CelebA-HQ TFRecords.

def _varint(n):
  out = bytearray()
  while True:
    out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
    n >>= 7
    if not n:
      return bytes(out)


def _field(number, payload):
  return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _example(image_chw):
  """A serialised tf.train.Example with int64 `shape` (packed) and bytes `data`, written by hand."""
  shape = _field(3, _field(1, b"".join(_varint(d) for d in image_chw.shape)))
  data = _field(1, _field(1, image_chw.tobytes()))
  entries = _field(1, _field(1, b"shape") + _field(2, shape)) + _field(1, _field(1, b"data") + _field(2, data))
  return _field(1, entries)


def _write_tfrecords(path, payloads):
  with open(path, "wb") as f:
    for payload in payloads:
      header = struct.pack("<Q", len(payload))
      f.write(header + struct.pack("<I", tfrecord.masked_crc32c(header)) + payload)
      f.write(struct.pack("<I", tfrecord.masked_crc32c(payload)))


def test_crc32c_check_value():
  assert tfrecord.crc32c(b"123456789") == 0xE3069283  # the standard CRC-32C check value


def test_tfrecord_images_round_trip(tmp_path):
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (5, 3, 8, 8)).astype(np.uint8)  # CHW, as FFHQ's records
  _write_tfrecords(tmp_path / "ffhq-r03.tfrecords", [_example(x) for x in images])
  source = tfrecord.TFRecordImages(str(tmp_path / "*.tfrecords"))
  assert len(source) == 5
  for i in range(5):
    np.testing.assert_array_equal(source[i], images[i].transpose(1, 2, 0))
  config = _image_config("FFHQ", **{"data.image_size": 8, "data.tfrecords_path": str(tmp_path / "ffhq-r03.tfrecords")})
  dataset = datasets.get_dataset(config)
  assert dataset.train_batches(0, 2).shape == (2, 4, 8, 8, 3)
  np.testing.assert_array_equal(next(dataset.eval_batches()), images[:4].transpose(0, 2, 3, 1) / np.float32(255))


def test_tfrecord_errors(tmp_path):
  (tmp_path / "bad.tfrecords").write_bytes(b"not a tfrecord file at all")
  with pytest.raises(ValueError, match="not a TFRecord file"):
    tfrecord.TFRecordImages(str(tmp_path / "bad.tfrecords"))
  with pytest.raises(FileNotFoundError, match="no TFRecord file matches"):
    tfrecord.TFRecordImages(str(tmp_path / "missing*.tfrecords"))
  with pytest.raises(ValueError, match="data.tfrecords_path, which is empty"):
    datasets.get_dataset(_image_config("CelebAHQ"))


# The embedded digits.

def test_digits_asset_and_upsampling():
  images, labels = toy_data.load_digits(16)
  assert images.shape == (1797, 16, 16, 1) and images.dtype == np.uint8 and images.max() == 255
  assert labels.shape == (1797,) and np.bincount(labels).min() > 170
  # Bilinear upsampling by 2 keeps each image's mean brightness (up to edge effects and rounding).
  original = np.load(toy_data.importlib.resources.files("score_jax").joinpath("assets/digits.npz"))["images"]
  np.testing.assert_allclose(images.mean(axis=(1, 2, 3)) / 255, original.mean(axis=(1, 2)) / 16, atol=0.03)


def test_digits_config_builds_its_dataset():
  config = digits_config.get_config()
  validate_config(config)
  dataset = datasets.get_dataset(config)
  assert len(dataset.train_source) == 1500 and len(dataset.eval_source) == 297
  batches = dataset.train_batches(0, 2)
  assert batches.shape == (2, 64, 16, 16, 1) and 0 <= batches.min() and batches.max() <= 1
  assert len(list(dataset.eval_batches())) == 3
  config.data.num_channels = 3
  with pytest.raises(ValueError, match=r"shape \(16, 16, 1\)"):
    datasets.get_dataset(config)


def test_image_dataset_names_are_valid_choices():
  for name in ("CIFAR10", "SVHN", "MNIST", "CELEBA", "LSUN", "FFHQ", "CelebAHQ", "digits", "blobs", "moons"):
    assert name in datasets.DATASETS
  with pytest.raises(ValueError, match="data.category"):
    datasets.get_dataset(_image_config("LSUN", **{"data.category": ""}))


def test_on_checkerboard_counts_the_squares():
  data = np.asarray(toy_data.checkerboard(jax.random.key(0), 4096))
  assert toy_data.on_checkerboard(data) == 1.0
  uniform = np.random.default_rng(0).uniform(-3, 3, (20000, 2))  # 8 unit squares of the 36 in [-3, 3]^2
  assert abs(toy_data.on_checkerboard(uniform) - 8 / 36) < 0.01
  assert toy_data.on_checkerboard(np.array([[0.5, 0.5], [1.5, 0.5], [-0.5, -0.5], [2.5, 0.5]])) == 0.5
