"""Training and sampling throughput of the CIFAR-10 models on one accelerator, by compute precision.

  python benchmarks/gpu_train.py [--rows all] [--budget_s 540] [--batch_size 128]
                                 [--json benchmarks/results/gpu_train.json] [--cache_dir ~/.cache/score_jax_xla]
  python benchmarks/gpu_train.py --dry_run     # every row on a tiny config on CPU: a plumbing check

Prepared for a short device loan (a fresh machine, ~80 s per CIFAR-size compile, ~10 minutes): the
rows run in the order of what they are worth (`ROWS`, the bf16/TF32 ratio of DDPM++ first), each in
its own process (separate memory peaks) with a persistent XLA compilation cache (`--cache_dir`, so a
rerun on the same machine skips compiles), the JSON is rewritten after every row, and no row starts
when less than `--row_estimate_s` of the `--budget_s` is left.

Training rows (the reference's `vp/cifar10_ddpmpp_continuous` and `ve/cifar10_ncsnpp_continuous`,
full size, batch 128, the jitted `n_jitted_steps` block as `main.py --mode=train` runs it, on a fixed
synthetic batch):

* `float32`: true fp32 (`jax.default_matmul_precision("float32")`);
* `tf32`: float32 activations on TF32 tensor cores (the default precision of XLA on GPUs);
* `bf16`: `model.dtype = "bfloat16"`: bf16 activations on float32 parameters (score_jax's mixed
  precision; `jax.default_matmul_precision("bfloat16")` alone changed nothing on an H100).

Each reports compile time, ms per optimisation step, images/s, XLA's count of the training step's
floating-point operations (`Compiled.cost_analysis()`; from `results/train_flops.json`, counted on CPU
with `--count_flops`, where the backend gives none), achieved TFLOP/s and that as a fraction of the
chip's dense peak for the precision (H100 / H200: TF32 494.7, bf16 989.4, fp32 67 TFLOP/s), and the
peak device memory.

The `ddpmpp_scm` row trains the same network by continuous-time consistency training
(configs/fewstep/cifar10_scm.py: `training.objective = "scm"`, whose step adds a `jax.jvp` through the
network and a second forward pass): its ms per step against the `ddpmpp` row's is the tangent's cost.

The `dit_xl2` row trains DiT-XL/2 (configs/latent/imagenet256_dit_xl2.py, 675M parameters) on 32x32x4
latents, the shape of ImageNet-256 through the SD-VAE, at batch `--dit_batch` (256, DiT's), on a fixed
synthetic latent batch (the encoding is the `sd_vae` rows' work), unconditional (the class table is 1.2M of the
675M parameters): images/s and MFU as above.

The `encode` / `decode` rows of `sd_vae` time the Stable Diffusion VAE (sd-vae-ft-mse's architecture:
`block_out_channels` 128-256-512-512, two resnets a level, 4 latent channels; random weights, whose values
do not change the time) encoding 256x256 images to 32x32x4 latents and decoding them back, batch
`--vae_batch` (32), in bf16 and float32: images/s.

Sampling rows (DDPM++, batch `--sample_batch` 1024): images/s of the 1000-step PC sampler (Euler-
Maruyama, no corrector) and of 20-NFE DPM-Solver++, in float32 (TF32) and bf16. The PC sampler is
timed over `--pc_steps` of its 1000 steps (the steps are identical programs in one loop) and scaled to
1000; DPM-Solver++ runs whole.
"""

import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

MODELS = {"ddpmpp": "configs.vp.cifar10_ddpmpp_continuous", "ncsnpp": "configs.ve.cifar10_ncsnpp_continuous",
          "ddpmpp_scm": "configs.fewstep.cifar10_scm", "dit_xl2": "configs.latent.imagenet256_dit_xl2"}
