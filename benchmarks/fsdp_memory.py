"""Per-device memory of one train step under `training.fsdp`, from XLA's compiled memory analysis, and the step time
of a small model on 1 against 2 fake CPU devices.

    python benchmarks/fsdp_memory.py [--models ddpmpp_cifar10,edm2_s_64,edm2_xl_64,dit_xl2] [--fsdp 1,2,4,8]
                                     [--out benchmarks/results/fsdp_memory.json] [--dry_run]

Each measurement runs in a child process with `--xla_force_host_platform_device_count` fake CPU devices. The train
step (loss, gradient, Adam, EMA / power EMA) is lowered on abstract shapes (`jax.eval_shape`: nothing is allocated)
with the shardings that `RunSetup` gives it and compiled, not run; `compiled.memory_analysis()` gives the bytes of
the arguments, outputs and temporaries of one device. EDM2-XL is configs/edm2/imagenet64_s.py at 384 channels.
`--dry_run`: tiny networks on 4 devices, fsdp 1 and 2.
"""

import argparse
import json
import os
import pathlib
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MODELS = ("ddpmpp_cifar10", "edm2_s_64", "edm2_xl_64", "dit_xl2")
BATCH = {"ddpmpp_cifar10": 128, "edm2_s_64": 2048, "edm2_xl_64": 2048, "dit_xl2": 256}  # the configs' batches


def model_config(name, dry_run):
  from configs.edm2 import imagenet64_s
  from configs.latent import imagenet256_dit_xl2
  from configs.vp import cifar10_ddpmpp_continuous
  config = {"ddpmpp_cifar10": cifar10_ddpmpp_continuous, "edm2_s_64": imagenet64_s, "edm2_xl_64": imagenet64_s,
            "dit_xl2": imagenet256_dit_xl2}[name].get_config()
  if name == "edm2_xl_64":
    config.model.nf = 384
  config.training.batch_size = BATCH[name]
  if dry_run:  # tiny widths, 8 px, batch 8
    config.training.batch_size = 8
    config.data.image_size = 64 if name == "dit_xl2" else 8
    if name == "dit_xl2":
      config.model.update({"hidden_size": 32, "depth": 1, "num_heads": 2})
    else:
      config.model.nf, config.model.ch_mult, config.model.attn_resolutions = 16, (1, 2), (4,)
      config.model.num_res_blocks = 1
  return config


def memory(name, fsdp, dry_run):
  """Per-device bytes of the compiled train step of `name` under `fsdp` (compiled, not run)."""
  import jax
  import jax.numpy as jnp

  from score_jax import parallel, run_setup
  from score_jax.train_steps import get_train_step
  config = model_config(name, dry_run)
  config.training.fsdp = fsdp
  run = run_setup.RunSetup(config, companions=())
  step = get_train_step(run.objective, run.optimizer, ema_rate=config.model.ema_rate, rng=jax.random.PRNGKey(0),
                        ema_gammas=run.ema_gammas)
  state = jax.eval_shape(lambda: run.initial_state(jax.random.PRNGKey(0)))
  shape = (config.training.batch_size,) + run.data_shape
  batch = jax.ShapeDtypeStruct(shape, jnp.float32)
  if run.class_conditional:
    batch = (batch, jax.ShapeDtypeStruct(shape[:1], jnp.int32))
  batch_sharding = jax.tree_util.tree_map(lambda _: parallel.data_sharded(run.mesh), batch)
  start = time.time()
  compiled = jax.jit(step, donate_argnums=0, in_shardings=(run.state_shardings, batch_sharding),
                     out_shardings=(run.state_shardings, parallel.replicated(run.mesh))).lower(state, batch).compile()
  analysis = compiled.memory_analysis()
  parameters = sum(x.size for x in jax.tree_util.tree_leaves(state.params))
  return {"model": name, "fsdp": fsdp, "devices": jax.device_count(), "batch": config.training.batch_size,
          "parameters": int(parameters), "argument_bytes": int(analysis.argument_size_in_bytes),
          "output_bytes": int(analysis.output_size_in_bytes), "temp_bytes": int(analysis.temp_size_in_bytes),
          "alias_bytes": int(analysis.alias_size_in_bytes), "compile_seconds": time.time() - start}


