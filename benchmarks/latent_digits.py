"""Latent diffusion on the digits with the project's own autoencoder: EDM and DiT trained on its 4x4x2 latents,
measured by the Fréchet distance of their decoded samples (2 CPU cores).

    python benchmarks/latent_digits.py [--runs edm,dit] [--steps 1500] [--eval_every 500] [--num_samples 500]
                                       [--heun_steps 18] [--autoencoder runs/benchmark_autoencoder_digits]
                                       [--out_dir benchmarks/results/latent_digits]
                                       [--workdir runs/benchmark_latent_digits] [--dry_run]

Trains through main.py (a finished run is reused; its training time kept in `benchmark_seconds.json`): the
autoencoder of configs/latent/digits_autoencoder.py (benchmarks/autoencoder_digits.py's run: its reconstructions'
FD is the floor of every latent model here), then configs/latent/digits_edm.py (EDM, a 251k-parameter DDPM++ on the
latents) and configs/latent/digits_dit.py (DiT, patch 1 on the 4x4 latent grid) with `data.autoencoder` set to that
workdir; `dit_repa` adds REPA (the digits classifier's features of the decoded clean latents). At each snapshot
(every `--eval_every` steps), `--num_samples` samples drawn with Heun's method in the latent space are decoded to
8x8 digits and measured against the 297 held-out digits (`score_jax.metrics.digits`, not FID), beside pixel-space
DDPM++'s 25.5 at 1500 steps (docs/training.md). Prints the table, writes `latent_digits.json` and
`latent_digits.png` (64 decoded samples of each run's last snapshot). `--dry_run`: tiny networks trained 2 steps
(in this process), 64 samples, Heun in 2 steps: the plumbing on a CPU (tests/test_benchmarks.py).
"""

import argparse
import json
import pathlib
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks import autoencoder_digits  # noqa: E402
from benchmarks.plots import save_image_panels  # noqa: E402
from benchmarks.trained_runs import DRY_RUN_TRAINING, train  # noqa: E402
from score_jax import run_setup, toy_data, trained_model  # noqa: E402
from score_jax.metrics import digits as digits_metrics  # noqa: E402

PIXEL_DDPMPP_FD = 25.5  # DDPM++ digits in pixel space at 1500 steps (benchmarks/edm2_digits.py, docs/training.md)
REPA = {"training.repa_weight": 0.5, "training.repa_depth": 2, "training.repa_hidden": 256,
        "training.repa_encoder": "digits"}
RUNS = {"edm": ("configs/latent/digits_edm.py", {}),
        "dit": ("configs/latent/digits_dit.py", {}),
        "dit_repa": ("configs/latent/digits_dit.py", REPA)}
DRY_RUN = {"edm": {"model.nf": 8, "model.num_res_blocks": 1, "model.attn_resolutions": ()},
           "dit": {"model.hidden_size": 16, "model.depth": 2, "model.num_heads": 2},
           "dit_repa": {"model.hidden_size": 16, "model.depth": 2, "model.num_heads": 2, "training.repa_depth": 1,
                        "training.repa_hidden": 8}}


def network_parameters(variables):
  """Trainable parameters of the network alone (REPA's projector left out)."""
  params = {k: v for k, v in variables["params"].items() if k != "repa_projector"}
  return int(sum(np.size(a) for a in jax.tree.leaves(params)))


