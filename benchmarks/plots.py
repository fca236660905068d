"""The benchmarks' picture panels: 2-D samples as a scatter, images as a grid."""

import numpy as np


def scatter_panel(ax, samples, title, limit, size=0.5, fontsize=9):
  """2-D `samples` scattered on `ax` within +-`limit`, without ticks, under `title`."""
  ax.scatter(samples[:, 0], samples[:, 1], s=size, alpha=0.5)
  ax.set_xlim(-limit, limit)
  ax.set_ylim(-limit, limit)
  ax.set_xticks([])
  ax.set_yticks([])
  ax.set_title(title, fontsize=fontsize)


def image_grid(samples, side=8):
  """The first side^2 greyscale images of `samples` `(N, H, W, 1)` as one `(side H, side W)` array."""
  images = np.asarray(samples[: side * side, ..., 0])
  height, width = images.shape[1:3]
  return images.reshape(side, side, height, width).transpose(0, 2, 1, 3).reshape(side * height, side * width)


def save_image_panels(path, panels, fontsize=7):
  """One row of greyscale image grids (`image_grid`), each `(title, samples)` of `panels`, written to `path`."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, axes = plt.subplots(1, len(panels), figsize=(2.6 * len(panels), 3.0))
  for ax, (title, samples) in zip(np.atleast_1d(axes), panels):
    ax.imshow(image_grid(samples), cmap="gray", vmin=0, vmax=1)
    ax.set_title(title, fontsize=fontsize)
    ax.axis("off")
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)
