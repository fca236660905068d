"""Data that needs no download: 2-D toy samplers, synthetic `blobs` images, embedded 8x8 digits.

Toy sets are pure `sampler(rng, n) -> (n, ...)` functions (those with a natural class label also as
`labelled_<name>(rng, n) -> (points, labels)`, in `LABELLED_TOY_DATASETS`); `load_digits` reads the
small image set shipped in `score_jax/assets/`.
"""

import importlib.resources
import math
import os

import jax
import jax.numpy as jnp
import numpy as np


def labelled_checkerboard(rng, n):
  """`(points, labels)`: `checkerboard`'s points and their square, 2 row + column // 2 in 0..7 (rows and
  columns of the 4 x 4 grid counted from (-2, -2))."""
  k1, k2, k3 = jax.random.split(rng, 3)
  x1 = jax.random.uniform(k1, (n,), minval=-2.0, maxval=2.0)
  x2 = jax.random.uniform(k2, (n,)) - 2.0 * jax.random.randint(k3, (n,), 0, 2)
  x2 = x2 + jnp.mod(jnp.floor(x1), 2)
  points = jnp.stack([x1, x2], axis=1)
  return points, checkerboard_square(points)


def checkerboard_square(x):
  """The square 0..7 of points on the checkerboard (`labelled_checkerboard`'s labels)."""
  cell = jnp.clip(jnp.floor(x + 2.0), 0, 3).astype(jnp.int32)
  return 2 * cell[:, 1] + cell[:, 0] // 2


def checkerboard(rng, n):
  """Uniform on the 8 alternating unit squares of [-2, 2]^2 (FFJORD, Grathwohl et al. 2019)."""
  return labelled_checkerboard(rng, n)[0]


def on_checkerboard(x):
  """Fraction of the 2-D points `x` that lie on the checkerboard's 8 squares (its support)."""
  x = np.asarray(x)
  inside = np.all(np.abs(x) <= 2.0, axis=1)
  return float(np.mean(inside & ((np.floor(x[:, 0]) + np.floor(x[:, 1])) % 2 == 0)))


def labelled_moons(rng, n, noise=0.08):
  """`(points, labels)`: `moons`' points and their moon (0: the upper one, 1: the lower one)."""
  k1, k2, k3 = jax.random.split(rng, 3)
  angle = jax.random.uniform(k1, (n,), maxval=math.pi)
  upper = jax.random.bernoulli(k2, 0.5, (n,))
  x = jnp.where(upper, jnp.cos(angle), 1.0 - jnp.cos(angle))
  y = jnp.where(upper, jnp.sin(angle), 0.5 - jnp.sin(angle))
  points = jnp.stack([x - 0.5, y - 0.25], axis=1) * 1.6
  return points + noise * jax.random.normal(k3, (n, 2)), jnp.where(upper, 0, 1).astype(jnp.int32)


def moons(rng, n, noise=0.08):
  """Two interleaving half circles, centred and scaled to about [-2, 2]."""
  return labelled_moons(rng, n, noise)[0]


def labelled_eight_gaussians(rng, n, radius=2.0, std=0.1):
  """`(points, labels)`: `eight_gaussians`' points and their mode k in 0..7, at angle 2 pi k / 8
  (counter-clockwise from angle 0)."""
  k1, k2 = jax.random.split(rng)
  mode = jax.random.randint(k1, (n,), 0, 8)
  angle = mode * (2 * math.pi / 8)
  centers = radius * jnp.stack([jnp.cos(angle), jnp.sin(angle)], axis=1)
  return centers + std * jax.random.normal(k2, (n, 2)), mode.astype(jnp.int32)


def eight_gaussians(rng, n, radius=2.0, std=0.1):
  """Equal mixture of 8 Gaussians on a circle of radius 2."""
  return labelled_eight_gaussians(rng, n, radius, std)[0]


def eight_gaussians_mode(x, radius=2.0):
  """The nearest mode 0..7 of 2-D points (the labels of `labelled_eight_gaussians`)."""
  angle = jnp.arctan2(x[:, 1], x[:, 0])
  return jnp.mod(jnp.round(angle / (2 * math.pi / 8)), 8).astype(jnp.int32)


