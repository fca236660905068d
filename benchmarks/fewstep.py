"""Few-step generation on the checkerboard: the fraction of samples on the board against the step count.

    python benchmarks/fewstep.py [--steps 1,2,4,8,16] [--out_dir benchmarks/results/fewstep] [--train_steps 6000]
                                 [--models edm,ect_tuned,...] [--dry_run]

Trains (through main.py; a finished run is reused) the toy quickstart (configs/toy/checkerboard.py: VP SDE,
denoising score matching), configs/fewstep/checkerboard_rf.py (the same network and recipe on the linear
path x(t) = (1 - t) x(0) + t z, regressing the velocity) and its reflow (configs/fewstep/checkerboard_reflow.py,
1500 steps from the flow model's weights on its ODE's pairs), configs/fewstep/checkerboard_ect.py with iCT's
schedule from random weights, configs/fewstep/checkerboard_edm.py (EDM's objective) and ECT tuned from that EDM
model (configs/fewstep/checkerboard_ect.py, `training.init_workdir`), configs/fewstep/checkerboard_cd.py
(distilled from the EDM model and started from its weights, `training.teacher_workdir`),
configs/fewstep/checkerboard_scm.py (continuous-time
consistency training, in float32 and in bfloat16) and the same distilled (sCD) from
configs/fewstep/checkerboard_trigflow.py, then draws 4096 samples of each (the EDM and TrigFlow teachers with
DPM-Solver++ at 5 / 10 / 20 and Heun at 35 evaluations): the diffusion and flow models
with DDIM at each step count (deterministic; on the linear path DDIM is Euler on the predicted velocity), on
equal time steps and on the log-SNR grid, and with DPM-Solver++ (3M); the consistency models with multistep
consistency sampling at 1, 2 and 4 steps; for reference the VP model with PC at 1000 steps. Prints the
table, writes `fewstep.json` (with each model's training wall time, `train_seconds`, from the run's
`benchmark_seconds.json`: the first complete training, through main.py) and `fewstep.png` (the samples at 1,
2, 4 and 8 steps). `--models`: train and measure only these rows (and the runs they start from), replacing their
rows in an existing `fewstep.json` and keeping the others; the picture then goes to `fewstep_<models>.png`.
`--dry_run`: every model and sampler of the table on tiny networks trained 2 steps (in this
process), 64 samples, the first step count of each sampler: the plumbing on a CPU (tests/test_benchmarks.py).
"""

import argparse
import json
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from score_jax import datasets, sampling, sde as sde_lib, toy_data, trained_model  # noqa: E402
from benchmarks.plots import scatter_panel  # noqa: E402
from benchmarks.trained_runs import DRY_RUN_TRAINING, train  # noqa: E402

# name -> (config, the workdirs of other rows by key, other config values); trained in this order.
MODELS = {"vp_dsm": ("configs/toy/checkerboard.py", {}, {}),
          "rectified_flow": ("configs/fewstep/checkerboard_rf.py", {}, {}),
          "reflow": ("configs/fewstep/checkerboard_reflow.py",
                     {"training.teacher_workdir": "rectified_flow", "training.init_workdir": "rectified_flow"},
                     {"training.n_iters": 1500}),
          "consistency_training": ("configs/fewstep/checkerboard_ect.py", {},
                                   {"training.consistency_schedule": "ict", "training.init_workdir": ""}),
          "edm": ("configs/fewstep/checkerboard_edm.py", {}, {}),
          "ect_tuned": ("configs/fewstep/checkerboard_ect.py", {"training.init_workdir": "edm"}, {}),
          "consistency_distillation": ("configs/fewstep/checkerboard_cd.py", {"training.teacher_workdir": "edm"}, {}),
          "scm": ("configs/fewstep/checkerboard_scm.py", {}, {}),
          "scm_bf16": ("configs/fewstep/checkerboard_scm.py", {}, {"model.dtype": "bfloat16"}),
          "trigflow": ("configs/fewstep/checkerboard_trigflow.py", {}, {}),
          "scd": ("configs/fewstep/checkerboard_scm.py", {"training.teacher_workdir": "trigflow"}, {})}
CONSISTENCY_MODELS = ("consistency_training", "ect_tuned", "consistency_distillation", "scm", "scm_bf16", "scd")
NUM_SAMPLES = 4096
DRY_RUN = {**DRY_RUN_TRAINING, "model.nf": 8, "model.num_res_blocks": 1, "model.embedding_dim": 8,
           "model.num_scales": 20}


