"""Classifier-free guidance and post-hoc EMA, measured: the labelled 8gaussians and the digits.

    python benchmarks/guidance.py [--tasks 8gaussians,digits,posthoc_ema] [--out_dir benchmarks/results/guidance]
                                  [--toy_steps 4000] [--digits_steps 1500] [--dry_run]

8gaussians (configs/toy/8gaussians.py with `model.num_classes=8`, `training.class_dropout=0.2`): 2048
samples with classes 0..7 in turn at each guidance weight w, by the config's PC sampler; the class
accuracy is the fraction of samples within 3 standard deviations (0.3) of the requested mode's centre
(and, looser, the fraction whose nearest mode is the requested one).

digits (configs/digits_cfg.py, trained through main.py): 200 samples, 20 of each class, at w = 0, 1,
2, 4 (PC, Euler-Maruyama, 250 steps: the sampler of the classifier-guidance figures in the README),
read by the shipped digits classifier (`score_jax.metrics.digits`); beside them the classifier-guidance
figures of the same digits model (README: 12% / 53.5% / 84% / 95% at scale 0 / 1 / 2 / 4).

posthoc_ema (the same digits run): the power EMA reconstructed for each sigma_rel of a grid from the
stored snapshots (`score_jax.posthoc_ema.reconstruct`: EDM2's Algorithm 3, weights that sum to 1), and
the FD in the digits classifier's features (not FID) of 500 samples (w = 0, classes in turn) to the 297
held-out digits; the tracked profiles' own FD for comparison. The reconstruction's profile error (EDM2's) and the sum of the least-squares weights
before their normalisation are in the JSON.

JSON (`guidance.json`) is rewritten after every row; figures `guidance_8gaussians.png`,
`guidance_digits.png` and `posthoc_ema_fd.png` at the end. `--dry_run`: a few steps and samples
(plumbing, no figures).
"""

import argparse
import json
import pathlib
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

TOY_WEIGHTS = (0.0, 0.5, 1.0, 2.0, 4.0)
DIGITS_WEIGHTS = (0.0, 1.0, 2.0, 4.0)
CLASSIFIER_GUIDANCE = {0.0: 0.12, 1.0: 0.535, 2.0: 0.84, 4.0: 0.95}  # README, the same digits model
SIGMA_RELS = (0.02, 0.03, 0.04, 0.05, 0.065, 0.08, 0.1, 0.13, 0.17, 0.22)


def train(config_path, workdir, overrides):
  """Trains through main.py (resumes a finished or interrupted run; a finished one returns at once)."""
  command = [sys.executable, str(ROOT / "main.py"), f"--config={ROOT / config_path}", f"--workdir={workdir}",
             "--mode=train"] + [f"--config.{key}={value}" for key, value in overrides.items()]
  start = time.time()
  subprocess.run(command, check=True, cwd=ROOT)
  return time.time() - start


