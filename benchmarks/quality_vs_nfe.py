"""Sample quality against score evaluations (NFE) for every sampler: a 2-D Gaussian mixture and the digits.

    python benchmarks/quality_vs_nfe.py [--tasks mixture,digits] [--out_dir benchmarks/results/quality_vs_nfe]
                                        [--num_samples 4096] [--train_steps 1500] [--digits_samples 1000]

mixture: the mixture's score under the VP SDE is exact (the perturbed mixture is again a mixture), so
only the samplers err. Quality is the sliced Wasserstein distance (`distances.sliced_wasserstein`) to
fresh mixture samples; the reference line is the PC sampler at N = 1000 steps, and the floor is the
distance between two fresh draws of the mixture itself (sampling noise of the metric). Writes
`quality_vs_nfe.json` and `quality_vs_nfe.png`.

digits: `configs/digits.py` (DDPM++, VP SDE, 16 px) is trained for `--train_steps` in `--digits_workdir`
(or resumed there), then every sampler draws `--digits_samples` digits with its score; quality is the
Fréchet distance to the 1500 training digits in the feature space of the shipped digits classifier
(`score_jax.metrics.digits`; not FID). The line of the 297 held-out real digits is no floor: the FD of
so few images carries a large small-sample bias (24.5 against ~3 for 1000 samples). Writes
`digits_quality_vs_nfe.json` and `.png`. Meant for an accelerator: the two 1000-step PC reference runs
alone are 4000 evaluations of the U-Net on the whole sample batch.

`distances.sliced_wasserstein` costs O(n^2) (`np.quantile` at n levels): 4.5 s at n = 4096 and
24 s at n = 8192 on 2 shared CPU cores, which keeps the default sample count at 4096 and the
default mixture run near 5 minutes; the floor (~0.03) then hides differences between the better samplers.
"""

import argparse
import json
import math
import pathlib
import sys
import time

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from score_jax import sampling
from score_jax.metrics import distances  # noqa: E402
from score_jax import sde as sde_lib  # noqa: E402

# 8 isotropic components on a circle of radius 2, unequal weights and widths.
ANGLES = np.arange(8) * 2 * math.pi / 8
MEANS = 2.0 * np.stack([np.cos(ANGLES), np.sin(ANGLES)], axis=1).astype(np.float32)
SCALES = np.array([0.1, 0.2, 0.15, 0.3, 0.1, 0.25, 0.15, 0.2], np.float32)
WEIGHTS = np.array([2, 1, 1, 2, 1, 1, 1, 3], np.float32) / 12.0

# method, label, the swept option and its values, fixed options
SWEEPS = [
    ("ddim", "DDIM (eta=0)", "steps", [5, 10, 20, 30, 50, 100, 200], {}),
    ("ddim", "DDIM (eta=1)", "steps", [5, 10, 20, 30, 50, 100, 200], dict(eta=1.0)),
    ("dpm_solver", "DPM-Solver++(2M)", "steps", [5, 8, 10, 15, 20, 30, 50], dict(order=2)),
    ("dpm_solver", "DPM-Solver++(3M)", "steps", [5, 8, 10, 15, 20, 30, 50], dict(order=3)),
    ("dpm_solver", "DPM-Solver++(2S)", "steps", [3, 5, 8, 10, 15, 25], dict(order=2, solver_type="singlestep")),
    ("dpm_solver", "DPM-Solver++(3S)", "steps", [2, 3, 5, 8, 10, 15], dict(order=3, solver_type="singlestep")),
    ("heun", "Heun (Karras Alg. 1)", "steps", [3, 5, 8, 10, 15, 25, 50], {}),
    ("heun", "Heun, S_churn=5 (Alg. 2)", "steps", [3, 5, 8, 10, 15, 25, 50], dict(S_churn=5.0)),
    ("adaptive_sde", "Adaptive SDE (GGF)", "eps_rel", [0.5, 0.2, 0.1, 0.05, 0.02, 0.01], {}),
    ("ode", "RK45 probability-flow ODE", "rtol", [1e-1, 1e-2, 1e-3, 1e-5], {}),
]