def on_board(config, model, variables, method, num_samples=NUM_SAMPLES, **options):
  config = config.copy_and_resolve_references()
  config.sampling.method = method
  for key, value in options.items():
    config.sampling[key] = value
  sde, eps = sde_lib.get_sde(config)
  sample_fn = sampling.get_sampling_fn(config, sde, model, (num_samples, 2), datasets.get_data_inverse_scaler(config),
                                       eps)
  out = sample_fn(jax.random.PRNGKey(0), variables)
  samples = np.asarray(out.samples)
  return float(toy_data.on_checkerboard(samples)), int(out.nfe), samples


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--steps", default="1,2,4,8,16")
  parser.add_argument("--train_steps", type=int, default=6000)
  parser.add_argument("--out_dir", default=str(ROOT / "benchmarks" / "results" / "fewstep"))
  parser.add_argument("--workdir", default=str(ROOT / "runs" / "benchmark_fewstep"))
  parser.add_argument("--models", default="", help="comma-separated rows of MODELS to measure; empty: all")
  parser.add_argument("--dry_run", action="store_true", help="tiny networks, 2 training steps, 64 samples")
  args = parser.parse_args(argv)
  steps = [int(s) for s in args.steps.split(",")]
  num_samples = 64 if args.dry_run else NUM_SAMPLES
  out_dir = pathlib.Path(args.out_dir)
  out_dir.mkdir(parents=True, exist_ok=True)
  chosen = [name for name in args.models.split(",") if name]
  unknown = sorted(set(chosen) - set(MODELS))
  if unknown:
    raise ValueError(f"--models: {unknown} are not rows; choose from {', '.join(MODELS)}")
  chosen = [name for name in MODELS if name in chosen] or list(MODELS)
  kept = []
  if len(chosen) < len(MODELS) and (out_dir / "fewstep.json").exists():
    kept = [row for row in json.loads((out_dir / "fewstep.json").read_text()) if row["model"] not in chosen]
  rows, pictures = [], {}
  for name in needed(chosen):
    config_path, workdirs, values = MODELS[name]
    workdir = pathlib.Path(args.workdir) / name
    others = {key: pathlib.Path(args.workdir) / value for key, value in workdirs.items()}
    seconds = train(config_path, workdir, {"training.n_iters": args.train_steps, **values, **others,
                                           **(DRY_RUN if args.dry_run else {})}, in_process=args.dry_run)
    if name not in chosen:  # a run that a chosen row starts from or learns from: trained, not measured
      continue
    config = trained_model.run_config(str(workdir))
    model, variables, step = trained_model.load_model(str(workdir))
    if name in CONSISTENCY_MODELS:
      settings = [("consistency", None, [n for n in steps if n <= 4])]
    elif name in ("edm", "trigflow"):
      settings = [("dpm_solver", "logsnr", [4, 9, 19]), ("heun", None, [18])]
    elif name == "reflow":
      settings = [("ddim", "time_uniform", steps)]
    else:
      settings = [("ddim", "time_uniform", steps), ("ddim", "logsnr", steps), ("dpm_solver", "logsnr", steps)]
    for method, schedule, counts in settings:
      for n in counts[:1] if args.dry_run else counts:
        options = dict(steps=n) if schedule is None else dict(steps=n, schedule=schedule)
        fraction, nfe, samples = on_board(config, model, variables, method, num_samples, **options)
        rows.append({"model": name, "sampler": method, "schedule": schedule or "-", "steps": n, "nfe": nfe,
                     "on_board": fraction, "train_steps": step, "train_seconds": seconds})
        if method in ("ddim", "consistency") and schedule in ("time_uniform", None) and n in (1, 2, 4, 8):
          pictures[(name, n)] = samples
        print(f"  {name} {method} {schedule or '-'} {n}: {fraction:.4f}", file=sys.stderr, flush=True)
    if name == "vp_dsm":
      fraction, nfe, _ = on_board(config, model, variables, "pc", num_samples)
      rows.append({"model": name, "sampler": "pc", "schedule": "-", "steps": 1000, "nfe": nfe, "on_board": fraction,
                   "train_steps": step, "train_seconds": seconds})
    (out_dir / "fewstep.json").write_text(json.dumps(in_table_order(kept + rows), indent=1))
  print(f"{'model':<22}{'sampler':<12}{'schedule':<14}{'steps':>6}{'NFE':>6}{'on board':>10}")
  for row in rows:
    print(f"{row['model']:<22}{row['sampler']:<12}{row['schedule']:<14}{row['steps']:>6}{row['nfe']:>6}"
          f"{row['on_board']:>10.4f}")
  picture = out_dir / ("fewstep.png" if len(chosen) == len(MODELS) else f"fewstep_{'_'.join(chosen)}.png")
  plot(pictures, picture)
  print(f"wrote {out_dir / 'fewstep.json'} and {picture}")


def needed(chosen):
  """The rows of `chosen` and, before them, the runs they name in their workdirs (a teacher, a start), in
  MODELS order."""
  names = set(chosen)
  for name in reversed(list(MODELS)):
    if name in names:
      names.update(MODELS[name][1].values())
  return [name for name in MODELS if name in names]


def in_table_order(rows):
  """`rows` sorted by their model's place in MODELS (each model's rows in the order they came)."""
  order = list(MODELS)
  return sorted(rows, key=lambda row: order.index(row["model"]) if row["model"] in order else len(order))


def plot(pictures, path):
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  names = [name for name in MODELS if any(key[0] == name for key in pictures)]
  counts = sorted({n for _, n in pictures})
  fig, axes = plt.subplots(len(names), len(counts), figsize=(2.6 * len(counts), 2.6 * len(names)), squeeze=False)
  for i, name in enumerate(names):
    for j, n in enumerate(counts):
      ax = axes[i][j]
      if (name, n) not in pictures:
        ax.axis("off")
        continue
      scatter_panel(ax, pictures[(name, n)], f"{name}, {n} step{'s' if n > 1 else ''}", 4.5)
  fig.tight_layout()
  fig.savefig(path, dpi=100)


if __name__ == "__main__":
  main()
