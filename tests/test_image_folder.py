"""Folders and zips of one's own images (`data.dataset = "folder"`) against the built-in digits pipeline."""

import json
import os
import struct
import threading
import zipfile
import zlib

import numpy as np
import pytest
from PIL import Image

from configs import digits as digits_config
from score_jax import datasets, image_folder, run_setup, toy_data

TRAIN = toy_data.DIGITS_TRAIN_SIZE


@pytest.fixture(scope="module")
def digits():
  return toy_data.load_digits(16)


def write_folder(root, images, labels, layout="flat"):
  """The images as PNGs: flat `00000.png` ... with EDM's dataset.json, or one subfolder per class."""
  root.mkdir(parents=True, exist_ok=True)
  entries = []
  for i, (image, label) in enumerate(zip(images, labels)):
    name = f"{i:05d}.png" if layout == "flat" else f"class_{label}/{i:05d}.png"
    (root / name).parent.mkdir(exist_ok=True)
    Image.fromarray(image[..., 0]).save(root / name)
    entries.append([name, int(label)])
  if layout == "flat":
    (root / image_folder.LABEL_FILE).write_text(json.dumps({"labels": entries}))
  return root


def write_zip(folder, path):
  with zipfile.ZipFile(path, "w") as archive:
    for file in sorted(folder.rglob("*")):
      if file.is_file():
        archive.write(file, file.relative_to(folder).as_posix())
  return path


def folder_config(path, **overrides):
  config = digits_config.get_config()
  config.data.dataset, config.data.path = "folder", str(path)
  config.training.batch_size = 24
  for key, value in overrides.items():
    config.update_from_flattened_dict({key: value})
  return config


@pytest.fixture(scope="module")
def digits_folders(digits, tmp_path_factory):
  """The built-in digits as the user would have them: the 1500 training and 297 held-out images."""
  images, labels = digits
  root = tmp_path_factory.mktemp("digits")
  train = write_folder(root / "train", images[:TRAIN], labels[:TRAIN])
  held_out = write_folder(root / "held_out", images[TRAIN:], labels[TRAIN:])
  return train, held_out, write_zip(train, root / "train.zip")


@pytest.mark.parametrize("source", ["folder", "zip"])
def test_folder_gives_the_batches_of_the_builtin_digits(digits_folders, source):
  """The same images in the same order give the run the same batches (so the same first-step loss) and
  the same labels, for a folder and a zip alike; the held-out images come from data.eval_path."""
  train, held_out, archive = digits_folders
  path = train if source == "folder" else archive
  config = folder_config(path, **{"data.eval_path": str(held_out), "data.labels_from": "dataset_json",
                                  "model.num_classes": 10})
  reference = digits_config.get_config()
  reference.training.batch_size, reference.model.num_classes = 24, 10
  ours, builtin = run_setup.RunSetup(config), run_setup.RunSetup(reference)
  for step in (0, 7):
    (x, y), (x_ref, y_ref) = ours.train_batches(step), builtin.train_batches(step)
    np.testing.assert_array_equal(np.asarray(x), np.asarray(x_ref))
    np.testing.assert_array_equal(np.asarray(y), np.asarray(y_ref))
  ours_eval = next(iter(ours.dataset.eval_batches()))
  np.testing.assert_array_equal(ours_eval, next(iter(builtin.dataset.eval_batches())))


def test_subfolder_labels_are_the_sorted_folder_names(digits, tmp_path):
  images, labels = digits
  root = write_folder(tmp_path / "classes", images[:60], labels[:60], layout="subfolders")
  files = image_folder.ImageFiles(str(root), "subfolders")
  assert files.label_names == tuple(f"class_{k}" for k in range(10))
  by_name = {f"class_{label}/{i:05d}.png": label for i, label in enumerate(labels[:60])}
  assert [by_name[name] for name in files.names] == list(files.labels)
  for i in (0, 17, 59):
    np.testing.assert_array_equal(files[i], images[int(files.names[i].split("/")[1][:5])])


