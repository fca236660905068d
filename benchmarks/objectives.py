"""Training objectives compared at equal steps: the checkerboard and the digits, through main.py.

    python benchmarks/objectives.py [--tasks checkerboard,digits] [--out_dir benchmarks/results/objectives]
                                    [--toy_steps 6000] [--digits_steps 1500] [--dry_run]

checkerboard (configs/toy/checkerboard.py, `toy_steps` steps each): held-out NLL through the
probability-flow ODE (nats/dim), the ELBO where the objective has one, the sliced Wasserstein
distance of 2048 PC samples to the held-out set, and the fraction of samples on the board.

digits (`digits_steps` steps each, CPU-sized DDPM++): FD in the digits classifier's features
(`score_jax.metrics.digits`, not FID) of 500 samples for reference DSM (configs/digits.py), EDM
(configs/edm/digits.py) and VDM (configs/vdm/digits.py), all sampled with Heun's method at 35 NFE
(equal NFE, equal steps), and the ELBO in bits/dim of the 297 held-out digits for VDM and VP DSM
(the ODE's bits/dim is off here: `eval.enable_bpd=True` on a machine with time for it).

Each row trains in its own workdir under `out_dir/runs/` (resumed if there) and evaluates its last
snapshot; `objectives.json` is rewritten after every row, then `objectives.png` is drawn.
`--dry_run` runs every row for a few steps with tiny evaluation (a plumbing check, no figures).
"""

import argparse
import json
import math
import pathlib
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]

TOY = "configs/toy/checkerboard.py"
TOY_ROWS = [
    ("dsm (reference, VP)", TOY, []),
    ("dsm, eps-prediction", TOY, ["model.parameterization=eps"]),
    ("dsm, v-prediction", TOY, ["model.parameterization=v"]),
    ("dsm, likelihood weighting + IS", TOY, ["training.likelihood_weighting=True",
                                             "training.importance_sampling=True"]),
    ("edm (VE 0.002..80)", TOY, ["training.objective=edm", "model.parameterization=edm", "training.sde=vesde",
                                 "model.sigma_min=0.002", "model.sigma_max=80.0", "model.sigma_data=1.2"]),
    ("vdm (learned schedule)", TOY, ["training.objective=vdm", "training.sde=learned_vpsde",
                                     "model.parameterization=eps"]),
    ("ssm (VP)", TOY, ["training.objective=ssm"]),
]
HEUN_35 = ["sampling.method=heun", "sampling.steps=18", "sampling.rho=7.0"]
# The ODE's bits/dim of the digits costs ~15 min per 96 digits on 2 shared CPU cores: the digits rows
# report the ELBO (cheap) and leave the ODE (`eval.enable_bpd`) to a run with time or an accelerator.
NO_ODE = ["eval.enable_bpd=False"]
DIGITS_ROWS = [
    ("digits dsm (VP), Heun 35 NFE", "configs/digits.py", HEUN_35 + NO_ODE + ["eval.enable_elbo=True"]),
    ("digits edm, Heun 35 NFE", "configs/edm/digits.py", NO_ODE),
    ("digits vdm, Heun 35 NFE", "configs/vdm/digits.py", HEUN_35 + NO_ODE),
]
METRICS = ("nll_nats_per_dim", "elbo_nats_per_dim", "bpd", "elbo_bpd", "sliced_wasserstein", "on_checkerboard",
           "digits_fd", "nfe_per_batch", "eval_loss")