def swissroll(rng, n, noise=0.5):
  """The 2-D swiss roll (x, z coordinates of the 3-D roll), scaled to about [-2.5, 2.5]."""
  k1, k2 = jax.random.split(rng)
  t = 1.5 * math.pi * (1.0 + 2.0 * jax.random.uniform(k1, (n,)))
  points = jnp.stack([t * jnp.cos(t), t * jnp.sin(t)], axis=1)
  return (points + noise * jax.random.normal(k2, (n, 2))) / 5.0


TOY_DATASETS = {
    "checkerboard": checkerboard,
    "moons": moons,
    "8gaussians": eight_gaussians,
    "swissroll": swissroll,
}
# Toy sets with a natural class label: `sampler(rng, n) -> (points, int32 labels)`, and the class count.
LABELLED_TOY_DATASETS = {
    "checkerboard": labelled_checkerboard,
    "moons": labelled_moons,
    "8gaussians": labelled_eight_gaussians,
}
TOY_NUM_CLASSES = {"checkerboard": 8, "moons": 2, "8gaussians": 8}


def blobs(rng, n, image_size=16, num_channels=3, max_blobs=3):
  """Synthetic images in [0, 1]: 1 to `max_blobs` coloured Gaussian bumps on black.

  A download-free image set for tests, benchmarks and the offline image path.
  """
  k_count, k_center, k_width, k_color = jax.random.split(rng, 4)
  count = jax.random.randint(k_count, (n, 1), 1, max_blobs + 1)
  centers = jax.random.uniform(k_center, (n, max_blobs, 2), minval=0.2, maxval=0.8) * image_size
  widths = jax.random.uniform(k_width, (n, max_blobs), minval=0.06, maxval=0.18) * image_size
  colors = jax.random.uniform(k_color, (n, max_blobs, num_channels), minval=0.3, maxval=1.0)
  colors = colors * (jnp.arange(max_blobs)[None, :, None] < count[:, :, None])
  grid = jnp.arange(image_size, dtype=jnp.float32) + 0.5
  dy = (grid[None, None, :] - centers[..., 0:1]) ** 2  # (n, blobs, H)
  dx = (grid[None, None, :] - centers[..., 1:2]) ** 2  # (n, blobs, W)
  bumps = jnp.exp(-(dy[..., :, None] + dx[..., None, :]) / (2 * widths[..., None, None] ** 2))
  return jnp.clip(jnp.einsum("nbhw,nbc->nhwc", bumps, colors), 0.0, 1.0)


IMAGE_TOY_DATASETS = {"blobs": blobs}


DIGITS_TRAIN_SIZE = 1500  # the first 1500 of the 1797 digits train; the last 297 are held out


def load_digits(image_size=16):
  """The UCI / scikit-learn 8x8 handwritten digits, upsampled bilinearly to `image_size`.

  Returns:
    `(images, labels)`: uint8 `(1797, image_size, image_size, 1)` in 0..255 and uint8 `(1797,)`,
    in the order of `score_jax/assets/digits.npz` (see the README there for source and licence).
  """
  with importlib.resources.files("score_jax").joinpath("assets/digits.npz").open("rb") as f:
    data = np.load(f)
    images, labels = data["images"], data["labels"]
  x = jnp.asarray(images, jnp.float32)[..., None] / 16.0  # 0..16 "on" pixels per 4x4 block -> [0, 1]
  x = jax.image.resize(x, (x.shape[0], image_size, image_size, 1), "bilinear")
  return np.asarray(jnp.round(jnp.clip(x, 0.0, 1.0) * 255.0)).astype(np.uint8), labels


def save_digits_folder(root, image_size=16):
  """Writes the digits as one's own images would be: `<root>/train/<label>/<index>.png` (the 1500 training
  digits) and `<root>/held_out/<label>/<index>.png` (the other 297), one folder per class, for trying
  `data.dataset = "folder"` (configs/folder/digits.py) without a data set of one's own. Returns `root`."""
  from PIL import Image  # noqa: PLC0415 -- only this helper writes images

  images, labels = load_digits(image_size)
  for index, (image, label) in enumerate(zip(images, labels)):
    split = "train" if index < DIGITS_TRAIN_SIZE else "held_out"
    folder = os.path.join(root, split, str(label))
    os.makedirs(folder, exist_ok=True)
    Image.fromarray(image[..., 0]).save(os.path.join(folder, f"{index:04d}.png"))
  return root