def test_held_out_images_are_a_fixed_permutation_of_the_folder(digits, tmp_path):
  images, labels = digits
  root = write_folder(tmp_path / "all", images[:100], labels[:100])
  config = folder_config(root, **{"data.num_eval": 20})
  train, held_out = datasets.folder(config)
  assert (len(train), len(held_out)) == (80, 20)
  train_indices, held_out_indices = train.source.indices, held_out.source.indices
  assert sorted(np.concatenate([train_indices, held_out_indices]).tolist()) == list(range(100))
  np.testing.assert_array_equal(held_out[3], images[held_out_indices[3]])
  config.seed = 123  # the split does not follow the run's seed
  np.testing.assert_array_equal(datasets.folder(config)[1].source.indices, held_out_indices)


def test_folder_images_are_centre_cropped_and_resized(tmp_path):
  image = np.zeros((40, 60, 3), np.uint8)
  image[:, 10:50] = 200  # the centred 40x40 square is uniform: its resize is too
  (tmp_path / "wide").mkdir()
  Image.fromarray(image).save(tmp_path / "wide" / "a.png")
  config = folder_config(tmp_path / "wide", **{"data.num_channels": 3, "data.image_size": 8,
                                               "data.eval_path": str(tmp_path / "wide")})
  train, _ = datasets.folder(config)
  np.testing.assert_array_equal(train[0], np.full((8, 8, 3), 200, np.uint8))


def _bad(tmp_path, kind):
  root = tmp_path / kind
  root.mkdir()
  good = np.full((16, 16), 7, np.uint8)
  if kind == "empty":
    (root / "notes.txt").write_text("no images here")
  elif kind == "truncated":
    for i in range(3):
      Image.fromarray(good).save(root / f"{i}.png")
    (root / "broken.png").write_bytes((root / "0.png").read_bytes()[:40])
  elif kind == "mixed":
    Image.fromarray(good).save(root / "gray.png")
    Image.fromarray(np.stack([good] * 3, -1)).save(root / "colour.png")
  elif kind == "labels":
    Image.fromarray(good).save(root / "a.png")
    (root / "dataset.json").write_text(json.dumps({"labels": [["a.png", 0], ["gone.png", 1]]}))
  return root


@pytest.mark.parametrize("kind,message", [
    ("missing", "does not exist"),
    ("empty", "holds no images"),
    ("truncated", "cannot read 1 of 4 images, e.g. 'broken.png'"),
    ("mixed", "mixes images of 1 and 3 channels"),
    ("labels", "names 1 images that are not there (e.g. 'gone.png')"),
])
def test_bad_folders_are_refused_in_one_line(tmp_path, kind, message):
  path = tmp_path / "nowhere" if kind == "missing" else _bad(tmp_path, kind)
  labels_from = "dataset_json" if kind == "labels" else "none"
  config = folder_config(path, **{"data.labels_from": labels_from, "data.num_eval": 1})
  with pytest.raises(ValueError) as error:
    datasets.get_dataset(config)
  assert message in str(error.value) and "\n" not in str(error.value), str(error.value)


def test_class_count_is_checked_against_the_labels(digits, tmp_path):
  images, labels = digits
  root = write_folder(tmp_path / "few", images[:30], labels[:30] % 3)
  config = folder_config(root, **{"data.labels_from": "dataset_json", "model.num_classes": 10, "data.num_eval": 1})
  with pytest.raises(ValueError, match=r"model.num_classes=10, but the labels of .* have 3 classes"):
    datasets.get_dataset(config, labels=True)
  config = folder_config(root, **{"model.num_classes": 3, "data.num_eval": 1})
  with pytest.raises(ValueError, match="needs labelled data: set data.labels_from"):
    run_setup.validate_config(config)


