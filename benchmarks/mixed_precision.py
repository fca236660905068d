"""bf16 against float32 training on a real image config: the loss curve and the step time.

  python benchmarks/mixed_precision.py [--config configs/digits.py] [--steps 300] [--tail 50]
                                       [--json benchmarks/results/mixed_precision.json]

Trains the config twice from the same initial state, on the same batches and the same noise, once with
`model.dtype = "float32"` and once with `"bfloat16"`, and prints the mean training loss over the last
`--tail` steps of each, their relative difference (the issue's bar: within 3%), the held-out loss of
the final EMA parameters in float32 for both, and the median step time. On a CPU bf16 is emulated, so
its step time says nothing about an accelerator's (`benchmarks/gpu_train.py` measures that).
"""

import argparse
import importlib.util
import json
import os
import pathlib
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from score_jax.run_setup import RunSetup  # noqa: E402


def load_config(path):
  spec = importlib.util.spec_from_file_location("benchmark_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def train(config, steps):
  """Per-step training losses, per-block wall times and the final state of `steps` training steps."""
  run = RunSetup(config)
  state = run.init_state()
  block = config.training.n_jitted_steps
  losses, block_times = [], []
  for step in range(0, steps, block):
    start = time.perf_counter()
    state, block_losses = run.multi_step(state, run.train_batches(step))
    losses.append(np.asarray(jax.device_get(block_losses)))  # waits for the block
    block_times.append((time.perf_counter() - start) / block)
    print(f"  {config.model.dtype}: step {step + block}/{steps}, loss {float(losses[-1].mean()):.4f}",
          file=sys.stderr, flush=True)
  float32_config = config.copy_and_resolve_references()
  float32_config.model.dtype = "float32"
  held_out = RunSetup(float32_config).eval_loss(state, num_batches=0)  # both judged by the same float32 network
  return np.concatenate(losses), block_times, held_out


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--config", default=str(ROOT / "configs" / "digits.py"))
  parser.add_argument("--steps", type=int, default=300)
  parser.add_argument("--tail", type=int, default=50, help="steps at the end whose mean loss is compared")
  parser.add_argument("--json", default=None)
  args = parser.parse_args()
  results = {"config": os.path.relpath(args.config, ROOT), "steps": args.steps, "tail": args.tail,
             "device": jax.devices()[0].device_kind, "rows": {}}
  for dtype in ("float32", "bfloat16"):
    config = load_config(args.config)
    config.model.dtype = dtype
    losses, block_times, held_out = train(config, args.steps)
    results["rows"][dtype] = {"final_loss": float(losses[-args.tail:].mean()), "first_loss": float(losses[0]),
                              "held_out_ema_loss": held_out,
                              "median_step_s": float(np.median(block_times[1:] or block_times)),
                              "losses": losses.tolist()}
  f32, bf16 = results["rows"]["float32"], results["rows"]["bfloat16"]
  results["relative_difference"] = (bf16["final_loss"] - f32["final_loss"]) / f32["final_loss"]
  print(f"{'dtype':10} {'first loss':>10} {f'last {args.tail} mean':>13} {'held-out (EMA)':>15} {'ms/step':>8}")
  for dtype, row in results["rows"].items():
    print(f"{dtype:10} {row['first_loss']:>10.4f} {row['final_loss']:>13.4f} {row['held_out_ema_loss']:>15.4f} "
          f"{1e3 * row['median_step_s']:>8.0f}")
  print(f"bf16 final loss vs float32: {100 * results['relative_difference']:+.2f}% (bar: within 3%)")
  if args.json:
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w") as f:
      json.dump(results, f, indent=1)
    print(f"wrote {args.json}")


if __name__ == "__main__":
  main()
