"""Decoding throughput of a folder of one's own JPEGs (`data.dataset = "folder"`): images/s into batches.

  python benchmarks/image_decoding.py [--images 512] [--batch 128] [--threads 1,8]
                                      [--json benchmarks/results/image_decoding.json]

Writes `--images` JPEGs (quality 90, smooth content plus noise, as photographs compress) at 32 px and at
256 px to a temporary folder, then times the training pipeline's reads: `ImageDataset.train_batches` of
a folder config (decode, centre crop and resize to `data.image_size`, random flip, dequantisation), one
block of `--batch` images at a time, with the decoding pool at each `--threads` size. Each row is the
median over blocks after one warm-up block. The 256 px row resizes to 64 px, as a 64 px model would read it.
"""

import argparse
import json
import os
import pathlib
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from score_jax import base_config, datasets  # noqa: E402


def write_images(folder, count, size, rng, suffix=".jpg"):
  """`count` synthetic `size` px RGB images (smooth content plus noise, as photographs compress) into `folder`:
  JPEGs of quality 90, or PNGs with `suffix=".png"`."""
  os.makedirs(folder, exist_ok=True)
  grid = np.linspace(0, 1, size, dtype=np.float32)
  for i in range(count):
    phase = rng.uniform(0, 2 * np.pi, 3)
    smooth = 127 + 100 * np.sin(6 * grid[:, None, None] + 4 * grid[None, :, None] + phase)
    image = np.clip(smooth + rng.normal(0, 12, (size, size, 3)), 0, 255).astype(np.uint8)
    Image.fromarray(image).save(os.path.join(folder, f"{i:06d}{suffix}"), quality=90)


def throughput(folder, image_size, batch, threads, blocks):
  config = base_config.get_config()
  config.data.update(dataset="folder", path=folder, eval_path=folder, image_size=image_size, num_channels=3,
                     random_flip=True, uniform_dequantization=True)
  config.training.batch_size = batch
  dataset = datasets.get_dataset(config)
  datasets.set_decoding_threads(threads)
  try:
    times = []
    for step in range(blocks + 1):
      start = time.perf_counter()
      dataset.train_batches(step, 1)
      times.append(time.perf_counter() - start)
  finally:
    datasets.set_decoding_threads(datasets.DECODING_THREADS)
  return batch / float(np.median(times[1:]))


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--images", type=int, default=512)
  parser.add_argument("--batch", type=int, default=128)
  parser.add_argument("--blocks", type=int, default=6)
  parser.add_argument("--threads", default="1,8")
  parser.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "image_decoding.json"))
  args = parser.parse_args()
  rng = np.random.default_rng(0)
  rows = []
  with tempfile.TemporaryDirectory() as root:
    for source, target in ((32, 32), (256, 64)):
      folder = os.path.join(root, f"jpeg_{source}")
      write_images(folder, args.images, source, rng)
      for threads in map(int, args.threads.split(",")):
        rate = throughput(folder, target, args.batch, threads, args.blocks)
        rows.append({"jpeg_px": source, "image_size": target, "threads": threads, "images_per_s": round(rate, 1)})
        print(f"  {source} px JPEG -> {target} px, {threads} thread(s): {rate:.0f} images/s", file=sys.stderr)
  print(f"{'JPEG':>6} {'to':>5} {'threads':>8} {'images/s':>10}")
  for row in rows:
    print(f"{row['jpeg_px']:>6} {row['image_size']:>5} {row['threads']:>8} {row['images_per_s']:>10.0f}")
  result = {"cpu_count": os.cpu_count(), "batch": args.batch, "images": args.images, "rows": rows}
  os.makedirs(os.path.dirname(args.json), exist_ok=True)
  with open(args.json, "w") as f:
    json.dump(result, f, indent=1)
  print(f"wrote {args.json}")


if __name__ == "__main__":
  main()
