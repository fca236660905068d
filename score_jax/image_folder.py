"""Image files as a random-access data source: a folder (searched recursively) or a zip of PNG / JPEG / WebP.

`ImageFiles(path)` lists the images once, in sorted order of their relative paths, and decodes
`files[i]` to a uint8 `(H, W, C)` array on read (PIL releases the GIL, so the data pipeline's threads
decode in parallel). `scan()` decodes every image once up front, so that a truncated or unreadable
file, or a mix of channel counts, stops a run before anything compiles. Labels come from a
`dataset.json` in EDM's format (`{"labels": [["relative/path.png", 3], ...]}`) or from the first-level
folder names (sorted; `label_names` keeps them). A held-out set takes its labels in the training set's
numbering: `ImageFiles(eval_path, labels_from, label_names=train.label_names)`. 16-bit greyscale keeps
its high byte (v >> 8), as Pillow itself reads 16-bit RGB(A) PNGs.
"""

import concurrent.futures
import dataclasses
import io
import json
import os
import threading
import zipfile

import numpy as np
from PIL import Image

EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp")
LABELS_FROM = ("none", "dataset_json", "subfolders")
LABEL_FILE = "dataset.json"
CHANNELS = {"L": 1, "RGB": 3}  # the modes a run reads; others are converted (below) or refused


def _is_image(name):
  return name.lower().endswith(EXTENSIONS) and not os.path.basename(name).startswith(".")


def as_array(image):
  """A decoded PIL image as uint8 HWC: palette images become RGB(A), 16-bit greyscale its high byte; alpha is
  kept (4 channels)."""
  if image.mode in ("P", "CMYK", "YCbCr", "LAB", "HSV"):
    image = image.convert("RGBA" if "transparency" in image.info else "RGB")
  elif image.mode == "1":
    image = image.convert("L")
  elif image.mode.startswith("I") or image.mode == "F":
    return _high_byte(image)[:, :, None]
  array = np.asarray(image, np.uint8)
  return array[:, :, None] if array.ndim == 2 else array


def _high_byte(image):
  """v >> 8 of 16-bit greyscale: modes I;16, I;16B, I;16L, and I within 0..65535 (a 16-bit PNG in older Pillow).
  `convert("L")` would clip every value above 255 to white."""
  if image.mode == "F":
    raise ValueError("mode 'F' (floating-point greyscale) images are not read; convert them to 8 or 16 bits")
  array = np.asarray(image)
  if array.min() < 0 or array.max() > 65535:
    raise ValueError(f"mode {image.mode!r} with values {array.min()}..{array.max()} does not fit 16 bits; "
                     "convert it to 8 or 16 bits")
  return (array.astype(np.uint32) >> 8).astype(np.uint8)