def test_read_ahead_reads_the_next_block_in_the_background():
  """The batch of each step is `fn(step)`, the next block is read by another thread, and a jump (a resume,
  a restart) reads the asked step itself."""
  threads = {}

  def fn(step):
    threads[step] = threading.current_thread().name
    return np.full(3, step)

  read = datasets.ReadAhead(fn, stride=2)
  for step in (0, 2, 4, 10, 12):
    np.testing.assert_array_equal(read(step), np.full(3, step))
  main = threading.current_thread().name
  assert threads[0] == main and threads[10] == main  # nothing was read ahead for these
  assert threads[2] != main and threads[4] != main and threads[12] != main


def test_the_own_data_quickstart_reads_the_digits_written_as_a_folder(tmp_path):
  from configs.folder import digits as folder_digits

  toy_data.save_digits_folder(str(tmp_path / "digits"))
  config = folder_digits.get_config()
  config.data.path, config.data.eval_path = str(tmp_path / "digits/train"), str(tmp_path / "digits/held_out")
  config.model.num_classes = 10
  train, held_out = datasets.folder(config, labelled=True)
  assert (len(train), len(held_out)) == (TRAIN, 1797 - TRAIN)
  images, labels = toy_data.load_digits(16)
  image, label = train[0]  # sorted paths: 0/0000.png first
  np.testing.assert_array_equal(image, images[0])
  assert label == labels[0] == 0


def test_a_folder_is_scanned_once_per_run(digits, tmp_path, monkeypatch):
  """A class-conditional run builds its data twice (images alone, and with labels): the images are decoded
  once; a changed folder is scanned again."""
  images, labels = digits
  root = write_folder(tmp_path / "scan", images[:40], labels[:40])
  scans = []
  original = image_folder.ImageFiles.scan
  monkeypatch.setattr(image_folder.ImageFiles, "scan", lambda self: scans.append(self.path) or original(self))
  config = folder_config(root, **{"data.labels_from": "dataset_json", "model.num_classes": 10, "data.num_eval": 8})
  datasets.get_dataset(config)
  datasets.get_dataset(config, labels=True)
  assert scans == [str(root)]
  Image.fromarray(images[40, ..., 0]).save(root / "late.png")
  entries = json.loads((root / image_folder.LABEL_FILE).read_text())["labels"] + [["late.png", int(labels[40])]]
  (root / image_folder.LABEL_FILE).write_text(json.dumps({"labels": entries}))
  os.utime(root, (1e9, 2e9))  # the folder's time stamp moves, as on a file system that updates it
  assert len(datasets.get_dataset(config).train_source) == 41 - 8 and len(scans) == 2


def _write_classes(root, names):
  """A subfolder per name, each holding one 16x16 greyscale PNG."""
  for k, name in enumerate(names):
    (root / name).mkdir(parents=True)
    Image.fromarray(np.full((16, 16), k + 1, np.uint8)).save(root / name / "0.png")
  return root


def test_eval_subfolder_labels_are_the_training_set_indices_of_their_names(tmp_path):
  """An eval folder missing class b keeps c at 2, the index of c among the training set's classes."""
  train = _write_classes(tmp_path / "train", ["a", "b", "c"])
  held_out = _write_classes(tmp_path / "held_out", ["a", "c"])
  config = folder_config(train, **{"data.eval_path": str(held_out), "data.labels_from": "subfolders",
                                   "model.num_classes": 3})
  _, eval_pairs = datasets.folder(config, labelled=True)
  assert [label for _, label in eval_pairs] == [0, 2]
  refused = _write_classes(tmp_path / "refused", ["a", "d"])
  config.data.eval_path = str(refused)
  with pytest.raises(ValueError) as error:
    datasets.folder(config, labelled=True)
  message = str(error.value)
  assert "data.eval_path" in message and "'d'" in message and "a, b, c" in message and "\n" not in message, message


