"""Latent data's one-off encoding (docs/latent.md#latent-data): images/s into the latent cache, and a kill -9 resume.

  python benchmarks/latent_encoding.py [--images 1024] [--image_size 256] [--batch 64] [--autoencoder PATH]
                                       [--kill_demo] [--json benchmarks/results/latent_encoding.json]
  python benchmarks/latent_encoding.py --dry_run   # the tiny test VAE on 16 px images, in seconds

Writes `--images` PNGs (smooth content plus noise) of `--image_size` px to a temporary folder and times the
whole encoding of a latent run (`LatentData.dataset().caches`: PNG decoding, the jitted encoder over every local
device, the moments written chunk by chunk), once cold (compiling) and once more into a fresh cache (warm: the
row's images/s), and the jitted encoder alone on one batch. `--autoencoder`: a diffusers AutoencoderKL folder;
default an SD-VAE-layout folder (128-256-512-512 channels, 2 resnets a level, 4 latent channels) with random
weights written here (the time does not depend on the weights' values); `--dry_run`: the tiny fixture VAE of
tests/fixtures (16 px, factor 2). `--kill_demo`: a child process encodes into a cache of small chunks and is
killed with SIGKILL once two chunks are written; a second child finishes it; the result is compared with the
uninterrupted cache (the row `resume_identical`).
"""

import argparse
import json
import lzma
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import jax  # noqa: E402
import numpy as np  # noqa: E402
from flax import traverse_util  # noqa: E402

from score_jax import (autoencoder as autoencoder_lib, base_config, latent_cache, latent_data,  # noqa: E402
                       parallel, run_setup, safetensors_io)
from benchmarks.image_decoding import write_images  # noqa: E402
from score_jax.networks import autoencoder_kl  # noqa: E402

FIXTURE = ROOT / "tests" / "fixtures" / "diffusers" / "autoencoder_kl" / "sd"
SD_VAE = {"_class_name": "AutoencoderKL", "block_out_channels": [128, 256, 512, 512], "layers_per_block": 2,
          "latent_channels": 4, "norm_num_groups": 32, "in_channels": 3, "out_channels": 3,
          "down_block_types": ["DownEncoderBlock2D"] * 4, "up_block_types": ["UpDecoderBlock2D"] * 4,
          "scaling_factor": 0.18215}
KILL_CHUNK = 8  # images per chunk in the kill demo


def write_random_vae(folder):
  """An SD-VAE-layout diffusers folder with random weights (torch names and layouts)."""
  os.makedirs(folder, exist_ok=True)
  module = autoencoder_kl.from_diffusers_config(SD_VAE, None)
  x = np.zeros((1, 8, 8, 3), np.float32)
  params = jax.jit(module.init)(jax.random.key(0), x)["params"]
  tensors = {}
  for path, value in traverse_util.flatten_dict(jax.device_get(params)).items():
    value = np.asarray(value, np.float32)
    if path[-1] == "kernel":
      value = value.transpose(3, 2, 0, 1) if value.ndim == 4 else value.T  # HWIO -> OIHW; Linear (out, in)
    tensors[autoencoder_lib.torch_name(path)] = np.ascontiguousarray(value)
  safetensors_io.write(os.path.join(folder, "diffusion_pytorch_model.safetensors"), tensors)
  with open(os.path.join(folder, "config.json"), "w") as f:
    json.dump(SD_VAE, f)


def unpack_fixture(folder):
  os.makedirs(folder, exist_ok=True)
  shutil.copy(FIXTURE / "config.json", folder)
  with lzma.open(FIXTURE / "diffusion_pytorch_model.safetensors.xz") as f:
    pathlib.Path(folder, "diffusion_pytorch_model.safetensors").write_bytes(f.read())


def latent_config(images, autoencoder, cache, image_size, batch, num_eval):
  config = base_config.get_config()
  config.data.update(dataset="folder", path=images, image_size=image_size, num_channels=3, random_flip=False,
                     centered=True, num_eval=num_eval, autoencoder=autoencoder, latent_cache=cache,
                     autoencoder_batch_size=batch)
  return run_setup.prepare_config(config)


def encode_all(config, autoencoder):
  """Seconds to encode (or resume) the run's whole cache."""
  start = time.perf_counter()
  latent_data.get_latent_data(config, autoencoder).dataset().caches  # noqa: B018 -- encodes
  return time.perf_counter() - start


def child(args):
  """The kill demo's encoding process: encodes the training split into `--cache` in chunks of KILL_CHUNK."""
  latent_cache.CHUNK = KILL_CHUNK
  config = latent_config(args.folder, args.autoencoder, args.cache, args.image_size, args.batch, args.num_eval)
  encode_all(config, latent_data.data_autoencoder(config))


