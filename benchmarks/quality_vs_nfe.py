"""Sample quality against score evaluations (NFE) for every sampler, on a 2-D Gaussian mixture.

    python benchmarks/quality_vs_nfe.py [--out_dir benchmarks/results/quality_vs_nfe] [--num_samples 4096]

The mixture's score under the VP SDE is exact (the perturbed mixture is again a mixture), so only
the samplers err. Quality is the sliced Wasserstein distance (`evaluation.sliced_wasserstein`) to
fresh mixture samples; the reference line is the PC sampler at N = 1000 steps, and the floor is the
distance between two fresh draws of the mixture itself (sampling noise of the metric). Writes
`quality_vs_nfe.json` and `quality_vs_nfe.png` to `--out_dir` and prints a table.

`evaluation.sliced_wasserstein` costs O(n^2) (`np.quantile` at n levels): 4.5 s at n = 4096 and
24 s at n = 8192 on 2 shared CPU cores, which keeps the default sample count at 4096 and the
default run near 5 minutes; the floor (~0.03) then hides differences between the better samplers.
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
from score_jax import evaluation, sampling  # noqa: E402
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
    ("heun", "Heun (Karras Alg. 1)", "steps", [3, 5, 8, 10, 15, 25, 50], {}),
    ("heun", "Heun, S_churn=5 (Alg. 2)", "steps", [3, 5, 8, 10, 15, 25, 50], dict(S_churn=5.0)),
    ("adaptive_sde", "Adaptive SDE (GGF)", "eps_rel", [0.5, 0.2, 0.1, 0.05, 0.02, 0.01], {}),
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


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--out_dir", default="benchmarks/results/quality_vs_nfe")
  parser.add_argument("--num_samples", type=int, default=4096)
  parser.add_argument("--num_projections", type=int, default=128)
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args()
  out_dir = pathlib.Path(args.out_dir)
  out_dir.mkdir(parents=True, exist_ok=True)

  sde, eps = sde_lib.VPSDE(beta_min=0.1, beta_max=20.0, N=1000), 1e-3
  score_fn = mixture_score_fn(sde)
  shape = (args.num_samples, 2)
  rng = jax.random.key(args.seed)
  data = np.asarray(mixture_sample(jax.random.fold_in(rng, 10_000), args.num_samples))
  distance = lambda x: evaluation.sliced_wasserstein(x, data, num_projections=args.num_projections)
  quality = lambda x: distance(x) if np.isfinite(x).all() else float("nan")
  floors = [distance(np.asarray(mixture_sample(jax.random.fold_in(rng, 20_000 + i), args.num_samples)))
            for i in range(3)]
  floor = float(np.mean(floors))

  references = {}
  for label, corrector in [("PC 1000 steps (reverse diffusion + Langevin)", "langevin"),
                           ("PC 1000 steps (reverse diffusion only)", "none")]:
    samples, nfe, seconds = run(rng, score_fn, sde, shape, "pc", dict(corrector=corrector, eps=eps))
    references[label] = dict(nfe=nfe, sliced_wasserstein=quality(samples), seconds=seconds)

  results = []
  for method, label, swept, values, fixed in SWEEPS:
    for value in values:
      options = dict(fixed, eps=eps, **{swept: value})
      if method == "adaptive_sde":
        options["eps_abs"] = value / 5  # mixed tolerance: both shrink together
      if method == "ode":
        options.update(atol=value, denoise=True)
      samples, nfe, seconds = run(rng, score_fn, sde, shape, method, options)
      results.append(dict(method=method, label=label, options=options, nfe=nfe,
                          sliced_wasserstein=quality(samples), seconds=seconds))
      print(f"  {label:28s} {swept}={value:<8g} NFE {nfe:5d}  SW {results[-1]['sliced_wasserstein']:.4f}",
            flush=True)

  target = min(v["sliced_wasserstein"] for v in references.values())
  print(f"\nVP SDE, {args.num_samples} samples of an 8-component 2-D Gaussian mixture, exact score.")
  print(f"sliced Wasserstein floor (two fresh mixture draws): {floor:.4f}")
  for label, ref in references.items():
    print(f"reference {label}: NFE {ref['nfe']}, SW {ref['sliced_wasserstein']:.4f}")
  print(f"\n{'method':30s} {'NFE':>6s} {'SW':>8s} {'s':>7s}")
  for r in results:
    print(f"{r['label']:30s} {r['nfe']:6d} {r['sliced_wasserstein']:8.4f} {r['seconds']:7.3f}")
  print(f"\nfewest NFE reaching the best 1000-step PC quality (SW <= {target:.4f}):")
  reached = {}
  for r in results:
    if r["sliced_wasserstein"] <= target and r["nfe"] < reached.get(r["label"], math.inf):
      reached[r["label"]] = r["nfe"]
  for _, label, *_ in SWEEPS:
    print(f"  {label:30s} {reached.get(label, 'not reached')}")

  (out_dir / "quality_vs_nfe.json").write_text(json.dumps(dict(
      sde="VPSDE(0.1, 20, N=1000)", eps=eps, num_samples=args.num_samples, num_projections=args.num_projections,
      seed=args.seed, floor_draws=floors,
      mixture=dict(means=MEANS.tolist(), scales=SCALES.tolist(), weights=WEIGHTS.tolist()),
      floor=floor, references=references, results=results, fewest_nfe_reaching_pc=reached), indent=1))

  fig, ax = plt.subplots(figsize=(7, 4.5))
  for _, label, *_ in SWEEPS:
    points = sorted((r["nfe"], r["sliced_wasserstein"]) for r in results if r["label"] == label)
    ax.plot(*zip(*points), marker="o", markersize=3, label=label)
  for (label, ref), style in zip(references.items(), ["--", ":"]):
    ax.axhline(ref["sliced_wasserstein"], color="k", linestyle=style, linewidth=1, label=f"{label}, NFE {ref['nfe']}")
  ax.axhline(floor, color="gray", linewidth=4, alpha=0.3, label="floor: two fresh mixture draws")
  ax.axvline(30, color="gray", linewidth=0.5)
  ax.set(xscale="log", yscale="log", xlabel="NFE (score evaluations)", ylabel="sliced Wasserstein to data",
         title="2-D Gaussian mixture, VP SDE, exact score")
  ax.legend(fontsize=6.5)
  fig.tight_layout()
  fig.savefig(out_dir / "quality_vs_nfe.png", dpi=130)
  print(f"\nwrote {out_dir / 'quality_vs_nfe.json'} and {out_dir / 'quality_vs_nfe.png'}")


if __name__ == "__main__":
  main()