def test_eval_dataset_json_labels_beyond_the_training_classes_are_refused(digits, tmp_path):
  images, labels = digits
  train = write_folder(tmp_path / "train", images[:30], labels[:30] % 3)
  held_out = write_folder(tmp_path / "held_out", images[30:40], labels[30:40] % 5)
  config = folder_config(train, **{"data.eval_path": str(held_out), "data.labels_from": "dataset_json",
                                   "model.num_classes": 3})
  with pytest.raises(ValueError, match=r"data.eval_path=.* has labels up to 4, but the training set has 3 classes"):
    datasets.folder(config, labelled=True)


def _png16(path, array):
  """`array` (uint16 HW, HW3 or HW4) as a 16-bit PNG, written by hand: Pillow writes 16-bit greyscale only."""
  height, width = array.shape[:2]
  colour_type = {2: 0, 3: 2, 4: 6}[array.ndim if array.ndim == 2 else array.shape[-1]]
  rows = b"".join(b"\0" + row.astype(">u2").tobytes() for row in array)
  chunk = lambda kind, data: (struct.pack(">I", len(data)) + kind + data  # noqa: E731
                              + struct.pack(">I", zlib.crc32(kind + data)))
  header = struct.pack(">IIBBBBB", width, height, 16, colour_type, 0, 0, 0)
  path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows))
                   + chunk(b"IEND", b""))


def _levels16(shape):
  """uint16 levels, most of which a clip to 8 bits turns to 255; the edges 0, 255, 256 and 65535 among them."""
  return np.resize(np.array([0, 255, 256, 257 * 100, 32767, 32768, 40000, 65535], np.uint16), shape)


@pytest.mark.parametrize("channels", [1, 3, 4])
def test_16_bit_pngs_read_as_their_high_byte(tmp_path, channels):
  """16-bit greyscale (Pillow's own writer, mode I;16) and 16-bit RGB / RGBA (Pillow reads these as 8-bit
  itself) alike: each pixel v is v >> 8, not clipped to 255."""
  array = _levels16((16, 16) if channels == 1 else (16, 16, channels))
  (tmp_path / "x").mkdir()
  if channels == 1:
    Image.fromarray(array).save(tmp_path / "x" / "a.png")
  else:
    _png16(tmp_path / "x" / "a.png", array)
  files = image_folder.ImageFiles(str(tmp_path / "x"))
  assert files.scan() == channels
  np.testing.assert_array_equal(files[0], (array >> 8).astype(np.uint8).reshape(16, 16, channels))


@pytest.mark.parametrize("mode", ["I;16", "I;16B", "I;16L", "I"])
def test_16_bit_greyscale_modes_are_scaled_to_8_bits(mode):
  array = _levels16((4, 6))
  dtype = {"I;16": "<u2", "I;16B": ">u2", "I;16L": "<u2", "I": "<i4"}[mode]
  image = Image.frombytes(mode, (6, 4), array.astype(dtype).tobytes())
  np.testing.assert_array_equal(image_folder.as_array(image), (array >> 8).astype(np.uint8)[:, :, None])


@pytest.mark.parametrize("values,message", [
    (np.array([[0, 70000]], np.int32), "mode 'I' with values 0..70000"),
    (np.array([[0.5, 1.0]], np.float32), "mode 'F'"),
])
def test_greyscale_beyond_16_bits_is_refused(values, message):
  with pytest.raises(ValueError) as error:
    image_folder.as_array(Image.fromarray(values))
  assert message in str(error.value) and "\n" not in str(error.value), str(error.value)


def test_the_folder_pipeline_reads_16_bit_greyscale_as_8_bits(tmp_path):
  array = _levels16((16, 16))
  (tmp_path / "x").mkdir()
  Image.fromarray(array).save(tmp_path / "x" / "a.png")
  train, _ = datasets.folder(folder_config(tmp_path / "x", **{"data.eval_path": str(tmp_path / "x")}))
  np.testing.assert_array_equal(train[0], (array >> 8).astype(np.uint8)[:, :, None])