LATENT_SHAPE = (32, 32, 4)  # ImageNet-256 through the SD-VAE (8x down, 4 channels)
# Dense peak TFLOP/s (NVIDIA's datasheets, without sparsity); the H200 has the H100 SXM's compute.
PEAK_TFLOPS = {"float32": 67.0, "tf32": 494.7, "bf16": 989.4}
PEAK_DEVICES = ("H100", "H200")
# The rows, most valuable first: (kind, model, precision).
ROWS = [("train", "ddpmpp", "bf16"), ("train", "ddpmpp", "tf32"), ("train", "dit_xl2", "bf16"),
        ("encode", "sd_vae", "bf16"), ("decode", "sd_vae", "bf16"), ("sample_dpm_solver", "ddpmpp", "bf16"),
        ("train", "ddpmpp_scm", "bf16"), ("train", "ncsnpp", "bf16"), ("train", "ncsnpp", "tf32"), ("sample_pc", "ddpmpp", "bf16"),
        ("sample_dpm_solver", "ddpmpp", "tf32"), ("sample_pc", "ddpmpp", "tf32"), ("train", "ddpmpp", "float32"),
        ("train", "ncsnpp", "float32"), ("encode", "sd_vae", "float32"), ("decode", "sd_vae", "float32")]
FLOPS_FILE = os.path.join(ROOT, "benchmarks", "results", "train_flops.json")


def _config(model, precision, batch_size, dry_run):
  import importlib

  config = importlib.import_module(MODELS[model]).get_config()
  config.training.batch_size = batch_size
  config.training.snapshot_sampling = False
  config.data.dataset = "blobs"  # synthetic images of the same shape: the batch is fixed anyway
  config.model.dtype = "bfloat16" if precision == "bf16" else "float32"
  if config.model.name == "dit":  # on latents of ImageNet-256's shape, drawn like the images above
    config.data.autoencoder = ""
    config.data.image_size, config.data.num_channels = LATENT_SHAPE[0], LATENT_SHAPE[2]
    config.data.centered = False
    config.model.num_classes = 0  # the synthetic batch has no labels (the class table: 1.2M of 675M parameters)
    config.training.class_dropout, config.sampling.guidance_scale = 0.0, 0.0
    if dry_run:  # one block of width 32 on 4x4x4
      config.data.image_size = 4
      config.model.depth, config.model.hidden_size, config.model.num_heads = 1, 32, 2
      config.training.n_jitted_steps = 1
    return config
  if dry_run:  # one level of 4 px: the rows' plumbing, compiled in seconds on a CPU
    config.data.image_size = 4
    config.model.nf, config.model.ch_mult, config.model.num_res_blocks = 8, (1,), 1
    config.model.attn_resolutions = (4,)
    config.training.n_jitted_steps = 1
  return config


def _matmul_precision(precision):
  return {"float32": "float32", "tf32": "tensorfloat32", "bf16": None}[precision]


def _flops(lowered, key):
  """XLA's flop count of a lowered program (CPU counts before compiling; GPU backends only after),
  else the count `--count_flops` stored for `key`."""
  for analysis in (lowered.cost_analysis, lambda: lowered.compile().cost_analysis()):
    cost = analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    if cost and cost.get("flops"):
      return float(cost["flops"])
  if os.path.exists(FLOPS_FILE):
    with open(FLOPS_FILE) as f:
      return json.load(f).get(key, float("nan"))
  return float("nan")


def measure_train(model, precision, batch_size, repeats, dry_run):
  import jax
  import numpy as np

  from score_jax import parallel, run_setup
  from score_jax.train_steps import get_train_step

  config = _config(model, precision, batch_size, dry_run)
  with jax.default_matmul_precision(_matmul_precision(precision)):
    run = run_setup.RunSetup(config)
    state = run.init_state()
    n = config.training.n_jitted_steps
    shape = (n, batch_size) + run.data_shape
    batches = parallel.shard_batch(run.mesh, np.random.default_rng(0).uniform(-1, 1, shape).astype(np.float32),
                                   batch_axis=1)
    train_step = get_train_step(run.objective, run.optimizer, ema_rate=config.model.ema_rate,
                                rng=jax.random.PRNGKey(0))
    flops = _flops(jax.jit(train_step).lower(state, batches[0]), f"{model}@{batch_size}")
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
  params = sum(x.size for x in jax.tree_util.tree_leaves(state.params))
  return {"parameters": int(params), "n_jitted_steps": n, "compile_s": compile_s, "ms_per_step": 1e3 * step_s,
          "images_per_s": batch_size / step_s, "flops_per_step": flops, "achieved_tflops": flops / step_s / 1e12,
          "final_loss": float(np.asarray(loss)[-1])}


