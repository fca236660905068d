"""Training throughput: bare jitted steps versus the whole training loop.

  python benchmarks/train_step.py [--configs toy,image] [--json benchmarks/results/train_step.json]

For each config it reports steps/s of the bare jitted `n_jitted_steps` scan on a
fixed batch, its compile time, the peak host memory, and the ratio
(training-loop time per step) / (bare step time), where the loop time per step
is the difference of two full `train_and_evaluate` runs of different lengths
(start-up and compilation cancel out) and so includes data, logging,
evaluation and checkpoints at the config's cadences.
"""

import argparse
import json
import os
import resource
import sys
import tempfile
import time

import jax

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from configs.toy import checkerboard  # noqa: E402
from score_jax import run_setup
from score_jax.drivers import train  # noqa: E402


def toy_config():
  config = checkerboard.get_config()
  config.training.snapshot_sampling = False
  return config


def image_config():
  """A small U-Net (DDPM++ blocks) on 16x16x3 noise-shaped data: the image code path at CPU size."""
  from configs.vp import cifar10_ddpmpp_continuous

  config = cifar10_ddpmpp_continuous.get_config()
  config.data.dataset = "blobs"  # synthetic images: no download
  config.model.nf = 16
  config.model.ch_mult = (1, 2)
  config.model.num_res_blocks = 1
  config.model.attn_resolutions = (8,)
  config.data.image_size = 16
  config.training.batch_size = 8
  config.training.n_jitted_steps = 5
  config.training.log_freq = 50
  config.training.eval_freq = 100
  config.training.snapshot_freq = 1000
  config.training.snapshot_freq_for_preemption = 100
  config.training.snapshot_sampling = False
  config.sampling.batch_size = 8
  config.eval.batch_size = 8
  return config


def bare_step_time(config, repeats):
  run = run_setup.RunSetup(config)
  state = run.init_state()
  batches = run.train_batches(0)
  start = time.perf_counter()
  state, losses = run.multi_step(state, batches)
  jax.block_until_ready(losses)
  compile_s = time.perf_counter() - start
  start = time.perf_counter()
  for _ in range(repeats):
    state, losses = run.multi_step(state, batches)
  jax.block_until_ready(losses)
  per_step = (time.perf_counter() - start) / (repeats * config.training.n_jitted_steps)
  return compile_s, per_step


def loop_time(config, n_iters):
  config = config.copy_and_resolve_references()
  config.training.n_iters = n_iters
  with tempfile.TemporaryDirectory() as workdir:
    start = time.perf_counter()
    train.train_and_evaluate(config, workdir)
    return time.perf_counter() - start


def measure(name, config, short, long):
  compile_s, bare = bare_step_time(config, repeats=max(4, short // config.training.n_jitted_steps))
  loop_short, loop_long = loop_time(config, short), loop_time(config, long)
  loop_per_step = (loop_long - loop_short) / (long - short)
  return {"config": name, "batch_size": config.training.batch_size,
          "n_jitted_steps": config.training.n_jitted_steps, "compile_s": compile_s,
          "bare_steps_per_s": 1.0 / bare, "loop_steps_per_s": 1.0 / loop_per_step,
          "loop_over_bare": loop_per_step / bare,
          "peak_host_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--configs", default="toy,image")
  parser.add_argument("--json", default="benchmarks/results/train_step.json")
  args = parser.parse_args()
  builders = {"toy": (toy_config, 1000, 3000), "image": (image_config, 100, 300)}
  rows = []
  for name in args.configs.split(","):
    builder, short, long = builders[name]
    try:
      rows.append(measure(name, builder(), short, long))
    except (ImportError, ValueError) as error:
      print(f"skipping {name}: {error}")
  print(f"{'config':8} {'batch':>5} {'compile s':>9} {'bare steps/s':>12} {'loop steps/s':>12} "
        f"{'loop/bare':>9} {'peak RSS MiB':>12}")
  for r in rows:
    print(f"{r['config']:8} {r['batch_size']:5d} {r['compile_s']:9.2f} {r['bare_steps_per_s']:12.1f} "
          f"{r['loop_steps_per_s']:12.1f} {r['loop_over_bare']:9.3f} {r['peak_host_rss_mib']:12.0f}")
  os.makedirs(os.path.dirname(args.json) or ".", exist_ok=True)
  with open(args.json, "w") as f:
    json.dump({"device": str(jax.devices()[0]), "rows": rows}, f, indent=1)
  print(f"wrote {args.json}")


if __name__ == "__main__":
  main()
