"""Single-accelerator training throughput of the CIFAR-10 models, by matmul/conv precision.

  python benchmarks/gpu_train.py [--models ddpmpp,ncsnpp] [--precisions float32,tensorfloat32,bfloat16]
                                 [--batch_size 128] [--json benchmarks/results/gpu_train.json]

For each model (the reference's `vp/cifar10_ddpmpp_continuous` and `ve/cifar10_ncsnpp_continuous`
configs, full size) and each precision of `jax.default_matmul_precision` (the precision XLA uses for
float32 convolutions and matrix products: `float32` = true fp32, `tensorfloat32` = TF32 tensor cores,
`bfloat16` = bf16 inputs with fp32 accumulation; parameters and activations stay float32), it runs
the jitted `n_jitted_steps` training block (`run_setup.RunSetup.multi_step`, as `main.py --mode=train`
does) on a fixed synthetic batch and reports:

* compile time, seconds per optimisation step, images/s;
* achieved TFLOP/s: XLA's count of the floating-point operations of one training step (forward,
  backward, Adam and EMA; `Lowered.cost_analysis()`, counted on CPU with `--count_flops` because the
  GPU backend does not count before compiling) divided by the measured step time, and that as a
  fraction of the chip's dense peak for the precision (`--peak_tflops`, H100 SXM by default);
* peak device memory (`memory_stats()["peak_bytes_in_use"]`).

Each (model, precision) runs in its own process, so memory peaks and compilation caches are not shared.
The reference (JAX 0.2, 4 V100s, batch 128, n_jitted_steps 5) reports 0.20 s/step and 74.8 GB.
"""

import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

MODELS = {"ddpmpp": "configs.vp.cifar10_ddpmpp_continuous", "ncsnpp": "configs.ve.cifar10_ncsnpp_continuous"}
# Dense peak TFLOP/s of an H100 SXM (NVIDIA's datasheet, without sparsity).
H100_PEAK = {"float32": 67.0, "tensorfloat32": 494.7, "bfloat16": 989.4}


FLOPS_FILE = os.path.join(ROOT, "benchmarks", "results", "train_flops.json")


def step_flops(model, batch_size, lower):
  """XLA's flop count of one training step: from the lowered program where the backend gives one (CPU),
  else from `FLOPS_FILE`, which `--count_flops` fills on CPU (the GPU backend returns None)."""
  cost = lower().cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  if cost and "flops" in cost:
    return float(cost["flops"])
  if os.path.exists(FLOPS_FILE):
    with open(FLOPS_FILE) as f:
      return json.load(f).get(f"{model}@{batch_size}", float("nan"))
  return float("nan")


def count_flops(models, batch_size):
  """Fills `FLOPS_FILE` with the lowered training step's flop count per model (no compilation)."""
  import importlib

  import jax
  import numpy as np

  from score_jax import losses, run_setup
  from score_jax.train_steps import get_train_step

  counts = {}
  if os.path.exists(FLOPS_FILE):
    with open(FLOPS_FILE) as f:
      counts = json.load(f)
  for model in models:
    config = importlib.import_module(MODELS[model]).get_config()
    config.training.batch_size = batch_size
    config.data.dataset = "blobs"
    run = run_setup.RunSetup(config)
    state = jax.eval_shape(run.init_state)
    batch = jax.ShapeDtypeStruct((batch_size, config.data.image_size, config.data.image_size,
                                  config.data.num_channels), np.float32)
    train_step = get_train_step(run.sde, run.model, run.optimizer, losses.LossConfig.from_config(config),
                                ema_rate=config.model.ema_rate, rng=jax.random.PRNGKey(0))
    counts[f"{model}@{batch_size}"] = step_flops(model, batch_size, lambda: jax.jit(train_step).lower(state, batch))
    print(f"{model} batch {batch_size}: {counts[f'{model}@{batch_size}'] / 1e12:.3f} TFLOP per training step")
  with open(FLOPS_FILE, "w") as f:
    json.dump(counts, f, indent=1)