def run_dir(out_dir, name):
  """Rows differing only in evaluation share a training run (the sampler is an eval setting)."""
  stem = name.split(",")[0] if name.startswith("digits") else name
  return out_dir / "runs" / "".join(c if c.isalnum() else "_" for c in stem)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--tasks", default="checkerboard,digits")
  parser.add_argument("--out_dir", default=str(ROOT / "benchmarks/results/objectives"))
  parser.add_argument("--toy_steps", type=int, default=6000)
  parser.add_argument("--digits_steps", type=int, default=1500)
  parser.add_argument("--dry_run", action="store_true")
  args = parser.parse_args(argv)
  out_dir = pathlib.Path(args.out_dir)
  out_dir.mkdir(parents=True, exist_ok=True)
  tasks = args.tasks.split(",")
  rows = (TOY_ROWS if "checkerboard" in tasks else []) + (DIGITS_ROWS if "digits" in tasks else [])
  path = out_dir / "objectives.json"
  results = json.loads(path.read_text()) if path.exists() else []  # rows of earlier runs, replaced by name
  for name, config, overrides in rows:
    steps = args.digits_steps if name.startswith("digits") else args.toy_steps
    if args.dry_run:
      steps = 10
    snapshot = steps // 2
    common = [f"training.n_iters={steps}", f"training.snapshot_freq={snapshot}",
              f"training.snapshot_freq_for_preemption={snapshot}", f"training.eval_freq={snapshot}",
              f"training.log_freq={snapshot}", "eval.begin_ckpt=2", "eval.end_ckpt=2"]
    evaluation = [f"eval.num_samples={500 if name.startswith('digits') else 2048}"]
    if args.dry_run:
      common += ["training.batch_size=8", "training.n_jitted_steps=5", "model.schedule_features=8"]
      evaluation = ["eval.num_samples=8", "eval.batch_size=8", "eval.num_eval_batches=1", "eval.elbo_num_times=1",
                    "eval.enable_bpd=False", "sampling.batch_size=8", "training.snapshot_sampling=False"]
    workdir = run_dir(out_dir, name)
    flags = [f"--config={ROOT / config}", f"--workdir={workdir}"] + [f"--config.{o}" for o in common + overrides]
    start = time.time()
    subprocess.run([sys.executable, str(ROOT / "main.py"), *flags, "--mode=train"], check=True)
    trained = time.time() - start
    eval_folder = "eval_" + "".join(c if c.isalnum() else "_" for c in name)
    subprocess.run([sys.executable, str(ROOT / "main.py"), *flags, *[f"--config.{o}" for o in evaluation],
                    f"--eval_folder={eval_folder}", "--mode=eval"], check=True)
    report = json.loads((workdir / eval_folder / "report_2.json").read_text())
    row = {"name": name, "config": config, "overrides": overrides, "steps": steps,
           "train_eval_seconds": round(time.time() - start, 1), "train_seconds": round(trained, 1),
           **{k: report[k] for k in METRICS if k in report}}
    results = [r for r in results if r["name"] != name] + [row]
    print(" | ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()
                     if k not in ("overrides", "config")), flush=True)
    path.write_text(json.dumps(results, indent=1))
  if not args.dry_run:
    plot(results, out_dir / "objectives.png")


def plot(results, path):
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  panels = [("nll_nats_per_dim", "checkerboard: held-out NLL (ODE), nats/dim", "elbo_nats_per_dim"),
            ("sliced_wasserstein", "checkerboard: sliced Wasserstein", None),
            ("digits_fd", "digits: FD (classifier features)", None),
            ("bpd", "digits: bits/dim (ODE) and ELBO", "elbo_bpd")]
  panels = [p for p in panels if any(p[0] in r for r in results)]
  fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4.2), squeeze=False)
  for ax, (key, title, second) in zip(axes[0], panels):
    rows = [r for r in results if key in r]
    y = range(len(rows))
    ax.barh([i + 0.2 for i in y] if second else list(y), [r[key] for r in rows], height=0.4 if second else 0.7,
            label=key)
    if second:
      ax.barh([i - 0.2 for i in y], [r.get(second, 0.0) for r in rows], height=0.4, label=second)
      ax.legend(fontsize=8)
    if key == "nll_nats_per_dim":  # uniform on 8 unit squares: no model's expected NLL or bound goes below
      ax.axvline(0.5 * math.log(8.0), color="k", linestyle=":", label="data entropy")
      ax.legend(fontsize=8)
    ax.set_yticks(list(y))
    ax.set_yticklabels([r["name"] for r in rows], fontsize=8)
    ax.set_title(title, fontsize=10)
    ax.invert_yaxis()
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  print(f"wrote {path}")


if __name__ == "__main__":
  main()