# Images: the same methods; the adaptive solver's tolerances are per pixel (data in [-1, 1]).
DIGITS_SWEEPS = [
    ("ddim", "DDIM (eta=0)", "steps", [5, 10, 20, 50, 100, 200], {}),
    ("dpm_solver", "DPM-Solver++(2M)", "steps", [5, 8, 10, 15, 20, 30, 50], dict(order=2)),
    ("dpm_solver", "DPM-Solver++(3M)", "steps", [5, 8, 10, 15, 20, 30, 50], dict(order=3)),
    ("dpm_solver", "DPM-Solver++(2S)", "steps", [3, 5, 8, 10, 15, 25], dict(order=2, solver_type="singlestep")),
    ("dpm_solver", "DPM-Solver++(3S)", "steps", [2, 3, 5, 8, 10, 15], dict(order=3, solver_type="singlestep")),
    ("heun", "Heun (Karras Alg. 1)", "steps", [3, 5, 8, 10, 15, 25, 50], {}),
    ("heun", "Heun, S_churn=40 (Alg. 2)", "steps", [5, 10, 15, 25, 50], dict(S_churn=40.0, S_tmin=0.05, S_tmax=50.0,
                                                                            S_noise=1.003)),
    ("adaptive_sde", "Adaptive SDE (GGF)", "eps_rel", [0.5, 0.2, 0.1, 0.05, 0.02], {}),
    ("ode", "RK45 probability-flow ODE", "rtol", [1e-1, 1e-2, 1e-3, 1e-5], {}),
]

def mixture_sample(rng, n):
  """n draws from the mixture."""
  k1, k2 = jax.random.split(rng)
  component = jax.random.choice(k1, len(WEIGHTS), (n,), p=jnp.asarray(WEIGHTS))
  return MEANS[component] + SCALES[component][:, None] * jax.random.normal(k2, (n, 2))


def mixture_score_fn(sde):
  """Exact score of the perturbed mixture sum_k w_k N(m mu_k, (m^2 s_k^2 + std^2) I)."""
  means, scales, log_weights = jnp.asarray(MEANS), jnp.asarray(SCALES), jnp.log(jnp.asarray(WEIGHTS))

  def score_fn(x, t):
    mean_scale, std = sde.marginal_coeffs(t)
    var = mean_scale[:, None]**2 * scales**2 + std[:, None]**2  # (B, K)
    diff = x[:, None, :] - mean_scale[:, None, None] * means  # (B, K, 2)
    log_joint = log_weights - 0.5 * jnp.sum(diff**2, -1) / var - jnp.log(var)  # 2-D: log of var^(D/2)
    resp = jax.nn.softmax(log_joint, axis=-1)
    return jnp.einsum("bk,bkd->bd", resp, -diff / var[..., None])

  return score_fn


def run(rng, score_fn, sde, shape, method, options):
  """(samples, nfe, seconds of the second, compiled, call)."""
  call = lambda key: sampling.sample(key, score_fn, sde, shape, method=method, **options)
  jax.block_until_ready(call(jax.random.fold_in(rng, 1)))  # compile (and a warm-up draw)
  start = time.perf_counter()
  out = jax.block_until_ready(call(rng))
  return np.asarray(out.samples), int(out.nfe), time.perf_counter() - start


def sweep(rng, score_fn, sde, shape, quality, eps, sweeps, metric, partial_path=None):
  """Runs every (method, option value) of `sweeps`; returns rows with NFE, quality and seconds."""
  results = []
  for method, label, swept, values, fixed in sweeps:
    for value in values:
      options = dict(fixed, eps=eps, **{swept: value})
      if method == "adaptive_sde":
        options["eps_abs"] = value / 5  # mixed tolerance: both shrink together
      if method == "ode":
        options.update(atol=value, denoise=True)
      samples, nfe, seconds = run(rng, score_fn, sde, shape, method, options)
      results.append(dict(method=method, label=label, options=options, nfe=nfe, seconds=seconds,
                          **{metric: quality(samples)}))
      print(f"  {label:28s} {swept}={value:<8g} NFE {nfe:5d}  {metric} {results[-1][metric]:.4f}", flush=True)
      if partial_path is not None:  # a run cut short keeps what it measured
        partial_path.write_text(json.dumps(results, indent=1))
  return results