def measure_sampling(method, precision, batch_size, pc_steps, dry_run):
  import jax

  from score_jax import run_setup

  config = _config("ddpmpp", precision, batch_size, dry_run)
  config.sampling.batch_size = batch_size
  if method == "pc":
    config.sampling.method, config.sampling.predictor, config.sampling.corrector = "pc", "euler_maruyama", "none"
    config.model.num_scales = pc_steps  # timed over pc_steps steps, scaled to 1000 below
    full_steps = 1000
  else:
    config.sampling.method, config.sampling.steps = "dpm_solver", 10 if dry_run else 20
    full_steps = None
  with jax.default_matmul_precision(_matmul_precision(precision)):
    run = run_setup.RunSetup(config)
    variables = run.init_state().variables()
    sample_fn = run.sampler(batch_size)
    start = time.perf_counter()
    out = sample_fn(jax.random.PRNGKey(0), variables)
    jax.block_until_ready(out.samples)
    compile_s = time.perf_counter() - start
    start = time.perf_counter()
    out = sample_fn(jax.random.PRNGKey(1), variables)
    jax.block_until_ready(out.samples)
    seconds = time.perf_counter() - start
  nfe = int(out.nfe)
  if full_steps:
    seconds, nfe = seconds * full_steps / pc_steps, nfe * full_steps // pc_steps
  return {"compile_s": compile_s, "nfe": nfe, "seconds_per_batch": seconds, "images_per_s": batch_size / seconds,
          "timed_steps": pc_steps if full_steps else nfe}


