"""EDM2 on the embedded digits: its network against DDPM++ at equal parameters and training time, and
autoguidance against classifier-free guidance, by the Fréchet distance in the digits classifier's features.

    python benchmarks/edm2_digits.py [--steps 1500] [--num_samples 500] [--weights 0.5,1,2,3]
                                     [--out_dir benchmarks/results/edm2_digits] [--workdir runs/benchmark_edm2_digits]
                                     [--ddpmpp_workdir runs/benchmark_fewstep_digits/edm_teacher] [--dry_run]

Trains through main.py (finished runs are reused; training times kept in each run's `benchmark_seconds.json`):
DDPM++ with EDM's objective (configs/edm/digits.py, 317k parameters; the few-step benchmark's teacher run is
reused when present), EDM2 (configs/edm2/digits.py, 324k parameters, snapshots every 250 steps) and its guide
(configs/edm2/digits_guide.py: 45k parameters, a quarter of the steps), a guide of EDM2's own size trained a
quarter of the steps, and the same EDM2 pair
class-conditional (`model.num_classes = 10`, `training.class_dropout = 0.1`). Samples `--num_samples` digits of
each with Heun (35 evaluations, 70 when guided; classes in turn for the conditional model) and measures the FD
to the 297 held-out digits (`score_jax.metrics.digits`, not FID): DDPM++ and EDM2 at equal steps and EDM2 at the
checkpoint nearest DDPM++'s training time; EDM2 with autoguidance at each weight; the conditional EDM2 with
autoguidance and with classifier-free guidance at each weight. Prints the table, writes `edm2_digits.json` and
`edm2_digits.png`. `--dry_run`: every run and guidance on tiny networks trained 2 steps (in this process), 64
samples, Heun at 3 evaluations and the first weight: the plumbing on a CPU (tests/test_benchmarks.py).
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

from benchmarks.plots import save_image_panels  # noqa: E402
from benchmarks.trained_runs import DRY_RUN_TRAINING, train  # noqa: E402
from score_jax import datasets, sampling, sde as sde_lib, toy_data, trained_model  # noqa: E402
from score_jax.metrics import digits as digits_metrics  # noqa: E402
from score_jax.models import get_data_shape  # noqa: E402

CONDITIONAL = {"model.num_classes": 10, "training.class_dropout": 0.1}
DRY_RUN = {**DRY_RUN_TRAINING, "model.nf": 8, "model.ch_mult": (1,), "model.num_res_blocks": 1,
           "model.attn_resolutions": ()}


def fd_of(config, workdir, args, held_out, features_fn, step=None, w=0.0, guide=""):
  config = config.copy_and_resolve_references()
  config.sampling.method, config.sampling.steps = "heun", 2 if args.dry_run else 18
  config.sampling.guidance_scale, config.sampling.guidance_workdir = float(w), str(guide)
  model, variables, step = trained_model.load_model(str(workdir), step=step)
  sde, eps = sde_lib.get_sde(config)
  sample_fn = sampling.get_sampling_fn(config, sde, model, (args.num_samples,) + get_data_shape(config),
                                       datasets.get_data_inverse_scaler(config), eps,
                                       guide=trained_model.guiding_model(config))
  labels = jnp.arange(args.num_samples) % 10 if config.model.num_classes else None
  out = sample_fn(jax.random.PRNGKey(0), variables, labels)
  samples = np.clip(np.asarray(out.samples), 0.0, 1.0)
  return float(digits_metrics.digits_frechet_distance(samples, held_out, features_fn)), int(out.nfe), step, samples


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--steps", type=int, default=1500)
  parser.add_argument("--num_samples", type=int, default=500)
  parser.add_argument("--weights", default="0.5,1,2,3")
  parser.add_argument("--out_dir", default=str(ROOT / "benchmarks" / "results" / "edm2_digits"))
  parser.add_argument("--workdir", default=str(ROOT / "runs" / "benchmark_edm2_digits"))
  parser.add_argument("--ddpmpp_workdir", default=str(ROOT / "runs" / "benchmark_fewstep_digits" / "edm_teacher"))
  parser.add_argument("--dry_run", action="store_true", help="tiny networks, 2 training steps, 64 samples, one weight")
  args = parser.parse_args(argv)
  if args.dry_run:
    args.steps, args.num_samples, args.weights = 2, 64, args.weights.split(",")[0]
  weights = [float(w) for w in args.weights.split(",")]
  out_dir, runs = pathlib.Path(args.out_dir), pathlib.Path(args.workdir)
  out_dir.mkdir(parents=True, exist_ok=True)
  steps, guide_steps = args.steps, args.steps // 4
  plan = {"ddpmpp": ("configs/edm/digits.py", pathlib.Path(args.ddpmpp_workdir), {}),
          "edm2": ("configs/edm2/digits.py", runs / "edm2", {"training.snapshot_freq": 250,
                                                               "training.keep_checkpoints": 0}),
          "edm2_guide": ("configs/edm2/digits_guide.py", runs / "edm2_guide", {"training.n_iters": guide_steps}),
          "edm2_guide_same": ("configs/edm2/digits.py", runs / "edm2_guide_same", {"training.n_iters": guide_steps}),
          "edm2_conditional": ("configs/edm2/digits.py", runs / "edm2_conditional", CONDITIONAL),
          "edm2_conditional_guide": ("configs/edm2/digits_guide.py", runs / "edm2_conditional_guide",
                                     {**CONDITIONAL, "training.n_iters": guide_steps})}
  seconds = {}
  for name, (config_path, workdir, overrides) in plan.items():
    seconds[name] = train(config_path, workdir, {"training.n_iters": steps, "training.snapshot_freq": steps,
                                                 **overrides, **(DRY_RUN if args.dry_run else {})},
                          in_process=args.dry_run)
  images, _ = toy_data.load_digits(16)
  held_out, features_fn = images[toy_data.DIGITS_TRAIN_SIZE:], digits_metrics.digits_features_fn()
  rows, pictures = [], {}

  def add(name, guidance, w, **options):
    workdir = plan[name][1]
    config = trained_model.run_config(str(workdir))
    fd, nfe, step, samples = fd_of(config, workdir, args, held_out, features_fn, w=w, **options)
    rows.append({"model": name, "guidance": guidance, "w": w, "step": step, "nfe": nfe, "digits_fd": fd,
                 "train_seconds": seconds[name], "parameters": int(sum(x.size for x in jax.tree.leaves(
                     trained_model.load_model(str(workdir), step=step)[1]["params"])))})
    pictures[(name, guidance, w)] = samples[:64]
    print(f"  {name} {guidance} w={w:g} step {step}: FD {fd:.2f}", file=sys.stderr, flush=True)
    (out_dir / "edm2_digits.json").write_text(json.dumps(rows, indent=1))

  add("ddpmpp", "none", 0.0)
  add("edm2", "none", 0.0)
  per_step = seconds["edm2"] / steps
  equal_time = min(steps, max(250, int(seconds["ddpmpp"] / per_step) // 250 * 250))
  kept = trained_model.checkpoint_steps(str(plan["edm2"][1]))
  if equal_time != steps and equal_time in kept:
    add("edm2", "none", 0.0, step=equal_time)
  elif equal_time != steps:
    print(f"  edm2 at DDPM++'s training time: step {equal_time} is not kept (steps {kept})", file=sys.stderr)
  for w in weights:
    add("edm2", "autoguidance", w, guide=plan["edm2_guide"][1])
  small_weights = () if args.dry_run else (0.1, 0.2, 0.3)
  for w in (*small_weights, *weights):  # a guide of the main model's own size, a quarter of its steps
    add("edm2", "autoguidance_same_size_guide", w, guide=plan["edm2_guide_same"][1])
  add("edm2_conditional", "none", 0.0)
  for w in weights:
    add("edm2_conditional", "autoguidance", w, guide=plan["edm2_conditional_guide"][1])
    add("edm2_conditional", "classifier_free", w)
  print(f"{'model':<20}{'guidance':<17}{'w':>5}{'step':>6}{'NFE':>5}{'FD':>8}{'params':>9}{'train s':>9}")
  for row in rows:
    print(f"{row['model']:<20}{row['guidance']:<17}{row['w']:>5g}{row['step']:>6}{row['nfe']:>5}"
          f"{row['digits_fd']:>8.2f}{row['parameters']:>9}{row['train_seconds']:>9.0f}")
  plot(pictures, rows, out_dir / "edm2_digits.png")
  print(f"wrote {out_dir / 'edm2_digits.json'} and {out_dir / 'edm2_digits.png'}")


def plot(pictures, rows, path):
  best = {}
  for row in rows:  # each model and guidance at its best weight
    key = (row["model"], row["guidance"])
    if key not in best or row["digits_fd"] < best[key]["digits_fd"]:
      best[key] = row
  save_image_panels(path, [(f"{name}\n{guidance} w={row['w']:g}: FD {row['digits_fd']:.1f}",
                            pictures[(name, guidance, row["w"])]) for (name, guidance), row in best.items()])


if __name__ == "__main__":
  main()