def decoded_sampler(config, num_samples, heun_steps):
  """`sample(variables)`: `num_samples` samples of a trained latent model of `config`, decoded to pixels in [0, 1]
  (Heun's method); the autoencoder is read and the sampler compiled once, for every snapshot."""
  config = config.copy_and_resolve_references()
  config.sampling.method, config.sampling.steps = "heun", heun_steps
  sample_fn = run_setup.RunSetup(config, companions=("guide",)).sampler(num_samples)  # decodes what it samples
  return lambda variables: np.clip(np.asarray(sample_fn(jax.random.PRNGKey(0), variables).samples), 0.0, 1.0)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--runs", default="edm,dit")
  parser.add_argument("--steps", type=int, default=1500)
  parser.add_argument("--eval_every", type=int, default=500)
  parser.add_argument("--num_samples", type=int, default=500)
  parser.add_argument("--heun_steps", type=int, default=18)
  parser.add_argument("--autoencoder", default=None,
                      help="the autoencoder's workdir (default: benchmarks/autoencoder_digits.py's run; a dry run's "
                      "own under --workdir)")
  parser.add_argument("--out_dir", default=str(ROOT / "benchmarks" / "results" / "latent_digits"))
  parser.add_argument("--workdir", default=str(ROOT / "runs" / "benchmark_latent_digits"))
  parser.add_argument("--dry_run", action="store_true", help="tiny networks, 2 training steps, 64 samples")
  args = parser.parse_args(argv)
  if args.dry_run:
    args.num_samples, args.heun_steps = 64, 2
  if args.autoencoder is None:
    args.autoencoder = str(pathlib.Path(args.workdir) / "autoencoder" if args.dry_run
                           else ROOT / "runs" / "benchmark_autoencoder_digits")
  out_dir = pathlib.Path(args.out_dir)
  out_dir.mkdir(parents=True, exist_ok=True)
  floor = autoencoder_digits.main(["--workdir", args.autoencoder, "--out_dir", str(out_dir / "autoencoder")]
                                  + (["--dry_run"] if args.dry_run else []))
  floor_fd = floor["reconstructions"]["posterior_mean"]["digits_fd"]
  images, _ = toy_data.load_digits(8)
  held_out = images[toy_data.DIGITS_TRAIN_SIZE:]
  features_fn = digits_metrics.digits_features_fn()
  rows, pictures = [], {}
  for run in args.runs.split(","):
    config_path, extra = RUNS[run]
    workdir = pathlib.Path(args.workdir) / run
    overrides = {"training.n_iters": args.steps, "training.snapshot_freq": args.eval_every,
                 "training.snapshot_sampling": False, "data.autoencoder": args.autoencoder,
                 "data.latent_cache": str(pathlib.Path(args.workdir) / "latent_cache"),
                 "training.keep_checkpoints": args.steps // args.eval_every + 1,  # every snapshot is measured
                 **extra, **({**DRY_RUN_TRAINING, "training.snapshot_freq": 1, **DRY_RUN[run]} if args.dry_run
                             else {})}
    seconds = train(config_path, workdir, overrides, in_process=args.dry_run)
    sample = decoded_sampler(trained_model.run_config(str(workdir)), args.num_samples, args.heun_steps)
    for step in trained_model.checkpoint_steps(str(workdir)):
      _, variables, _ = trained_model.load_model(str(workdir), step=step)
      start = time.time()
      samples = sample(variables)
      fd = float(digits_metrics.digits_frechet_distance(samples, held_out, features_fn))
      pictures[run] = (step, fd, samples)
      rows.append({"run": run, "config": config_path, "step": step, "digits_fd": fd,
                   "ratio_to_pixel_ddpmpp": fd / PIXEL_DDPMPP_FD, "parameters": network_parameters(variables),
                   "train_seconds": seconds, "sample_seconds": time.time() - start,
                   "num_samples": args.num_samples, "nfe": 2 * args.heun_steps - 1,
                   "repa_weight": extra.get("training.repa_weight", 0.0)})
      print(f"  {run} step {step}: FD {fd:.2f}", file=sys.stderr, flush=True)
  result = {"autoencoder": args.autoencoder, "autoencoder_floor_fd": floor_fd, "pixel_ddpmpp_fd": PIXEL_DDPMPP_FD,
            "rows": rows}
  (out_dir / "latent_digits.json").write_text(json.dumps(result, indent=1))
  print(f"{'run':<10}{'step':>7}{'FD':>9}{'x DDPM++':>10}{'params':>9}{'train s':>9}")
  for row in rows:
    print(f"{row['run']:<10}{row['step']:>7}{row['digits_fd']:>9.2f}{row['ratio_to_pixel_ddpmpp']:>10.2f}"
          f"{row['parameters']:>9}{row['train_seconds']:>9.0f}")
  print(f"autoencoder floor (reconstructions' FD): {floor_fd:.2f}; pixel DDPM++ at 1500 steps: {PIXEL_DDPMPP_FD}")
  plot(pictures, out_dir / "latent_digits.png")
  print(f"wrote {out_dir / 'latent_digits.json'} and {out_dir / 'latent_digits.png'}")
  return result


def plot(pictures, path):
  """64 decoded samples of each run, framed in grey (8 px digits apart)."""
  save_image_panels(path, [(f"latent {run}, step {step}\nFD {fd:.1f}",
                            np.pad(samples[:64], ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=0.5))
                           for run, (step, fd, samples) in pictures.items()], fontsize=8)


if __name__ == "__main__":
  main()