def kill_demo(args, folder, autoencoder, root, reference):
  """Kill -9 an encoding after two chunks, finish it in a new process; whether it equals `reference`."""
  cache = os.path.join(root, "killed")
  command = [sys.executable, __file__, "--child", "--folder", folder, "--autoencoder", autoencoder, "--cache", cache,
             "--image_size", str(args.image_size), "--batch", str(args.batch), "--num_eval", str(args.num_eval)]
  process = subprocess.Popen(command, stderr=subprocess.DEVNULL)
  chunks = lambda: [d for d in os.listdir(os.path.join(cache, "train")) if d.startswith("chunk_") and  # noqa: E731
                    "." not in d] if os.path.isdir(os.path.join(cache, "train")) else []
  while len(chunks()) < 2 and process.poll() is None:
    time.sleep(0.01)
  process.send_signal(signal.SIGKILL)
  killed = process.wait() == -signal.SIGKILL
  written = len(chunks())
  subprocess.run(command, check=True, stderr=subprocess.DEVNULL)
  latent_cache.CHUNK = KILL_CHUNK
  size = len(reference[0])
  got = latent_cache.LatentCache(os.path.join(cache, "train"), size).gather(np.arange(size))
  identical = all(np.array_equal(a, b) for a, b in zip(got[:2], reference[:2]))
  print(f"  killed after {written} chunks of {-(-size // KILL_CHUNK)}; resumed: "
        f"{'identical' if identical else 'DIFFERENT'}", file=sys.stderr)
  return {"killed": killed, "chunks_before_kill": written, "chunks": -(-size // KILL_CHUNK),
          "resume_identical": identical}


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--images", type=int, default=1024)
  parser.add_argument("--image_size", type=int, default=256)
  parser.add_argument("--batch", type=int, default=64)
  parser.add_argument("--num_eval", type=int, default=64)
  parser.add_argument("--autoencoder", default="")
  parser.add_argument("--kill_demo", action="store_true")
  parser.add_argument("--dry_run", action="store_true")
  parser.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "latent_encoding.json"))
  parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
  parser.add_argument("--folder", help=argparse.SUPPRESS)
  parser.add_argument("--cache", help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if args.child:
    return child(args)
  if args.dry_run:
    args.images, args.image_size, args.batch, args.num_eval = 64, 16, 8, 8
  with tempfile.TemporaryDirectory() as root:
    folder = os.path.join(root, "images")
    write_images(folder, args.images, args.image_size, np.random.default_rng(0), suffix=".png")
    autoencoder_path = args.autoencoder or os.path.join(root, "vae")
    if not args.autoencoder:
      (unpack_fixture if args.dry_run else write_random_vae)(autoencoder_path)
    args.autoencoder = autoencoder_path
    config = latent_config(folder, autoencoder_path, os.path.join(root, "cold"), args.image_size, args.batch,
                           args.num_eval)
    autoencoder = latent_data.data_autoencoder(config)
    cold = encode_all(config, autoencoder)
    warm = encode_all(latent_config(folder, autoencoder_path, os.path.join(root, "warm"), args.image_size, args.batch,
                                    args.num_eval), autoencoder)
    mesh = parallel.make_mesh(jax.local_devices())
    encode_fn = latent_cache.get_encode_fn(autoencoder, mesh, flip=False)
    x = np.zeros((args.batch, args.image_size, args.image_size, 3), np.float32)
    jax.block_until_ready(encode_fn(x))
    start = time.perf_counter()
    for _ in range(3):
      jax.block_until_ready(encode_fn(x))
    network = 3 * args.batch / (time.perf_counter() - start)
    result = {"device": jax.devices()[0].device_kind, "devices": jax.local_device_count(), "images": args.images,
              "image_size": args.image_size, "batch": args.batch,
              "latent_shape": [args.image_size // config.data.latent_factor] * 2 + [config.data.latent_channels],
              "images_per_s": round(args.images / warm, 1), "cold_s": round(cold, 2),
              "encoder_only_images_per_s": round(network, 1), "dry_run": args.dry_run}
    if args.kill_demo:
      latent_cache.CHUNK = KILL_CHUNK
      reference_config = latent_config(folder, autoencoder_path, os.path.join(root, "reference"), args.image_size,
                                       args.batch, args.num_eval)
      caches = latent_data.get_latent_data(reference_config, autoencoder).dataset().caches
      train = caches["train"]
      reference = train.gather(np.arange(len(train)))
      result["kill_demo"] = kill_demo(args, folder, autoencoder_path, root, reference)
  print(f"{result['images']} images of {args.image_size} px -> {result['latent_shape']} latents on "
        f"{result['devices']} x {result['device']}: {result['images_per_s']} images/s into the cache "
        f"(the encoder alone: {result['encoder_only_images_per_s']} images/s; cold, with compiling: {cold:.1f} s)")
  os.makedirs(os.path.dirname(args.json) or ".", exist_ok=True)
  with open(args.json, "w") as f:
    json.dump(result, f, indent=1)
  print(f"wrote {args.json}")
  return result


if __name__ == "__main__":
  main()
