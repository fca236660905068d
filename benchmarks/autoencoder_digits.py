"""The project's own autoencoder on the digits (configs/latent/digits_autoencoder.py): how well it reconstructs the
297 held-out digits (2 CPU cores).

    python benchmarks/autoencoder_digits.py [--steps 2000] [--out_dir benchmarks/results/autoencoder_digits]
                                            [--workdir runs/benchmark_autoencoder_digits] [--dry_run]

Trains through main.py (a finished run is reused; its training time kept in `benchmark_seconds.json`), loads the
workdir with `load_autoencoder` (the EMA parameters and the recorded scaling factor) and reconstructs the held-out
digits (8x8, in [-1, 1] as the run sees them) from the posterior mean and from one posterior draw. Reports the
reconstruction MSE per pixel value (in [-1, 1] and in [0, 1]) and the Fréchet distance in the digits classifier's
features (`score_jax.metrics.digits`, not FID) of the reconstructions to the held-out digits, beside the FD of
297 training digits to the held-out ones (two different sets of real digits: a scale for the numbers; the
reconstructions are paired with the digits they are measured against, so a good autoencoder lies far below it).
Prints the table, writes `autoencoder_digits.json`. `--dry_run`: a tiny autoencoder trained 2 steps in this process
(the plumbing on a CPU; tests/test_benchmarks.py).
"""

import argparse
import json
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks.trained_runs import DRY_RUN_TRAINING, train  # noqa: E402
from score_jax import toy_data  # noqa: E402
from score_jax.autoencoder import load_autoencoder  # noqa: E402
from score_jax.metrics import digits as digits_metrics  # noqa: E402

CONFIG = "configs/latent/digits_autoencoder.py"
DRY_RUN = {**DRY_RUN_TRAINING, "model.ae_channels": (8, 8), "model.ae_norm_groups": 4}


def reconstruction_rows(autoencoder, images, reference, features_fn, seed=0):
  """`{name: metrics}` of `images` (uint8 NHWC digits) reconstructed from the posterior mean and from a draw."""
  x = images.astype(np.float32) / 127.5 - 1.0  # data.centered: [-1, 1]
  mean, logvar = autoencoder.encode(x)
  draw = mean + np.exp(0.5 * logvar) * jax.random.normal(jax.random.PRNGKey(seed), mean.shape)
  rows = {}
  for name, z in (("posterior_mean", mean), ("posterior_draw", draw)):
    decoded = np.asarray(autoencoder.decode(z))
    pixels = np.clip((decoded + 1.0) / 2.0, 0.0, 1.0)
    rows[name] = {"mse": float(np.mean((decoded - x) ** 2)),
                  "mse_01": float(np.mean((pixels - (x + 1.0) / 2.0) ** 2)),
                  "digits_fd": float(digits_metrics.digits_frechet_distance(pixels, reference, features_fn))}
  return rows, float(np.std(np.asarray(mean)))


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--steps", type=int, default=2000)
  parser.add_argument("--out_dir", default=str(ROOT / "benchmarks" / "results" / "autoencoder_digits"))
  parser.add_argument("--workdir", default=str(ROOT / "runs" / "benchmark_autoencoder_digits"))
  parser.add_argument("--dry_run", action="store_true", help="a tiny autoencoder trained 2 steps")
  args = parser.parse_args(argv)
  out_dir = pathlib.Path(args.out_dir)
  out_dir.mkdir(parents=True, exist_ok=True)
  overrides = {"training.n_iters": args.steps, **(DRY_RUN if args.dry_run else {})}
  seconds = train(CONFIG, args.workdir, overrides, in_process=args.dry_run)
  autoencoder = load_autoencoder(str(args.workdir))
  images, _ = toy_data.load_digits(8)
  train_images, held_out = images[:toy_data.DIGITS_TRAIN_SIZE], images[toy_data.DIGITS_TRAIN_SIZE:]
  features_fn = digits_metrics.digits_features_fn()
  rows, latent_std = reconstruction_rows(autoencoder, held_out, held_out, features_fn)
  real = float(digits_metrics.digits_frechet_distance(train_images[:len(held_out)], held_out, features_fn))
  parameters = int(sum(np.size(a) for a in jax.tree.leaves(autoencoder.variables["params"])))
  result = {"config": CONFIG, "steps": args.steps, "train_seconds": seconds, "parameters": parameters,
            "latent_shape": [8 // autoencoder.downsample_factor] * 2 + [autoencoder.latent_channels],
            "scaling_factor": autoencoder.scaling_factor, "held_out_latent_std": latent_std,
            "num_held_out": len(held_out), "reconstructions": rows, "digits_fd_train_vs_held_out": real}
  (out_dir / "autoencoder_digits.json").write_text(json.dumps(result, indent=1))
  print(f"{'reconstruction':<16}{'MSE [-1,1]':>12}{'MSE [0,1]':>11}{'digits FD':>11}")
  for name, row in rows.items():
    print(f"{name:<16}{row['mse']:>12.5f}{row['mse_01']:>11.5f}{row['digits_fd']:>11.3f}")
  print(f"{'real digits':<16}{'':>12}{'':>11}{real:>11.3f}  (297 training digits vs the held-out ones)")
  print(f"wrote {out_dir / 'autoencoder_digits.json'}")
  return result


if __name__ == "__main__":
  main()
