"""An image data set encoded once by a frozen autoencoder: the posterior's moments on disk (EDM2's practice).

`encode_split(autoencoder, source, directory, fingerprint)` encodes `source` (a random-access sequence of uint8
`(H, W, C)` images, or of `(image, label)` pairs) in chunks of `CHUNK` images, each written atomically as
`<directory>/chunk_<k>/{mean,std[,labels]}.npy` (a temporary folder renamed into place), so a run killed mid-way
resumes at the first missing chunk. Images enter the autoencoder in [-1, 1]; with `flip`, each image is encoded
as it is and mirrored (axis 1 of the moments: 0 as is, 1 mirrored). `<directory>/fingerprint.json` records what
made the cache (the autoencoder's path, config and weight files' sizes and times, the data's keys and size);
a cache with another fingerprint is refused. `LatentCache(directory)` reads it back, memory-mapped.
"""

import functools
import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import tqdm
from absl import logging

from score_jax import parallel

CHUNK = 1024  # images per chunk file: the unit of resumption
FINGERPRINT = "fingerprint.json"
FORMAT = 1  # the layout of the files below; a cache of another format is refused like another fingerprint


def autoencoder_identity(path):
  """What identifies the autoencoder at `path`: its absolute path, its top-level config.json (as data, if any)
  and the size and modification time of every file under it (the weights without reading them)."""
  path = os.path.abspath(path)
  files = []
  for root, _, names in os.walk(path):
    for name in names:
      stat = os.stat(os.path.join(root, name))
      files.append([os.path.relpath(os.path.join(root, name), path), stat.st_size, stat.st_mtime_ns])
  config = None
  for candidate in (os.path.join(path, "config.json"), os.path.join(path, "vae", "config.json")):
    if os.path.isfile(candidate):
      with open(candidate) as f:
        config = json.load(f)
      break
  return {"path": path, "config": config, "files": sorted(files)}


def check_fingerprint(directory, fingerprint, key):
  """Writes `fingerprint` into a new cache `directory`, or checks that of an existing one.

  Raises:
    ValueError: one line naming `key` (the cache's config key) when the cache was made by another autoencoder,
      other data or preprocessing.
  """
  path = os.path.join(directory, FINGERPRINT)
  wanted = {"format": FORMAT, "chunk": CHUNK, **fingerprint}
  if os.path.exists(path):
    with open(path) as f:
      found = json.load(f)
    if found != json.loads(json.dumps(wanted)):
      differing = sorted(k for k in set(found) | set(wanted) if found.get(k) != json.loads(json.dumps(wanted.get(k))))
      raise ValueError(f"{key}={directory!r} holds latents of another autoencoder or data (its fingerprint differs "
                       f"in {', '.join(differing)}): point {key} elsewhere or delete it to encode again")
    return
  os.makedirs(directory, exist_ok=True)
  _write_json_atomically(path, wanted)


def _write_json_atomically(path, value):
  with open(path + ".tmp", "w") as f:
    json.dump(value, f, indent=1, sort_keys=True)
  os.replace(path + ".tmp", path)


def chunk_dir(directory, k):
  return os.path.join(directory, f"chunk_{k:05d}")


@functools.lru_cache(maxsize=8)
def get_encode_fn(autoencoder, mesh, flip):
  """`encode_fn(images) -> (mean, std)`: float images `(B, H, W, C)` in [-1, 1], the batch split over `mesh`;
  the moments `(B, h, w, c)`, or `(B, 2, h, w, c)` with `flip` (as is, mirrored). Built (and compiled) once per
  autoencoder, mesh and `flip`."""
  def encode(variables, x):
    if flip:
      x = jnp.stack([x, x[:, :, ::-1]], axis=1).reshape((-1,) + x.shape[1:])
    mean, logvar = autoencoder.module.apply(variables, x, method="encode")
    std = jnp.exp(0.5 * logvar)
    if flip:
      mean, std = (a.reshape((-1, 2) + a.shape[1:]) for a in (mean, std))
    return mean, std

  jitted = parallel.data_parallel(encode, mesh, in_batch=(False, True), out_batch=(True, True))
  return lambda images: jitted(autoencoder.variables, images)


def _read_images(source, indices, labelled):
  items = [source[int(i)] for i in indices]
  images = np.stack([item[0] if labelled else item for item in items])
  labels = np.asarray([item[1] for item in items], np.int32) if labelled else None
  return images, labels