def pc_references(rng, score_fn, sde, shape, quality, eps, metric):
  references = {}
  for label, corrector in [("PC 1000 steps (reverse diffusion + Langevin)", "langevin"),
                           ("PC 1000 steps (reverse diffusion only)", "none")]:
    samples, nfe, seconds = run(rng, score_fn, sde, shape, "pc", dict(corrector=corrector, eps=eps))
    references[label] = dict(nfe=nfe, seconds=seconds, **{metric: quality(samples)})
  return references


def report(title, floor_label, floor, references, results, metric, out_dir, name, extra):
  """Prints the table, writes `<name>.json` and `<name>.png`."""
  target = min(v[metric] for v in references.values())
  print(f"\n{title}")
  print(f"{floor_label}: {floor:.4f}")
  for label, ref in references.items():
    print(f"reference {label}: NFE {ref['nfe']}, {metric} {ref[metric]:.4f}")
  print(f"\n{'method':30s} {'NFE':>6s} {metric:>10s} {'s':>7s}")
  for r in results:
    print(f"{r['label']:30s} {r['nfe']:6d} {r[metric]:10.4f} {r['seconds']:7.3f}")
  print(f"\nfewest NFE reaching the best 1000-step PC quality ({metric} <= {target:.4f}):")
  reached = {}
  for r in results:
    if r[metric] <= target and r["nfe"] < reached.get(r["label"], math.inf):
      reached[r["label"]] = r["nfe"]
  labels = list(dict.fromkeys(r["label"] for r in results))
  for label in labels:
    print(f"  {label:30s} {reached.get(label, 'not reached')}")
  (out_dir / f"{name}.json").write_text(json.dumps(dict(
      extra, floor=floor, references=references, results=results, fewest_nfe_reaching_pc=reached), indent=1))

  fig, ax = plt.subplots(figsize=(7, 4.5))
  for label in labels:
    points = sorted((r["nfe"], r[metric]) for r in results if r["label"] == label and np.isfinite(r[metric]))
    if points:
      ax.plot(*zip(*points), marker="o", markersize=3, label=label)
  for (label, ref), style in zip(references.items(), ["--", ":"]):
    ax.axhline(ref[metric], color="k", linestyle=style, linewidth=1, label=f"{label}, NFE {ref['nfe']}")
  ax.axhline(floor, color="gray", linewidth=4, alpha=0.3, label=floor_label)
  ax.axvline(30, color="gray", linewidth=0.5)
  ax.set(xscale="log", yscale="log", xlabel="NFE (score evaluations)", ylabel=extra["metric_name"], title=title)
  ax.legend(fontsize=6.5)
  fig.tight_layout()
  fig.savefig(out_dir / f"{name}.png", dpi=130)
  print(f"\nwrote {out_dir / (name + '.json')} and {out_dir / (name + '.png')}")


def mixture_benchmark(args, out_dir):
  sde, eps = sde_lib.VPSDE(beta_min=0.1, beta_max=20.0, N=1000), 1e-3
  score_fn = mixture_score_fn(sde)
  shape = (args.num_samples, 2)
  rng = jax.random.key(args.seed)
  data = np.asarray(mixture_sample(jax.random.fold_in(rng, 10_000), args.num_samples))
  distance = lambda x: distances.sliced_wasserstein(x, data, num_projections=args.num_projections)
  quality = lambda x: distance(x) if np.isfinite(x).all() else float("nan")
  floors = [distance(np.asarray(mixture_sample(jax.random.fold_in(rng, 20_000 + i), args.num_samples)))
            for i in range(3)]
  references = pc_references(rng, score_fn, sde, shape, quality, eps, "sliced_wasserstein")
  results = sweep(rng, score_fn, sde, shape, quality, eps, SWEEPS, "sliced_wasserstein")
  report(f"VP SDE, {args.num_samples} samples of an 8-component 2-D Gaussian mixture, exact score",
         "floor: two fresh mixture draws", float(np.mean(floors)), references, results, "sliced_wasserstein",
         out_dir, "quality_vs_nfe", dict(
             sde="VPSDE(0.1, 20, N=1000)", eps=eps, num_samples=args.num_samples,
             num_projections=args.num_projections, seed=args.seed, floor_draws=floors,
             metric_name="sliced Wasserstein to data",
             mixture=dict(means=MEANS.tolist(), scales=SCALES.tolist(), weights=WEIGHTS.tolist())))