def measure(model, precision, batch_size, repeats):
  """One (model, precision) in this process; returns a result row."""
  import importlib

  import jax
  import numpy as np

  from score_jax import losses, parallel, run_setup
  from score_jax.train_steps import get_train_step

  config = importlib.import_module(MODELS[model]).get_config()
  config.training.batch_size = batch_size
  config.training.snapshot_sampling = False
  config.data.dataset = "blobs"  # synthetic images of the same shape: the batch below is fixed anyway
  with jax.default_matmul_precision(precision):
    run = run_setup.RunSetup(config)
    state = run.init_state()
    n = config.training.n_jitted_steps
    shape = (n, batch_size, config.data.image_size, config.data.image_size, config.data.num_channels)
    batches = parallel.shard_batch(run.mesh, np.random.default_rng(0).uniform(-1, 1, shape).astype(np.float32),
                                   batch_axis=1)
    train_step = get_train_step(run.sde, run.model, run.optimizer, losses.LossConfig.from_config(config),
                                ema_rate=config.model.ema_rate, rng=jax.random.PRNGKey(0))
    flops_per_step = step_flops(model, batch_size, lambda: jax.jit(train_step).lower(state, batches[0]))
    start = time.perf_counter()
    state, loss = run.multi_step(state, batches)
    jax.block_until_ready(loss)
    compile_s = time.perf_counter() - start
    state, loss = run.multi_step(state, batches)  # one more warm-up block
    jax.block_until_ready(loss)
    start = time.perf_counter()
    for _ in range(repeats):
      state, loss = run.multi_step(state, batches)
    jax.block_until_ready(loss)
    step_s = (time.perf_counter() - start) / (repeats * n)
  stats = jax.devices()[0].memory_stats() or {}
  params = sum(x.size for x in jax.tree_util.tree_leaves(state.params))
  return {"model": model, "precision": precision, "device": jax.devices()[0].device_kind,
          "parameters": int(params), "batch_size": batch_size, "n_jitted_steps": n, "compile_s": compile_s,
          "step_s": step_s, "images_per_s": batch_size / step_s, "flops_per_step": flops_per_step,
          "achieved_tflops": flops_per_step / step_s / 1e12,
          "peak_memory_gib": stats["peak_bytes_in_use"] / 2**30 if "peak_bytes_in_use" in stats else None,
          "final_loss": float(np.asarray(loss)[-1])}


def write(path, rows):
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  with open(path, "w") as f:
    json.dump({"rows": rows, "peak_tflops": H100_PEAK}, f, indent=1)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--models", default="ddpmpp,ncsnpp")
  parser.add_argument("--precisions", default="float32,tensorfloat32,bfloat16")
  parser.add_argument("--batch_size", type=int, default=128)
  parser.add_argument("--repeats", type=int, default=20, help="timed blocks of n_jitted_steps steps")
  parser.add_argument("--json", default="benchmarks/results/gpu_train.json")
  parser.add_argument("--count_flops", action="store_true", help=f"only count flops (on CPU) into {FLOPS_FILE}")
  parser.add_argument("--one", default=None, help=argparse.SUPPRESS)  # internal: "model:precision"
  args = parser.parse_args()
  if args.count_flops:
    count_flops(args.models.split(","), args.batch_size)
    return
  if args.one:
    model, precision = args.one.split(":")
    print("ROW " + json.dumps(measure(model, precision, args.batch_size, args.repeats)), flush=True)
    return
  for name in args.models.split(","):
    if name not in MODELS:
      raise SystemExit(f"--models: unknown model {name!r}; choose from {sorted(MODELS)}")
  rows = []
  for model in args.models.split(","):
    for precision in args.precisions.split(","):
      proc = subprocess.run([sys.executable, __file__, f"--one={model}:{precision}",
                             f"--batch_size={args.batch_size}", f"--repeats={args.repeats}"],
                            capture_output=True, text=True, cwd=ROOT)
      lines = [l for l in proc.stdout.splitlines() if l.startswith("ROW ")]
      if proc.returncode or not lines:
        print(f"{model} {precision}: failed\n{proc.stderr[-3000:]}")
        rows.append({"model": model, "precision": precision, "error": proc.stderr[-500:]})
        continue
      row = json.loads(lines[-1][4:])
      row["utilisation"] = row["achieved_tflops"] / H100_PEAK[precision] if "H100" in row["device"] else None
      rows.append(row)
      print(f"{model} {precision}: {row['step_s'] * 1e3:.1f} ms/step", flush=True)
      write(args.json, rows)  # after every row: a run cut short keeps what it measured
  print(f"\n{'model':7} {'precision':13} {'params':>7} {'compile s':>9} {'ms/step':>8} {'img/s':>7} "
        f"{'TFLOP/s':>8} {'of peak':>7} {'peak GiB':>8}")
  for r in rows:
    if "error" in r:
      print(f"{r['model']:7} {r['precision']:13} failed")
      continue
    util = f"{100 * r['utilisation']:6.1f}%" if r.get("utilisation") is not None else "      -"
    print(f"{r['model']:7} {r['precision']:13} {r['parameters'] / 1e6:6.1f}M {r['compile_s']:9.1f} "
          f"{r['step_s'] * 1e3:8.1f} {r['images_per_s']:7.0f} {r['achieved_tflops']:8.1f} {util:>7} "
          f"{r['peak_memory_gib'] or float('nan'):8.2f}")
  write(args.json, rows)
  print(f"wrote {args.json}")


if __name__ == "__main__":
  main()