def step_time(fsdp, dry_run, steps=20):
  """Seconds per train step of the tiny DDPM++ (batch 32) under `fsdp` on this process's devices."""
  import jax
  import numpy as np

  from score_jax import parallel, run_setup
  from tests.test_fsdp import network_config
  config = network_config("ddpmpp", fsdp)
  config.training.batch_size = 32
  run = run_setup.RunSetup(config, companions=())
  state = run.init_state()
  batches = parallel.shard_batch(run.mesh, np.random.default_rng(0).normal(
      size=(config.training.n_jitted_steps, 32) + run.data_shape).astype(np.float32), batch_axis=1)
  state, _ = run.multi_step(state, batches)  # compile
  jax.block_until_ready(state)
  blocks = 2 if dry_run else steps // config.training.n_jitted_steps
  start = time.perf_counter()
  for _ in range(blocks):
    state, losses = run.multi_step(state, batches)
  jax.block_until_ready(losses)
  return {"model": "ddpmpp_tiny", "fsdp": fsdp, "devices": jax.device_count(), "batch": 32,
          "seconds_per_step": (time.perf_counter() - start) / (blocks * config.training.n_jitted_steps)}


def _child(devices, args):
  """Runs this script's worker on `devices` fake CPU devices; its JSON rows."""
  flags = [f for f in os.environ.get("XLA_FLAGS", "").split() if "device_count" not in f]
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT),
             XLA_FLAGS=" ".join(flags + [f"--xla_force_host_platform_device_count={devices}"]))
  result = subprocess.run([sys.executable, __file__, "--worker", json.dumps(args)], env=env, cwd=ROOT,
                          capture_output=True, text=True)
  if result.returncode:
    raise RuntimeError(result.stderr[-3000:])
  return json.loads(result.stdout.strip().splitlines()[-1])


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--models", default=",".join(MODELS))
  parser.add_argument("--fsdp", default="1,2,4,8")
  parser.add_argument("--out", default=str(ROOT / "benchmarks/results/fsdp_memory.json"))
  parser.add_argument("--dry_run", action="store_true")
  parser.add_argument("--worker", default="")
  args = parser.parse_args(argv)
  if args.worker:
    job = json.loads(args.worker)
    rows = ([memory(m, f, job["dry_run"]) for m in job["models"] for f in job["fsdp"]] if job["kind"] == "memory"
            else [step_time(f, job["dry_run"]) for f in job["fsdp"]])
    print(json.dumps(rows))
    return rows
  fsdp = [int(f) for f in args.fsdp.split(",")]
  models = args.models.split(",")
  if args.dry_run:
    fsdp, models = [1, 2], ["ddpmpp_cifar10", "edm2_xl_64"]
  devices = 4 if args.dry_run else max(fsdp)
  rows = _child(devices, {"kind": "memory", "models": models, "fsdp": fsdp, "dry_run": args.dry_run})
  timing = (_child(1, {"kind": "time", "fsdp": [1], "dry_run": args.dry_run})
            + _child(2, {"kind": "time", "fsdp": [1, 2], "dry_run": args.dry_run}))
  mib = lambda b: f"{b / 2**20:10.1f}"  # noqa: E731
  print(f"{'model':16s} {'params':>13s} {'fsdp':>4s} {'args MiB':>10s} {'out MiB':>10s} {'temp MiB':>10s}")
  for row in rows:
    print(f"{row['model']:16s} {row['parameters']:13,d} {row['fsdp']:4d} {mib(row['argument_bytes'])} "
          f"{mib(row['output_bytes'])} {mib(row['temp_bytes'])}")
  for row in timing:
    print(f"step time, tiny DDPM++ batch 32, {row['devices']} device(s), fsdp {row['fsdp']}: "
          f"{1000 * row['seconds_per_step']:.1f} ms")
  result = {"memory": rows, "step_time": timing, "devices": devices}
  pathlib.Path(args.out).parent.mkdir(parents=True, exist_ok=True)
  pathlib.Path(args.out).write_text(json.dumps(result, indent=1))
  return result


if __name__ == "__main__":
  main()