def load(config_path, overrides):
  """The config of `config_path` with `overrides` ({dotted key: value}), as main.py builds it."""
  import importlib.util
  spec = importlib.util.spec_from_file_location("config", ROOT / config_path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config()
  config.update_from_flattened_dict(overrides)
  return config


def sample(config, variables, labels, guidance_scale, seed):
  from score_jax import datasets, sampling, sde as sde_lib
  from score_jax.models import get_data_shape, get_model
  config = config.copy_and_resolve_references()
  config.sampling.guidance_scale = float(guidance_scale)
  sde, eps = sde_lib.get_sde(config)
  shape = (len(labels),) + get_data_shape(config)
  sample_fn = sampling.get_sampling_fn(config, sde, get_model(config), shape,
                                       datasets.get_data_inverse_scaler(config), eps)
  out = sample_fn(jax.random.PRNGKey(seed), variables, jnp.asarray(labels, jnp.int32))
  return np.asarray(out.samples), int(out.nfe)


class Results:
  def __init__(self, path):
    self.path = path
    self.rows = json.loads(path.read_text()) if path.exists() else []

  def add(self, row):
    self.rows = [r for r in self.rows if (r["task"], r["name"]) != (row["task"], row["name"])] + [row]
    self.path.write_text(json.dumps(self.rows, indent=1))
    print(json.dumps(row), flush=True)


def toy_rows(args, results, out_dir):
  from score_jax import trained_model
  config_path = "configs/toy/8gaussians.py"
  overrides = {"model.num_classes": 8, "training.class_dropout": 0.2, "training.n_iters": args.toy_steps,
               "training.snapshot_freq": args.toy_steps, "training.snapshot_sampling": False}
  workdir = out_dir / "runs" / "8gaussians_cfg"
  seconds = train(config_path, workdir, overrides)
  config = load(config_path, overrides)
  _, variables, step = trained_model.load_model(str(workdir))
  n = 64 if args.dry_run else 2048
  labels = np.arange(n) % 8
  centres = 2.0 * np.stack([np.cos(labels * np.pi / 4), np.sin(labels * np.pi / 4)], axis=1)
  scatter = {}
  for w in TOY_WEIGHTS:
    start = time.time()
    points, nfe = sample(config, variables, labels, w, seed=1)
    distance = np.linalg.norm(points - centres, axis=1)
    nearest = np.mod(np.round(np.arctan2(points[:, 1], points[:, 0]) / (np.pi / 4)), 8)
    scatter[w] = points
    results.add({"task": "8gaussians", "name": f"w={w:g}", "guidance_scale": w, "steps": step,
                 "accuracy_within_3std": float(np.mean(distance < 0.3)),
                 "accuracy_nearest_mode": float(np.mean(nearest == labels)),
                 "mean_distance_to_centre": float(np.mean(distance)), "nfe": nfe,
                 "sample_seconds": time.time() - start, "train_seconds": seconds})
  return scatter


def digits_training(args, out_dir):
  overrides = {"training.n_iters": args.digits_steps}
  if args.dry_run:
    overrides.update({"training.snapshot_freq": 10, "training.snapshot_freq_for_preemption": 10,
                      "training.ema_snapshot_freq": 5, "training.log_freq": 5, "training.eval_freq": 5,
                      "training.snapshot_sampling": False})
  workdir = out_dir / "runs" / "digits_cfg"
  seconds = train("configs/digits_cfg.py", workdir, overrides)
  return load("configs/digits_cfg.py", overrides), workdir, seconds


def digits_rows(args, results, config, workdir, seconds):
  from score_jax import trained_model
  from score_jax.metrics import digits as digits_metrics
  _, variables, step = trained_model.load_model(str(workdir))
  classify = digits_metrics.digits_features_fn()
  n = 20 if args.dry_run else 200
  labels = np.arange(n) % 10
  grids = {}
  for w in DIGITS_WEIGHTS:
    start = time.time()
    images, nfe = sample(config, variables, labels, w, seed=2)
    predicted = np.argmax(np.asarray(classify(images).logits), axis=-1)
    grids[w] = images
    results.add({"task": "digits", "name": f"w={w:g}", "guidance_scale": w, "steps": step,
                 "classifier_accuracy": float(np.mean(predicted == labels)),
                 "classifier_guidance_accuracy_same_scale": CLASSIFIER_GUIDANCE[w], "nfe": nfe,
                 "sample_seconds": time.time() - start, "train_seconds": seconds})
  return grids


def posthoc_rows(args, results, config, workdir):
  from score_jax import posthoc_ema, trained_model
  from score_jax.metrics import digits as digits_metrics
  from score_jax.toy_data import DIGITS_TRAIN_SIZE, load_digits
  held_out = load_digits(config.data.image_size)[0][DIGITS_TRAIN_SIZE:]
  model_state = trained_model.load_model(str(workdir))[1]
  n = 20 if args.dry_run else 500
  labels = np.arange(n) % 10
  for sigma_rel in SIGMA_RELS:
    start = time.time()
    params, solution = posthoc_ema.reconstruct(config, str(workdir), sigma_rel, return_info=True)
    images, _ = sample(config, {**model_state, "params": params}, labels, 0.0, seed=3)
    tracked = any(abs(sigma_rel - s) < 1e-9 for s in config.model.ema_sigma_rels)
    results.add({"task": "posthoc_ema", "name": f"sigma_rel={sigma_rel:g}", "sigma_rel": sigma_rel,
                 "tracked": tracked, "profile_relative_error": solution.relative_error,
                 "least_squares_sum": solution.least_squares_sum,
                 "digits_fd": float(digits_metrics.digits_frechet_distance(images, held_out)),
                 "seconds": time.time() - start})


def plots(results, out_dir, scatter, grids):
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  if scatter:
    fig, axes = plt.subplots(1, len(scatter), figsize=(3 * len(scatter), 3.2))
    rows = {r["guidance_scale"]: r for r in results.rows if r["task"] == "8gaussians"}
    for ax, (w, points) in zip(axes, scatter.items()):
      labels = np.arange(len(points)) % 8
      ax.scatter(points[:, 0], points[:, 1], c=labels, cmap="tab10", s=2, vmin=0, vmax=9)
      ax.set_title(f"w = {w:g}: {100 * rows[w]['accuracy_within_3std']:.1f}% in mode")
      ax.set_xlim(-3, 3), ax.set_ylim(-3, 3), ax.set_aspect("equal"), ax.set_xticks([]), ax.set_yticks([])
    fig.suptitle("Classifier-free guidance on 8gaussians (colour: requested mode)")
    fig.tight_layout()
    fig.savefig(out_dir / "guidance_8gaussians.png", dpi=110)
  if grids:
    fig, axes = plt.subplots(1, len(grids), figsize=(3.2 * len(grids), 3.6))
    rows = {r["guidance_scale"]: r for r in results.rows if r["task"] == "digits"}
    for ax, (w, images) in zip(axes, grids.items()):
      grid = images[:100].reshape(10, 10, *images.shape[1:3]).transpose(1, 2, 0, 3).reshape(
          10 * images.shape[1], 10 * images.shape[2])  # row c: class c
      ax.imshow(np.clip(grid, 0, 1), cmap="gray")
      ax.set_title(f"w = {w:g}: {100 * rows[w]['classifier_accuracy']:.1f}%")
      ax.axis("off")
    fig.suptitle("Classifier-free guidance on the digits (row: requested class; title: classifier accuracy)")
    fig.tight_layout()
    fig.savefig(out_dir / "guidance_digits.png", dpi=110)
  curve = sorted((r["sigma_rel"], r["digits_fd"], r["tracked"]) for r in results.rows if r["task"] == "posthoc_ema")
  if curve:
    sigma, fd, tracked = map(np.asarray, zip(*curve))
    fig, ax = plt.subplots(figsize=(5, 3.4))
    ax.plot(sigma, fd, "o-", label="post-hoc EMA (reconstructed)")
    ax.plot(sigma[tracked], fd[tracked], "s", ms=9, mfc="none", label="tracked in training")
    best = int(np.argmin(fd))
    ax.plot(sigma[best], fd[best], "*", ms=16, color="C3", label=f"best: sigma_rel = {sigma[best]:g}")
    ax.set_xscale("log"), ax.set_xlabel("sigma_rel"), ax.set_ylabel("digits FD (not FID)")
    ax.minorticks_off()
    ax.set_xticks([0.02, 0.03, 0.05, 0.1, 0.2], ["0.02", "0.03", "0.05", "0.1", "0.2"])
    ax.set_title("Digits FD against the EMA width, chosen after training")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out_dir / "posthoc_ema_fd.png", dpi=110)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--tasks", default="8gaussians,digits,posthoc_ema")
  parser.add_argument("--out_dir", default=str(ROOT / "benchmarks/results/guidance"))
  parser.add_argument("--toy_steps", type=int, default=4000)
  parser.add_argument("--digits_steps", type=int, default=1500)
  parser.add_argument("--dry_run", action="store_true")
  args = parser.parse_args(argv)
  if args.dry_run:
    args.toy_steps, args.digits_steps = 100, 10
  out_dir = pathlib.Path(args.out_dir)
  out_dir.mkdir(parents=True, exist_ok=True)
  results = Results(out_dir / "guidance.json")
  tasks = args.tasks.split(",")
  scatter, grids = {}, {}
  if "8gaussians" in tasks:
    scatter = toy_rows(args, results, out_dir)
  if "digits" in tasks or "posthoc_ema" in tasks:
    config, workdir, seconds = digits_training(args, out_dir)
    if "digits" in tasks:
      grids = digits_rows(args, results, config, workdir, seconds)
    if "posthoc_ema" in tasks:
      posthoc_rows(args, results, config, workdir)
  if not args.dry_run:
    plots(results, out_dir, scatter, grids)
  return results.rows


if __name__ == "__main__":
  main()
