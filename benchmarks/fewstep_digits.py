"""Few-step generation on the embedded digits: FD of 1- and 2-step samples of consistency distillation, ECT and
sCM against their EDM teacher at 35 evaluations, and what each costs to train (2 CPU cores).

    python benchmarks/fewstep_digits.py [--teacher_steps 1500] [--student_steps 1000] [--num_samples 500]
                                        [--out_dir benchmarks/results/fewstep_digits] [--workdir runs/benchmark_fewstep_digits]
                                        [--models consistency_distillation,ect_tuned] [--dry_run]

Trains through main.py (a finished run is reused; its training time is kept in the run's
`benchmark_seconds.json`): the EDM teacher (configs/edm/digits.py), consistency distillation from it
(configs/fewstep/digits_cd.py), ECT tuned from its weights (configs/fewstep/digits_ect.py with
`training.init_workdir`) and continuous-time consistency training (configs/fewstep/digits_scm.py), then draws
`--num_samples` samples of each (the teacher with Heun at 35 evaluations and DPM-Solver++ at 10; the consistency
models at 1 and 2 steps) and measures the Fréchet distance in the digits classifier's features
(`score_jax.metrics.digits`, not FID) to the 297 held-out digits. Prints the table, writes
`fewstep_digits.json` and `fewstep_digits.png` (an 8 x 8 grid of each model at 1 step and the teacher).
`--models`: train and measure only these rows (and the teacher), replacing their rows in an existing
`fewstep_digits.json` and keeping the others; the picture then goes to `fewstep_digits_<models>.png`.
`--dry_run`: every model and sampler on tiny networks trained 2 steps (in this process), 64 samples, the teacher
sampled in 2 steps: the plumbing on a CPU (tests/test_benchmarks.py).
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

from score_jax import datasets, sampling, sde as sde_lib, toy_data, trained_model  # noqa: E402
from score_jax.metrics import digits as digits_metrics  # noqa: E402
from score_jax.models import get_data_shape  # noqa: E402
from benchmarks.plots import image_grid  # noqa: E402
from benchmarks.trained_runs import DRY_RUN_TRAINING, train  # noqa: E402

# name -> (config, the workdirs of other rows by key, is it the teacher); trained in this order.
MODELS = {"edm_teacher": ("configs/edm/digits.py", {}, True),
          "consistency_distillation": ("configs/fewstep/digits_cd.py", {"training.teacher_workdir": "edm_teacher"}, False),
          "ect_tuned": ("configs/fewstep/digits_ect.py", {"training.init_workdir": "edm_teacher"}, False),
          "scm": ("configs/fewstep/digits_scm.py", {}, False)}
DRY_RUN = {**DRY_RUN_TRAINING, "model.nf": 8, "model.ch_mult": (1,), "model.num_res_blocks": 1,
           "model.attn_resolutions": ()}


def draw(config, model, variables, num_samples, **options):
  config = config.copy_and_resolve_references()
  for key, value in options.items():
    config.sampling[key] = value
  sde, eps = sde_lib.get_sde(config)
  sample_fn = sampling.get_sampling_fn(config, sde, model, (num_samples,) + get_data_shape(config),
                                       datasets.get_data_inverse_scaler(config), eps)
  start = time.time()
  out = sample_fn(jax.random.PRNGKey(0), variables)
  samples = np.clip(np.asarray(out.samples), 0.0, 1.0)
  return samples, int(out.nfe), time.time() - start


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--teacher_steps", type=int, default=1500)
  parser.add_argument("--student_steps", type=int, default=1000)
  parser.add_argument("--num_samples", type=int, default=500)
  parser.add_argument("--out_dir", default=str(ROOT / "benchmarks" / "results" / "fewstep_digits"))
  parser.add_argument("--workdir", default=str(ROOT / "runs" / "benchmark_fewstep_digits"))
  parser.add_argument("--models", default="", help="comma-separated rows of MODELS to measure; empty: all")
  parser.add_argument("--dry_run", action="store_true", help="tiny networks, 2 training steps, 64 samples")
  args = parser.parse_args(argv)
  if args.dry_run:
    args.num_samples = 64  # the figure's 8 x 8 grid
  out_dir = pathlib.Path(args.out_dir)
  out_dir.mkdir(parents=True, exist_ok=True)
  chosen = [name for name in args.models.split(",") if name]
  unknown = sorted(set(chosen) - set(MODELS))
  if unknown:
    raise ValueError(f"--models: {unknown} are not rows; choose from {', '.join(MODELS)}")
  chosen = [name for name in MODELS if name in chosen or MODELS[name][2]] if chosen else list(MODELS)
  kept = []
  if len(chosen) < len(MODELS) and (out_dir / "fewstep_digits.json").exists():
    kept = [row for row in json.loads((out_dir / "fewstep_digits.json").read_text()) if row["model"] not in chosen]
  images, _ = toy_data.load_digits(16)
  held_out = images[toy_data.DIGITS_TRAIN_SIZE:]
  features_fn = digits_metrics.digits_features_fn()
  rows, pictures = [], {}
  for name in chosen:
    config_path, workdirs, teacher = MODELS[name]
    workdir = pathlib.Path(args.workdir) / name
    steps = args.teacher_steps if teacher else args.student_steps
    overrides = {"training.n_iters": steps, "training.snapshot_freq": steps,
                 **{key: pathlib.Path(args.workdir) / value for key, value in workdirs.items()},
                 **(DRY_RUN if args.dry_run else {})}
    seconds = train(config_path, workdir, overrides, in_process=args.dry_run)
    config = trained_model.run_config(str(workdir))
    model, variables, step = trained_model.load_model(str(workdir))
    heun_steps, dpm_solver_steps = (2, 2) if args.dry_run else (18, 10)
    settings = ([("heun", dict(steps=heun_steps)), ("dpm_solver", dict(steps=dpm_solver_steps))] if teacher
                else [("consistency", dict(steps=1)), ("consistency", dict(steps=2))])
    for method, options in settings:
      samples, nfe, sample_seconds = draw(config, model, variables, args.num_samples, method=method, **options)
      fd = float(digits_metrics.digits_frechet_distance(samples, held_out, features_fn))
      rows.append({"model": name, "sampler": method, "nfe": nfe, "digits_fd": fd, "train_steps": step,
                   "train_seconds": seconds, "train_ms_per_step": 1e3 * seconds / step,
                   "sample_seconds": sample_seconds, "num_samples": args.num_samples})
      if nfe == 1 or method == "heun":
        pictures[name] = samples[:64]
      print(f"  {name} {method} {nfe} NFE: FD {fd:.2f}", file=sys.stderr, flush=True)
    (out_dir / "fewstep_digits.json").write_text(json.dumps(kept + rows, indent=1))
  teacher_fd = next(r["digits_fd"] for r in rows if r["model"] == "edm_teacher" and r["sampler"] == "heun")
  for row in kept + rows:
    row["fd_over_teacher"] = row["digits_fd"] / teacher_fd
  order = list(MODELS)
  (out_dir / "fewstep_digits.json").write_text(json.dumps(
      sorted(kept + rows, key=lambda row: order.index(row["model"])), indent=1))
  print(f"{'model':<26}{'sampler':<12}{'NFE':>5}{'FD':>9}{'/ teacher':>11}{'train s':>9}{'ms/step':>9}")
  for row in rows:
    print(f"{row['model']:<26}{row['sampler']:<12}{row['nfe']:>5}{row['digits_fd']:>9.2f}{row['fd_over_teacher']:>11.2f}"
          f"{row['train_seconds']:>9.0f}{row['train_ms_per_step']:>9.0f}")
  picture = out_dir / ("fewstep_digits.png" if len(chosen) == len(MODELS) else
                        f"fewstep_digits_{'_'.join(chosen)}.png")
  plot(pictures, picture)
  print(f"wrote {out_dir / 'fewstep_digits.json'} and {picture}")


def plot(pictures, path):
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, axes = plt.subplots(1, len(pictures), figsize=(3 * len(pictures), 3.3))
  for ax, (name, samples) in zip(np.atleast_1d(axes), pictures.items()):
    ax.imshow(image_grid(samples), cmap="gray", vmin=0, vmax=1)
    ax.set_title(name if name == "edm_teacher" else f"{name}, 1 step", fontsize=9)
    ax.axis("off")
  fig.tight_layout()
  fig.savefig(path, dpi=100)


if __name__ == "__main__":
  main()
