"""DiT on the pixel digits with and without REPA: the steps each needs to reach plain DiT's final Fréchet distance in
the digits classifier's features (2 CPU cores).

    python benchmarks/dit_digits.py [--steps 1500] [--eval_every 250] [--num_samples 500] [--repa_weight 0.5]
                                    [--repa_depth 2] [--repa_hidden 256] [--heun_steps 18]
                                    [--out_dir benchmarks/results/dit_digits] [--workdir runs/benchmark_dit_digits]
                                    [--dry_run]

Trains through main.py (a finished run is reused; its training time kept in `benchmark_seconds.json`)
configs/digits_dit.py (configs/edm/digits.py's run and recipe, EDM, with DiT in place of DDPM++: patch 2 on 16 px, 64
tokens of width 64, 4 blocks of 4 heads, 328k parameters against DDPM++ digits' 317k), once plain and once with REPA
aligned to the digits classifier's 4x4x64 features (`training.repa_encoder = "digits"`, offline; the projector's
hidden width `--repa_hidden`, not the paper's 2048, which would outweigh the network 14 to 1). Each keeps a snapshot
every `--eval_every` steps; at each, `--num_samples` digits drawn with Heun's method are measured against the 297
held-out digits (`score_jax.metrics.digits`, not FID). Prints the table, writes `dit_digits.json`: a row per run and
snapshot, and a summary row with the steps each run needs to reach plain DiT's final FD (None: not within
`--steps`). `--dry_run`: tiny DiTs trained 2 steps (in this process), snapshots at steps 1 and 2, 64 samples, Heun in
2 steps: the plumbing on a CPU (tests/test_benchmarks.py).
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

from benchmarks.trained_runs import DRY_RUN_TRAINING, train  # noqa: E402
from score_jax import datasets, sampling, sde as sde_lib, toy_data, trained_model  # noqa: E402
from score_jax.metrics import digits as digits_metrics  # noqa: E402
from score_jax.models import get_data_shape  # noqa: E402

CONFIG = "configs/digits_dit.py"
DRY_RUN = {**DRY_RUN_TRAINING, "training.snapshot_freq": 1, "model.hidden_size": 16, "model.depth": 2,
           "model.num_heads": 2}


def network_parameters(variables):
  """Trainable parameters of the network alone (REPA's projector left out)."""
  params = {k: v for k, v in variables["params"].items() if k != "repa_projector"}
  return int(sum(np.size(a) for a in jax.tree.leaves(params)))


def fd_at(config, model, variables, num_samples, heun_steps, held_out, features_fn):
  config = config.copy_and_resolve_references()
  config.sampling.method, config.sampling.steps = "heun", heun_steps
  sde, eps = sde_lib.get_sde(config)
  sample_fn = sampling.get_sampling_fn(config, sde, model, (num_samples,) + get_data_shape(config),
                                       datasets.get_data_inverse_scaler(config), eps)
  samples = np.clip(np.asarray(sample_fn(jax.random.PRNGKey(0), variables).samples), 0.0, 1.0)
  return float(digits_metrics.digits_frechet_distance(samples, held_out, features_fn))


def steps_to_reach(rows, run, target):
  """The first snapshot step of `run` whose FD is at most `target`; None when none is."""
  return next((r["step"] for r in rows if r["run"] == run and r["digits_fd"] <= target), None)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--steps", type=int, default=1500)
  parser.add_argument("--eval_every", type=int, default=250)
  parser.add_argument("--num_samples", type=int, default=500)
  parser.add_argument("--repa_weight", type=float, default=0.5)   # the paper's lambda
  parser.add_argument("--repa_depth", type=int, default=2)        # of the 4 blocks
  parser.add_argument("--repa_hidden", type=int, default=256)
  parser.add_argument("--heun_steps", type=int, default=18)
  parser.add_argument("--out_dir", default=str(ROOT / "benchmarks" / "results" / "dit_digits"))
  parser.add_argument("--workdir", default=str(ROOT / "runs" / "benchmark_dit_digits"))
  parser.add_argument("--dry_run", action="store_true", help="tiny DiTs, 2 training steps, 64 samples")
  args = parser.parse_args(argv)
  if args.dry_run:
    args.num_samples, args.heun_steps, args.repa_depth, args.repa_hidden = 64, 2, 1, 8
  out_dir = pathlib.Path(args.out_dir)
  out_dir.mkdir(parents=True, exist_ok=True)
  images, _ = toy_data.load_digits(16)
  held_out = images[toy_data.DIGITS_TRAIN_SIZE:]
  features_fn = digits_metrics.digits_features_fn()
  repa = {"training.repa_weight": args.repa_weight, "training.repa_depth": args.repa_depth,
          "training.repa_hidden": args.repa_hidden, "training.repa_encoder": "digits"}
  rows, seconds = [], {}
  for run, extra in (("dit", {}), ("dit_repa", repa)):
    workdir = pathlib.Path(args.workdir) / run
    overrides = {"training.n_iters": args.steps, "training.snapshot_freq": args.eval_every,
                 "training.snapshot_sampling": False,
                 "training.keep_checkpoints": args.steps // args.eval_every + 1,  # every snapshot is measured
                 **extra, **(DRY_RUN if args.dry_run else {})}
    seconds[run] = train(CONFIG, workdir, overrides, in_process=args.dry_run)
    config = trained_model.run_config(str(workdir))
    for step in trained_model.checkpoint_steps(str(workdir)):
      model, variables, _ = trained_model.load_model(str(workdir), step=step)
      start = time.time()
      fd = fd_at(config, model, variables, args.num_samples, args.heun_steps, held_out, features_fn)
      rows.append({"run": run, "step": step, "digits_fd": fd, "parameters": network_parameters(variables),
                   "train_seconds": seconds[run], "sample_seconds": time.time() - start,
                   "num_samples": args.num_samples, "repa_weight": extra.get("training.repa_weight", 0.0)})
      print(f"  {run} step {step}: FD {fd:.2f}", file=sys.stderr, flush=True)
  final = max((r for r in rows if r["run"] == "dit"), key=lambda r: r["step"])["digits_fd"]
  summary = {"run": "summary", "dit_final_fd": final,
             "steps_to_reach": {run: steps_to_reach(rows, run, final) for run in seconds},
             "train_seconds": seconds}
  (out_dir / "dit_digits.json").write_text(json.dumps(rows + [summary], indent=1))
  print(f"{'run':<10}{'step':>7}{'FD':>9}{'params':>9}")
  for row in rows:
    print(f"{row['run']:<10}{row['step']:>7}{row['digits_fd']:>9.2f}{row['parameters']:>9}")
  print(f"steps to reach DiT's final FD {final:.2f}: {summary['steps_to_reach']}")
  print(f"wrote {out_dir / 'dit_digits.json'}")


if __name__ == "__main__":
  main()