def encode_split(autoencoder, source, directory, *, labelled, flip, batch_size, desc="encoding"):
  """Encodes every image of `source` into the chunks of `directory` that are not there yet (this process's:
  chunk k is process k mod P's), `batch_size` images per jitted call split over this process's devices.

  Returns:
    The number of chunks encoded now.
  """
  mesh = parallel.make_mesh(jax.local_devices())
  batch_size = -(-batch_size // mesh.devices.size) * mesh.devices.size
  encode_fn = get_encode_fn(autoencoder, mesh, flip)
  num_chunks = -(-len(source) // CHUNK)
  todo = [k for k in range(num_chunks) if k % jax.process_count() == jax.process_index()
          and not os.path.isdir(chunk_dir(directory, k))]
  if not todo:
    return 0
  total = sum(min(CHUNK, len(source) - k * CHUNK) for k in todo)
  with tqdm.tqdm(total=total, desc=desc, unit="img", disable=jax.process_index() != 0) as progress:
    for k in todo:
      indices = np.arange(k * CHUNK, min((k + 1) * CHUNK, len(source)))
      means, stds, labels = [], [], []
      for start in range(0, len(indices), batch_size):
        part = indices[start:start + batch_size]
        images, part_labels = _read_images(source, part, labelled)
        x = images.astype(np.float32) / 127.5 - 1.0  # the autoencoder sees [-1, 1]
        padded = np.concatenate([x, np.repeat(x[-1:], batch_size - len(x), axis=0)]) if len(x) < batch_size else x
        mean, std = jax.device_get(encode_fn(padded))
        means.append(mean[:len(x)])
        stds.append(std[:len(x)])
        labels.append(part_labels)
        progress.update(len(part))
      _write_chunk(directory, k, np.concatenate(means), np.concatenate(stds),
                   np.concatenate(labels) if labelled else None)
  logging.info("Encoded %d images into %s", total, directory)
  return len(todo)


def _write_chunk(directory, k, mean, std, labels):
  """Chunk k, written to a temporary folder and renamed into place: a chunk is whole or absent."""
  final, tmp = chunk_dir(directory, k), chunk_dir(directory, k) + f".tmp{os.getpid()}"
  shutil.rmtree(tmp, ignore_errors=True)
  os.makedirs(tmp)
  np.save(os.path.join(tmp, "mean.npy"), mean.astype(np.float32))
  np.save(os.path.join(tmp, "std.npy"), std.astype(np.float32))
  if labels is not None:
    np.save(os.path.join(tmp, "labels.npy"), labels)
  os.replace(tmp, final)


class LatentCache:
  """The encoded moments of one split, read back memory-mapped: `gather(indices) -> (mean, std, labels)`."""

  def __init__(self, directory, size):
    with open(os.path.join(directory, FINGERPRINT)) as f:
      self.chunk = json.load(f)["chunk"]
    self.directory, self.size = directory, size
    self.num_chunks = -(-size // self.chunk)
    missing = [k for k in range(self.num_chunks) if not os.path.isdir(chunk_dir(directory, k))]
    if missing:
      raise ValueError(f"the latent cache {directory} lacks chunk {missing[0]} ({len(missing)} missing)")
    load = lambda k, name: np.load(os.path.join(chunk_dir(directory, k), name), mmap_mode="r")  # noqa: E731
    self._chunks = [{name: load(k, f"{name}.npy") for name in ("mean", "std")} for k in range(self.num_chunks)]
    self.labelled = os.path.exists(os.path.join(chunk_dir(directory, 0), "labels.npy"))
    self.labels = (np.concatenate([np.load(os.path.join(chunk_dir(directory, k), "labels.npy"))
                                   for k in range(self.num_chunks)]) if self.labelled else None)

  def __len__(self):
    return self.size

  def gather(self, indices):
    """float32 `mean`, `std` of examples `indices` (and their int32 labels, or None)."""
    indices = np.asarray(indices, np.int64)
    first = self._chunks[0]["mean"]
    mean, std = (np.empty((len(indices),) + first.shape[1:], np.float32) for _ in range(2))
    for k in np.unique(indices // self.chunk):
      at = indices // self.chunk == k
      mean[at] = self._chunks[k]["mean"][indices[at] % self.chunk]
      std[at] = self._chunks[k]["std"][indices[at] % self.chunk]
    return mean, std, (self.labels[indices] if self.labelled else None)
