"""Autoguidance on the checkerboard (EDM2's toy experiment in spirit): off-support samples and mode coverage
against the guidance weight, for autoguidance and classifier-free guidance, deterministic and stochastic samplers.

    python benchmarks/autoguidance.py [--weights 0,0.5,1,2] [--out_dir benchmarks/results/autoguidance]
                                      [--workdir runs/benchmark_autoguidance] [--dry_run]

Trains through main.py (finished runs are reused): the toy quickstart (configs/toy/checkerboard.py, width 128,
6000 steps) as the main model and, as its guide, a narrower (width 64) one trained a quarter as long (1500
steps); the same pair class-conditional on the checkerboard's 8 squares (`model.num_classes = 8`,
`training.class_dropout = 0.1`) for classifier-free guidance beside autoguidance. Draws 4096 samples at each
guidance weight w with DPM-Solver++ (20 steps, deterministic), PC with its Langevin corrector (1000 steps, the
reference's sampler) and PC without corrector (Euler-Maruyama, 1000 steps), and reports the fraction off the
board and each square's share of the samples (the smallest share over 1/8: 1 = every square at its share;
below 0.5 a mode is losing its mass). Prints the table, writes `autoguidance.json` and `autoguidance.png`.
`--dry_run`: every run and sampler at the first two weights, on tiny networks trained 2 steps (in this process),
64 samples and 20 PC steps: the plumbing on a CPU (tests/test_benchmarks.py).
"""

import argparse
import json
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks.plots import scatter_panel  # noqa: E402
from benchmarks.trained_runs import DRY_RUN_TRAINING, train  # noqa: E402
from score_jax import datasets, sampling, sde as sde_lib, toy_data, trained_model  # noqa: E402

NUM_SAMPLES = 4096
CONDITIONAL = {"model.num_classes": 8, "training.class_dropout": 0.1}
RUNS = {"main": {}, "guide": {"model.nf": 64, "training.n_iters": 1500},
        "main_conditional": CONDITIONAL, "guide_conditional": {**CONDITIONAL, "model.nf": 64, "training.n_iters": 1500}}
SAMPLERS = {"dpm_solver": dict(method="dpm_solver", steps=20),
            "pc_langevin": dict(method="pc", predictor="euler_maruyama", corrector="langevin"),
            "pc_no_corrector": dict(method="pc", predictor="euler_maruyama", corrector="none")}
DRY_RUN = {**DRY_RUN_TRAINING, "model.nf": 8, "model.num_res_blocks": 1, "model.embedding_dim": 8,
           "model.num_scales": 20}


def measure(config, model, variables, workdir, sampler, w, guide_workdir, num_samples=NUM_SAMPLES):
  config = config.copy_and_resolve_references()
  for key, value in SAMPLERS[sampler].items():
    config.sampling[key] = value
  config.sampling.guidance_scale = float(w)
  config.sampling.guidance_workdir = str(guide_workdir) if guide_workdir else ""
  sde, eps = sde_lib.get_sde(config)
  sample_fn = sampling.get_sampling_fn(config, sde, model, (num_samples, 2), datasets.get_data_inverse_scaler(config),
                                       eps, guide=trained_model.guiding_model(config))
  labels = jnp.arange(num_samples) % 8 if config.model.num_classes else None
  out = sample_fn(jax.random.PRNGKey(0), variables, labels)
  samples = np.asarray(out.samples)
  on = np.all(np.abs(samples) <= 2.0, axis=1) & ((np.floor(samples[:, 0]) + np.floor(samples[:, 1])) % 2 == 0)
  squares = np.asarray(toy_data.checkerboard_square(jnp.asarray(samples[on])))
  shares = np.bincount(squares, minlength=8) / num_samples
  return {"off_support": float(1 - on.mean()), "min_share": float(shares.min() * 8), "nfe": int(out.nfe)}, samples


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--weights", default="0,0.5,1,2")
  parser.add_argument("--out_dir", default=str(ROOT / "benchmarks" / "results" / "autoguidance"))
  parser.add_argument("--workdir", default=str(ROOT / "runs" / "benchmark_autoguidance"))
  parser.add_argument("--dry_run", action="store_true", help="tiny networks, 2 training steps, 64 samples")
  args = parser.parse_args(argv)
  weights = [float(w) for w in args.weights.split(",")][:2 if args.dry_run else None]
  num_samples = 64 if args.dry_run else NUM_SAMPLES
  out_dir, runs = pathlib.Path(args.out_dir), pathlib.Path(args.workdir)
  out_dir.mkdir(parents=True, exist_ok=True)
  for name, overrides in RUNS.items():
    train("configs/toy/checkerboard.py", runs / name, {**overrides, **(DRY_RUN if args.dry_run else {})},
          in_process=args.dry_run)
  rows, pictures = [], {}
  # (model, guidance: autoguidance with the guide's workdir, or classifier-free with none)
  cases = [("main", "autoguidance", runs / "guide"), ("main_conditional", "autoguidance", runs / "guide_conditional"),
           ("main_conditional", "classifier_free", None)]
  for model_name, guidance, guide_workdir in cases:
    config = trained_model.run_config(str(runs / model_name))
    model, variables, _ = trained_model.load_model(str(runs / model_name))
    for sampler in SAMPLERS:
      for w in weights:
        row, samples = measure(config, model, variables, runs / model_name, sampler, w, guide_workdir, num_samples)
        row.update(model=model_name, guidance=guidance, sampler=sampler, w=w)
        rows.append(row)
        if sampler == "dpm_solver":
          pictures[(model_name, guidance, w)] = samples
        print(f"  {model_name} {guidance} {sampler} w={w:g}: off {100 * row['off_support']:.2f}%, "
              f"min share {row['min_share']:.2f}", file=sys.stderr, flush=True)
      (out_dir / "autoguidance.json").write_text(json.dumps(rows, indent=1))
  print(f"{'model':<18}{'guidance':<17}{'sampler':<17}{'w':>5}{'NFE':>6}{'off board':>11}{'min share':>11}")
  for row in rows:
    print(f"{row['model']:<18}{row['guidance']:<17}{row['sampler']:<17}{row['w']:>5g}{row['nfe']:>6}"
          f"{100 * row['off_support']:>10.2f}%{row['min_share']:>11.2f}")
  plot(pictures, weights, out_dir / "autoguidance.png")
  print(f"wrote {out_dir / 'autoguidance.json'} and {out_dir / 'autoguidance.png'}")


def plot(pictures, weights, path):
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  keys = sorted({key[:2] for key in pictures})
  fig, axes = plt.subplots(len(keys), len(weights), figsize=(2.6 * len(weights), 2.6 * len(keys)))
  for i, key in enumerate(keys):
    for j, w in enumerate(weights):
      scatter_panel(axes[i][j], pictures[key + (w,)], f"{key[0]}, {key[1]}, w={w:g}", 3.0, size=0.3, fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=100)


if __name__ == "__main__":
  main()