def trained_digits_model(workdir, train_steps):
  """(config, model, EMA variables) of `configs/digits.py` trained for `train_steps` in `workdir` (resumed)."""
  from configs import digits
  from score_jax.drivers import train
  from score_jax.models import get_model

  config = digits.get_config()
  config.training.n_iters = train_steps
  config.training.snapshot_freq = train_steps
  config.training.snapshot_sampling = False
  state = train.train_and_evaluate(config, str(workdir))
  return config, get_model(config), state.variables(ema=True)


def digits_benchmark(args, out_dir):
  """The same sweep on the DDPM++ trained on the embedded digits; quality = the digits-classifier FD."""
  from score_jax import datasets
  from score_jax.metrics import digits as digits_metrics
  from score_jax.models import get_score_fn
  from score_jax.toy_data import DIGITS_TRAIN_SIZE, load_digits

  start = time.perf_counter()
  config, model, variables = trained_digits_model(pathlib.Path(args.digits_workdir), args.train_steps)
  train_seconds = time.perf_counter() - start
  sde = sde_lib.VPSDE(beta_min=config.model.beta_min, beta_max=config.model.beta_max, N=1000)
  eps = 1e-3
  score_fn = get_score_fn(sde, model, variables, continuous=True)
  inverse_scaler = datasets.get_data_inverse_scaler(config)
  images = load_digits(config.data.image_size)[0]
  train_images, held_out = images[:DIGITS_TRAIN_SIZE], images[DIGITS_TRAIN_SIZE:]
  features_fn = digits_metrics.digits_features_fn()

  def quality(x):
    x = np.clip(np.asarray(inverse_scaler(x)), 0.0, 1.0)
    if not np.isfinite(x).all():
      return float("nan")
    return digits_metrics.digits_frechet_distance(x, train_images, features_fn)

  floor = digits_metrics.digits_frechet_distance(held_out, train_images, features_fn)
  shape = (args.digits_samples,) + (config.data.image_size, config.data.image_size, config.data.num_channels)
  rng = jax.random.key(args.seed)
  references = pc_references(rng, score_fn, sde, shape, quality, eps, "digits_fd")
  print(f"trained in {train_seconds:.0f} s; floor {floor:.3f}; references {references}", flush=True)
  results = sweep(rng, score_fn, sde, shape, quality, eps, DIGITS_SWEEPS, "digits_fd",
                  out_dir / "digits_quality_vs_nfe.partial.json")
  report(f"VP SDE, {args.digits_samples} digits from DDPM++ trained {args.train_steps} steps",
         "297 held-out real digits (an FD of 297 images is biased up: not a floor)", floor, references, results, "digits_fd", out_dir, "digits_quality_vs_nfe",
         dict(sde="VPSDE(0.1, 20, N=1000)", eps=eps, num_samples=args.digits_samples, seed=args.seed,
              train_steps=args.train_steps, train_seconds=train_seconds, device=str(jax.devices()[0].device_kind),
              metric_name="Fréchet distance to training digits\n(digits-classifier features; not FID)"))


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--tasks", default="mixture", help="comma-separated: mixture, digits")
  parser.add_argument("--out_dir", default="benchmarks/results/quality_vs_nfe")
  parser.add_argument("--num_samples", type=int, default=4096)
  parser.add_argument("--num_projections", type=int, default=128)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--digits_workdir", default="runs/digits_benchmark",
                      help="trains configs/digits.py here first (or resumes / reuses a finished run)")
  parser.add_argument("--train_steps", type=int, default=1500)
  parser.add_argument("--digits_samples", type=int, default=1000)
  args = parser.parse_args()
  tasks = args.tasks.split(",")
  for task in tasks:
    if task not in ("mixture", "digits"):
      raise SystemExit(f"--tasks: unknown task {task!r}; choose from mixture, digits")
  out_dir = pathlib.Path(args.out_dir)
  out_dir.mkdir(parents=True, exist_ok=True)
  if "mixture" in tasks:
    mixture_benchmark(args, out_dir)
  if "digits" in tasks:
    digits_benchmark(args, out_dir)


if __name__ == "__main__":
  main()
