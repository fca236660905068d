"""Evaluation throughput: FID Inception features (images/s) and the toy config's samplers (samples/s).

    python benchmarks/evaluation.py --json /tmp/evaluation_bench.json [--batches 8 32] [--toy_batch 512]

The Inception has random weights (same cost as the real ones) and reads CIFAR-sized 32x32 uint8 images,
resized to 299x299 inside the jitted function. The samplers run the untrained MLP of
`configs/toy/checkerboard.py` (VP SDE, N = 1000): PC (reverse diffusion + Langevin) and the
probability-flow ODE (in-jit Dormand-Prince, rtol = atol = 1e-5).
"""

import argparse
import json
import sys
import time

import jax
import numpy as np

sys.path.insert(0, ".")
from configs.toy import checkerboard  # noqa: E402
from score_jax import models, sampling
from score_jax.metrics import inception  # noqa: E402
from score_jax import sde as sde_lib  # noqa: E402


def timed(fn, *args, repeats=2):
  """(first call seconds, i.e. compile + run; best of `repeats` later calls; last output)."""
  start = time.perf_counter()
  out = jax.block_until_ready(fn(*args))
  first = time.perf_counter() - start
  best = float("inf")
  for _ in range(repeats):
    start = time.perf_counter()
    out = jax.block_until_ready(fn(*args))
    best = min(best, time.perf_counter() - start)
  return first, best, out


def random_inception_variables(seed=0):
  """Random weights with the FID Inception's shapes (positive BatchNorm variances)."""
  rng = np.random.default_rng(seed)
  variables = jax.tree.map(lambda leaf: rng.standard_normal(leaf.shape).astype(np.float32) * 0.05,
                           inception.variable_shapes())
  variables["batch_stats"] = jax.tree.map(lambda v: np.abs(v) + 1.0, variables["batch_stats"])
  return variables


def bench_inception(batches, image_size):
  variables, rows = random_inception_variables(), []
  for batch in batches:
    features_fn = inception.get_inception_fn(variables=variables, batch_size=batch)
    images = np.random.default_rng(1).integers(0, 256, (batch, image_size, image_size, 3), dtype=np.uint8)
    first, best, _ = timed(features_fn, images)
    rows.append({"what": f"inception features, batch {batch}", "batch": batch, "run_s": best,
                 "compile_s": first - best, "per_s": batch / best})
  return rows


def bench_samplers(batch):
  config = checkerboard.get_config()
  sde, eps = sde_lib.get_sde(config)
  model = models.get_model(config)
  variables = models.init_model(jax.random.key(0), config)
  score_fn = models.get_score_fn(sde, model, variables, train=False, continuous=True)
  shape = (batch, config.data.dim)
  rows = []
  for name, run in [
      ("pc sampler (reverse diffusion + langevin)",
       lambda rng: sampling.pc_sample(rng, score_fn, sde, shape, snr=config.sampling.snr, eps=eps)),
      ("probability-flow ODE (dopri5, 1e-5)",
       lambda rng: sampling.ode_sample(rng, score_fn, sde, shape, rtol=1e-5, atol=1e-5, eps=eps))]:
    first, best, out = timed(jax.jit(run), jax.random.key(2), repeats=1)
    rows.append({"what": f"{name}, toy 2-D, batch {batch}", "batch": batch, "run_s": best,
                 "compile_s": first - best, "per_s": batch / best, "nfe": int(out.nfe)})
  return rows


def main():
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument("--json", default="evaluation_benchmark.json", help="where to write the results")
  parser.add_argument("--batches", type=int, nargs="+", default=[8, 32], help="Inception batch sizes")
  parser.add_argument("--image_size", type=int, default=32, help="input images are image_size^2 x 3 uint8")
  parser.add_argument("--toy_batch", type=int, default=512, help="samples per sampler call")
  args = parser.parse_args()
  rows = bench_inception(args.batches, args.image_size) + bench_samplers(args.toy_batch)
  print(f"{'what':<62} {'run s':>8} {'compile s':>10} {'items/s':>10} {'nfe':>6}")
  for row in rows:
    print(f"{row['what']:<62} {row['run_s']:>8.3f} {row['compile_s']:>10.2f} {row['per_s']:>10.1f} "
          f"{row.get('nfe', ''):>6}")
  results = {"device": str(jax.devices()[0]), "jax": jax.__version__, "cpu_count": __import__("os").cpu_count(),
             "rows": rows}
  with open(args.json, "w") as f:
    json.dump(results, f, indent=2)
  print(f"wrote {args.json}")


if __name__ == "__main__":
  main()
