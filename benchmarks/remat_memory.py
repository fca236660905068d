"""Memory of one training step with and without `model.remat` (gradient checkpointing of the residual blocks).

    python benchmarks/remat_memory.py [--configs ve/church_ncsnpp_continuous,vp/cifar10_ddpmpp_continuous]
                                      [--batch 4] [--nf 0] [--out benchmarks/results/remat_memory.json]

For each config the train step (loss, gradient, Adam, EMA) is compiled, not run, for the backend at hand,
and XLA's own accounting of its buffers is read (`compiled.memory_analysis()`): the temporary memory
(activations kept for the backward pass, workspace) and the arguments (parameters, optimizer state,
batch). `--nf` shrinks the base width (0 keeps the config's) so that large configs compile in minutes
on a CPU; activation memory scales with the width, so the ratio is the figure to read. Compiled for
CPU, XLA's buffer assignment differs from a GPU's; the script runs unchanged on an accelerator.
"""

import argparse
import importlib
import json
import pathlib
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402


def step_memory(config, batch):
  from score_jax import run_setup
  from score_jax.models import get_data_shape
  from score_jax.train_steps import get_train_step
  run = run_setup.RunSetup(config)
  step = get_train_step(run.objective, run.optimizer, ema_rate=config.model.ema_rate, rng=jax.random.PRNGKey(0))
  state = jax.eval_shape(lambda: run.initial_state(jax.random.PRNGKey(0)))
  data = jax.ShapeDtypeStruct((batch,) + get_data_shape(config), jnp.float32)
  start = time.time()
  compiled = jax.jit(step).lower(state, data).compile()
  analysis = compiled.memory_analysis()
  return {"temp_bytes": int(analysis.temp_size_in_bytes), "argument_bytes": int(analysis.argument_size_in_bytes),
          "compile_seconds": time.time() - start}


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--configs", default="ve/church_ncsnpp_continuous,vp/cifar10_ddpmpp_continuous")
  parser.add_argument("--batch", type=int, default=4)
  parser.add_argument("--nf", type=int, default=0)
  parser.add_argument("--out", default=str(ROOT / "benchmarks/results/remat_memory.json"))
  args = parser.parse_args(argv)
  rows = []
  print(f"{'config':40s} {'px':>5s} {'nf':>4s} {'temp, remat off':>16s} {'temp, remat on':>15s} {'ratio':>6s}")
  for name in args.configs.split(","):
    config = importlib.import_module("configs." + name.replace("/", ".")).get_config()
    if args.nf:
      config.model.nf = args.nf
    row = {"config": name, "image_size": config.data.image_size, "nf": config.model.nf, "batch": args.batch,
           "backend": jax.default_backend()}
    for remat in (False, True):
      config.model.remat = remat
      row["remat" if remat else "plain"] = step_memory(config, args.batch)
    row["temp_ratio"] = row["remat"]["temp_bytes"] / row["plain"]["temp_bytes"]
    rows.append(row)
    pathlib.Path(args.out).write_text(json.dumps(rows, indent=1))
    mib = lambda b: f"{b / 2**20:.0f} MiB"  # noqa: E731
    print(f"{name:40s} {row['image_size']:5d} {row['nf']:4d} {mib(row['plain']['temp_bytes']):>16s} "
          f"{mib(row['remat']['temp_bytes']):>15s} {row['temp_ratio']:6.2f}", flush=True)
  return rows


if __name__ == "__main__":
  main()
