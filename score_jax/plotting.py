"""Pictures people look at: 2-D scatter plots and image grids, written as PNG."""

import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def save_scatter(path, samples, *, title=None, reference=None, lim=3.0):
  """Scatter plot of `(n, 2)` samples, optionally beside `reference` data."""
  panels = [("samples", samples)] + ([("data", reference)] if reference is not None else [])
  fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 4.2), squeeze=False)
  for ax, (name, points) in zip(axes[0], panels):
    points = np.asarray(points)
    ax.scatter(points[:, 0], points[:, 1], s=1.5, alpha=0.5, color="tab:blue" if name == "samples" else "k")
    ax.set_xlim(-lim, lim)
    ax.set_ylim(-lim, lim)
    ax.set_aspect("equal")
    ax.set_title(name if title is None or name != "samples" else title)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def image_grid(images, padding=2):
  """Tiles `(B, H, W, C)` images in [0, 1] into one uint8 grid with sqrt(B) columns."""
  images = np.clip(np.asarray(images) * 255.0, 0, 255).astype(np.uint8)
  b, h, w, c = images.shape
  ncol = max(1, int(math.sqrt(b)))
  nrow = math.ceil(b / ncol)
  grid = np.zeros((nrow * (h + padding) + padding, ncol * (w + padding) + padding, c), np.uint8)
  for i in range(b):
    r, col = divmod(i, ncol)
    grid[padding + r * (h + padding):padding + r * (h + padding) + h,
         padding + col * (w + padding):padding + col * (w + padding) + w] = images[i]
  return grid


def save_image_grid(path, images, min_width=384):
  """Writes the grid of `images` as PNG, enlarged (nearest neighbour) to at least `min_width` pixels."""
  grid = image_grid(images)
  scale = max(1, min_width // grid.shape[1])
  grid = grid.repeat(scale, axis=0).repeat(scale, axis=1)
  plt.imsave(path, grid[..., 0] if grid.shape[-1] == 1 else grid, cmap="gray" if grid.shape[-1] == 1 else None)


def save_samples(path_stem, samples, reference=None, title=None):
  """Writes `<stem>.npz` with the samples and `<stem>.png`: a scatter plot (2-D) or an image grid."""
  samples = np.asarray(samples)
  np.savez_compressed(f"{path_stem}.npz", samples=samples)
  if samples.ndim == 2 and samples.shape[1] == 2:
    save_scatter(f"{path_stem}.png", samples, reference=reference, title=title)
  elif samples.ndim == 4:
    save_image_grid(f"{path_stem}.png", samples)
  return f"{path_stem}.png"