def measure_autoencoder(direction, precision, batch_size, repeats, dry_run):
  """images/s of the SD-VAE's `direction` ("encode" 256 px images, "decode" 32x32x4 latents)."""
  import jax
  import jax.numpy as jnp

  from score_jax.networks import autoencoder_kl

  from benchmarks.latent_encoding import SD_VAE  # sd-vae-ft-mse's config.json (the fields that shape the network)

  config, size = dict(SD_VAE), 256
  if dry_run:  # two levels of 32 channels on 8 px
    config.update(block_out_channels=[32, 32], layers_per_block=1, down_block_types=["DownEncoderBlock2D"] * 2,
                  up_block_types=["UpDecoderBlock2D"] * 2)
    size = 8
  levels = len(config["block_out_channels"])
  module = autoencoder_kl.from_diffusers_config(config, dtype=jnp.bfloat16 if precision == "bf16" else None)
  factor = 2 ** (levels - 1)
  images = jax.random.uniform(jax.random.PRNGKey(0), (batch_size, size, size, 3), jnp.float32, -1, 1)
  latents = jax.random.normal(jax.random.PRNGKey(1), (batch_size, size // factor, size // factor, 4))
  variables = jax.jit(module.init)(jax.random.PRNGKey(2), images[:1])
  if direction == "encode":
    fn, inputs = jax.jit(lambda v, x: module.apply(v, x, method="encode")), images
  else:
    fn, inputs = jax.jit(lambda v, z: module.apply(v, z, method="decode")), latents
  start = time.perf_counter()
  jax.block_until_ready(fn(variables, inputs))
  compile_s = time.perf_counter() - start
  jax.block_until_ready(fn(variables, inputs))
  start = time.perf_counter()
  for _ in range(repeats):
    out = fn(variables, inputs)
  jax.block_until_ready(out)
  seconds = (time.perf_counter() - start) / repeats
  params = sum(x.size for x in jax.tree_util.tree_leaves(variables))
  return {"parameters": int(params), "compile_s": compile_s, "seconds_per_batch": seconds,
          "images_per_s": batch_size / seconds, "image_size": size}


def measure(kind, model, precision, args):
  """One row, in this process."""
  import jax

  if kind == "train":
    row = measure_train(model, precision, args.dit_batch if model == "dit_xl2" else args.batch_size, args.repeats,
                        args.dry_run)
  elif kind in ("encode", "decode"):
    row = measure_autoencoder(kind, precision, args.vae_batch, args.repeats, args.dry_run)
  else:
    row = measure_sampling(kind.split("_", 1)[1], precision, args.sample_batch, args.pc_steps, args.dry_run)
  device = jax.devices()[0]
  stats = device.memory_stats() or {}
  row.update(kind=kind, model=model, precision=precision, device=device.device_kind,
             batch_size={"train": args.dit_batch if model == "dit_xl2" else args.batch_size, "encode": args.vae_batch,
                         "decode": args.vae_batch}.get(kind, args.sample_batch),
             peak_memory_gib=stats["peak_bytes_in_use"] / 2**30 if "peak_bytes_in_use" in stats else None)
  if "achieved_tflops" in row and any(name in device.device_kind for name in PEAK_DEVICES):
    row["utilisation"] = row["achieved_tflops"] / PEAK_TFLOPS[precision]
  return row


def count_flops(args):
  """Fills `FLOPS_FILE` with the lowered training step's flop count per model (CPU; no compilation)."""
  import jax
  import numpy as np

  from score_jax import run_setup
  from score_jax.train_steps import get_train_step

  counts = json.load(open(FLOPS_FILE)) if os.path.exists(FLOPS_FILE) else {}
  for model in MODELS:
    batch_size = args.dit_batch if model == "dit_xl2" else args.batch_size
    config = _config(model, "float32", batch_size, False)
    run = run_setup.RunSetup(config)
    state = jax.eval_shape(run.init_state)
    batch = jax.ShapeDtypeStruct((batch_size,) + run.data_shape, np.float32)
    train_step = get_train_step(run.objective, run.optimizer, ema_rate=config.model.ema_rate,
                                rng=jax.random.PRNGKey(0))
    cost = jax.jit(train_step).lower(state, batch).cost_analysis()
    counts[f"{model}@{batch_size}"] = float((cost[0] if isinstance(cost, (list, tuple)) else cost)["flops"])
    print(f"{model} batch {batch_size}: {counts[f'{model}@{batch_size}'] / 1e12:.3f} TFLOP per training step")
  with open(FLOPS_FILE, "w") as f:
    json.dump(counts, f, indent=1)


def write(path, rows, args):
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  ratio = _ratio(rows)
  with open(path + ".tmp", "w") as f:
    json.dump({"rows": rows, "peak_tflops": PEAK_TFLOPS, "bf16_over_tf32_images_per_s": ratio,
               "batch_size": args.batch_size, "dry_run": args.dry_run}, f, indent=1)
  os.replace(path + ".tmp", path)


def _ratio(rows):
  """DDPM++ training images/s in bf16 over TF32 (the issue's target: >= 1.8), when both rows ran."""
  speed = {r["precision"]: r["images_per_s"] for r in rows
           if r.get("kind") == "train" and r.get("model") == "ddpmpp" and "images_per_s" in r}
  return speed["bf16"] / speed["tf32"] if "bf16" in speed and "tf32" in speed else None


def print_table(rows):
  print(f"\n{'row':26} {'compile s':>9} {'ms/step':>8} {'img/s':>8} {'TFLOP/s':>8} {'of peak':>7} {'peak GiB':>8}")
  for r in rows:
    name = f"{r['kind']} {r['model']} {r['precision']}"
    if "error" in r:
      print(f"{name:26} failed")
      continue
    util = f"{100 * r['utilisation']:6.1f}%" if r.get("utilisation") is not None else "      -"
    ms = f"{r['ms_per_step']:8.1f}" if "ms_per_step" in r else "       -"
    tflops = f"{r['achieved_tflops']:8.1f}" if "achieved_tflops" in r else "       -"
    memory = r.get("peak_memory_gib")
    print(f"{name:26} {r['compile_s']:9.1f} {ms} {r['images_per_s']:8.0f} {tflops} {util:>7} "
          f"{memory if memory is not None else float('nan'):8.2f}")
  ratio = _ratio(rows)
  if ratio is not None:
    print(f"DDPM++ bf16 / TF32 images/s: {ratio:.2f} (target >= 1.8)")


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--rows", default="all", help="'all' or comma-separated kind:model:precision")
  parser.add_argument("--batch_size", type=int, default=128)
  parser.add_argument("--sample_batch", type=int, default=1024)
  parser.add_argument("--dit_batch", type=int, default=256, help="the dit_xl2 row's training batch")
  parser.add_argument("--vae_batch", type=int, default=32, help="the sd_vae rows' batch of 256 px images")
  parser.add_argument("--pc_steps", type=int, default=50, help="PC steps timed (scaled to 1000)")
  parser.add_argument("--repeats", type=int, default=10, help="timed blocks of n_jitted_steps steps")
  parser.add_argument("--budget_s", type=float, default=540.0, help="no row starts after this many seconds")
  parser.add_argument("--row_estimate_s", type=float, default=150.0, help="time one row is assumed to take")
  parser.add_argument("--json", default=os.path.join(ROOT, "benchmarks/results/gpu_train.json"))
  parser.add_argument("--cache_dir", default=os.path.expanduser("~/.cache/score_jax_xla"))
  parser.add_argument("--dry_run", action="store_true", help="tiny configs, CPU-sized, every row in this process")
  parser.add_argument("--count_flops", action="store_true", help=f"only count flops (on CPU) into {FLOPS_FILE}")
  parser.add_argument("--one", default=None, help=argparse.SUPPRESS)  # internal: "kind:model:precision"
  args = parser.parse_args(argv)
  if args.dry_run:
    args.batch_size, args.sample_batch, args.pc_steps, args.repeats = 4, 4, 3, 1
    args.dit_batch, args.vae_batch = 4, 2
  if args.count_flops:
    count_flops(args)
    return
  if args.one:
    _enable_cache(args.cache_dir)
    print("ROW " + json.dumps(measure(*args.one.split(":"), args)), flush=True)
    return
  rows_wanted = ROWS if args.rows == "all" else [tuple(r.split(":")) for r in args.rows.split(",")]
  for kind, model, precision in rows_wanted:
    if (kind, model, precision) not in ROWS:
      raise SystemExit(f"--rows: unknown row {kind}:{model}:{precision}; choose from "
                       + ", ".join(":".join(r) for r in ROWS))
  start, rows = time.time(), []
  for kind, model, precision in rows_wanted:
    left = args.budget_s - (time.time() - start)
    if left < args.row_estimate_s and not args.dry_run:
      print(f"{kind} {model} {precision}: skipped, {left:.0f} s of the budget left")
      rows.append({"kind": kind, "model": model, "precision": precision, "skipped": "budget"})
      continue
    if args.dry_run:  # in this process: a CPU plumbing check in the tests' time
      row = measure(kind, model, precision, args)
    else:
      row = _run_row(kind, model, precision, args, timeout=max(60.0, left))
    rows.append(row)
    print(f"{kind} {model} {precision}: " + ("failed" if "error" in row else f"{row['images_per_s']:.0f} images/s"),
          flush=True)
    write(args.json, rows, args)  # after every row: a loan cut short keeps what it measured
  print_table([r for r in rows if "skipped" not in r])
  write(args.json, rows, args)
  print(f"wrote {args.json}")


def _enable_cache(cache_dir):
  import jax

  os.makedirs(cache_dir, exist_ok=True)
  jax.config.update("jax_compilation_cache_dir", cache_dir)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)


def _run_row(kind, model, precision, args, timeout):
  command = [sys.executable, os.path.abspath(__file__), f"--one={kind}:{model}:{precision}",
             f"--batch_size={args.batch_size}", f"--sample_batch={args.sample_batch}",
             f"--dit_batch={args.dit_batch}", f"--vae_batch={args.vae_batch}",
             f"--pc_steps={args.pc_steps}", f"--repeats={args.repeats}", f"--cache_dir={args.cache_dir}"]
  try:
    proc = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=timeout)
  except subprocess.TimeoutExpired:
    return {"kind": kind, "model": model, "precision": precision, "error": f"timed out after {timeout:.0f} s"}
  lines = [line for line in proc.stdout.splitlines() if line.startswith("ROW ")]
  if proc.returncode or not lines:
    print(proc.stderr[-3000:])
    return {"kind": kind, "model": model, "precision": precision, "error": proc.stderr[-500:]}
  return json.loads(lines[-1][4:])


if __name__ == "__main__":
  main()