class ImageFiles:
  """The images of a folder or a zip, `len` and `[i]` -> uint8 `(H, W, C)`, with optional int labels.

  `label_names`, when given, are the training set's classes: subfolder labels are indices into them (a
  subfolder they lack is refused), dataset.json labels must be below their count.
  """

  def __init__(self, path, labels_from="none", what="data.path", label_names=None):
    if labels_from not in LABELS_FROM:
      raise ValueError(f"data.labels_from={labels_from!r} is not valid; choose one of: {', '.join(LABELS_FROM)}")
    if not path:
      raise ValueError(f"{what} is empty: set it to a folder or a .zip of images")
    if not os.path.exists(path):
      raise ValueError(f"{what}={path!r} does not exist")
    self.path, self.what = path, what
    self._is_zip = os.path.isfile(path)
    if self._is_zip and not zipfile.is_zipfile(path):
      raise ValueError(f"{what}={path!r} is a file but not a zip archive; give a folder or a .zip of images")
    self._local = threading.local()
    names = self._list()
    self.names = sorted(name for name in names if _is_image(name))
    if not self.names:
      raise ValueError(f"{what}={path!r} holds no images ({', '.join(EXTENSIONS)}, searched recursively)")
    self.labels, self.label_names = self._labels(labels_from, set(names), label_names)
    self.channels = None  # known once `scan` has read every image

  def __len__(self):
    return len(self.names)

  def __getitem__(self, i):
    return self.decode(self.names[i])

  @property
  def num_classes(self):
    return len(self.label_names)

  def decode(self, name):
    with Image.open(io.BytesIO(self.read_bytes(name))) as image:
      return as_array(image)

  def read_bytes(self, name):
    if not self._is_zip:
      with open(os.path.join(self.path, name), "rb") as f:
        return f.read()
    archive = getattr(self._local, "archive", None)  # ZipFile handles are not safe to share across threads
    if archive is None:
      archive = self._local.archive = zipfile.ZipFile(self.path)
    return archive.read(name)

  def _list(self):
    """Every file's path relative to `path`, with "/" separators."""
    if self._is_zip:
      with zipfile.ZipFile(self.path) as archive:
        return [name for name in archive.namelist() if not name.endswith("/")]
    found = []
    for root, _, files in os.walk(self.path):
      for file in files:
        found.append(os.path.relpath(os.path.join(root, file), self.path).replace(os.sep, "/"))
    return found

  def _labels(self, labels_from, files, train_names):
    if labels_from == "none":
      return None, ()
    if labels_from == "subfolders":
      folders = [name.split("/")[0] if "/" in name else None for name in self.names]
      loose = [name for name, folder in zip(self.names, folders) if folder is None]
      if loose:
        raise ValueError(f"data.labels_from='subfolders', but {len(loose)} images of {self.what}={self.path!r} lie "
                         f"outside any subfolder (e.g. {loose[0]!r}); put each class in its own folder")
      label_names = tuple(sorted(set(folders)))
      if train_names is not None:
        unknown = [name for name in label_names if name not in train_names]
        if unknown:
          raise ValueError(f"{self.what}={self.path!r} has class subfolders that the training set lacks: "
                           f"{', '.join(map(repr, unknown))} (its classes: {', '.join(train_names)})")
        label_names = tuple(train_names)
      index = {folder: i for i, folder in enumerate(label_names)}
      return np.array([index[folder] for folder in folders], np.int32), label_names
    if LABEL_FILE not in files:
      raise ValueError(f"data.labels_from='dataset_json', but {self.what}={self.path!r} has no {LABEL_FILE} "
                       "(EDM's format: {\"labels\": [[\"relative/path.png\", label], ...]})")
    try:
      entries = json.loads(self.read_bytes(LABEL_FILE))["labels"]
      table = {str(name): int(label) for name, label in entries}
    except (ValueError, KeyError, TypeError) as error:
      raise ValueError(f"{LABEL_FILE} of {self.what}={self.path!r} is not EDM's format "
                       f"{{\"labels\": [[name, label], ...]}}: {type(error).__name__}: {error}") from None
    missing = sorted(set(table) - set(self.names))
    if missing:
      raise ValueError(f"{LABEL_FILE} of {self.what}={self.path!r} names {len(missing)} images that are not there "
                       f"(e.g. {missing[0]!r})")
    unlabelled = [name for name in self.names if name not in table]
    if unlabelled:
      raise ValueError(f"{LABEL_FILE} of {self.what}={self.path!r} gives no label for {len(unlabelled)} images "
                       f"(e.g. {unlabelled[0]!r})")
    labels = np.array([table[name] for name in self.names], np.int32)
    if labels.min() < 0:
      raise ValueError(f"{LABEL_FILE} of {self.what}={self.path!r} has a negative label ({labels.min()})")
    if train_names is not None:
      if labels.max() >= len(train_names):
        raise ValueError(f"{LABEL_FILE} of {self.what}={self.path!r} has labels up to {labels.max()}, but the "
                         f"training set has {len(train_names)} classes")
      return labels, tuple(train_names)
    return labels, tuple(str(i) for i in range(int(labels.max()) + 1))

  def scan(self, workers=8):
    """Decodes every image once; returns the channel count they share (also kept as `channels`). Raises `ValueError` naming an
    unreadable or truncated image (with the count of readable ones), or the mix of channel counts."""
    def channels(name):
      try:
        return self.decode(name).shape[-1]  # a truncated file fails here, not in `Image.open`
      except (OSError, ValueError, Image.DecompressionBombError) as error:
        return error

    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
      counts = list(pool.map(channels, self.names))
    bad = [(name, c) for name, c in zip(self.names, counts) if isinstance(c, Exception)]
    if bad:
      name, error = bad[0]
      raise ValueError(f"{self.what}={self.path!r}: cannot read {len(bad)} of {len(self.names)} images, e.g. "
                       f"{name!r} ({error}); {len(self.names) - len(bad)} are readable")
    found = sorted(set(counts))
    if len(found) > 1:
      examples = {c: next(n for n, k in zip(self.names, counts) if k == c) for c in found}
      raise ValueError(f"{self.what}={self.path!r} mixes images of {' and '.join(map(str, found))} channels (e.g. "
                       + ", ".join(f"{examples[c]!r}: {c}" for c in found) + "); convert them to one mode")
    self.channels = found[0]
    return self.channels


@dataclasses.dataclass(frozen=True)
class Subset:
  """`source[indices[i]]`: a split of a random-access source."""

  source: object
  indices: np.ndarray

  def __len__(self):
    return len(self.indices)

  def __getitem__(self, i):
    return self.source[int(self.indices[i])]


@dataclasses.dataclass(frozen=True)
class Labelled:
  """`(image, label)` pairs of an `ImageFiles` (or a `Subset` of one) that has labels."""

  source: object

  def __len__(self):
    return len(self.source)

  def __getitem__(self, i):
    files, index = self.source, i
    if isinstance(files, Subset):
      files, index = files.source, int(files.indices[i])
    return files[index], int(files.labels[index])
