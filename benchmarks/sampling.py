"""Sampler and likelihood timings: PC overhead per score evaluation, in-jit ODE solver vs the reference's
host-driven scipy RK45, optional diffrax, and compile times.

    python benchmarks/sampling.py --json /tmp/sampling_bench.json [--batch 512] [--diffrax]

Models are the toy MLP of `configs/toy/checkerboard.py` (2-D, untrained, VP SDE with N = 1000)
and the same MLP on a 3x8x8 image-shaped state (flattened inside the score function).
"""

import argparse
import json
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from scipy import integrate

sys.path.insert(0, ".")
from configs.toy import checkerboard  # noqa: E402
from score_jax import likelihood, models, ode, sampling  # noqa: E402
from score_jax import sde as sde_lib  # noqa: E402


def timed(fn, *args, repeats=3):
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


def build(dim, nf):
  config = checkerboard.get_config()
  config.data.dim = dim
  config.model.nf = nf
  sde, _ = sde_lib.get_sde(config)
  model = models.get_model(config)
  variables = models.init_model(jax.random.key(0), config)
  flat_score = models.get_score_fn(sde, model, variables, train=False, continuous=True)
  return config, sde, lambda x, t: flat_score(x.reshape(x.shape[0], -1), t).reshape(x.shape)


def scipy_ode(drift_fn, y0, t0, t1, rtol, atol):
  """The reference's approach: solve_ivp(RK45) on the host, one jitted drift call (and round trip) per NFE."""
  shape = y0.shape
  fn = jax.jit(drift_fn)

  def rhs(t, y):
    return np.asarray(fn(jnp.asarray(y.reshape(shape), jnp.float32), jnp.float32(t)), np.float64).reshape(-1)

  rhs(t0, np.asarray(y0, np.float64).reshape(-1))  # compile outside the timing
  start = time.perf_counter()
  solution = integrate.solve_ivp(rhs, (t0, t1), np.asarray(y0, np.float64).reshape(-1), rtol=rtol, atol=atol,
                                 method="RK45")
  return time.perf_counter() - start, solution.nfev, solution.y[:, -1].reshape(shape)


def diffrax_ode(drift_fn, y0, t0, t1, rtol, atol):
  import diffrax

  @jax.jit
  def solve(y0):
    solution = diffrax.diffeqsolve(diffrax.ODETerm(lambda t, y, args: drift_fn(y, t)), diffrax.Dopri5(), t0, t1,
                                   dt0=None, y0=y0, stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol),
                                   max_steps=4096)
    return solution.ys[-1], solution.stats["num_steps"]
  first, best, (y, steps) = timed(solve, y0)
  return first - best, best, 2 + 6 * int(steps), y  # Dopri5 is FSAL: 6 evaluations per step + 2 to start


def own_ode(drift_fn, y0, t0, t1, rtol, atol):
  solve = jax.jit(lambda y0: ode.odeint(drift_fn, y0, t0, t1, rtol=rtol, atol=atol))
  first, best, solution = timed(solve, y0)
  return first - best, best, int(solution.nfe), solution.y


def main():
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument("--json", default="sampling_benchmark.json", help="where to write the results")
  parser.add_argument("--batch", type=int, default=512, help="batch of the 2-D toy")
  parser.add_argument("--image_batch", type=int, default=64, help="batch of the 3x8x8 problem")
  parser.add_argument("--diffrax", action="store_true", help="also time diffrax's Dopri5 + PIDController")
  args = parser.parse_args()
  rows, results = [], {"device": str(jax.devices()[0]), "jax": jax.__version__}
  rtol = atol = 1e-5

  for label, shape, dim in [("toy2d", (args.batch, 2), 2), ("image3x8x8", (args.image_batch, 8, 8, 3), 192)]:
    config, sde, score_fn = build(dim, nf=config_nf(dim))
    x = sde.prior_sampling(jax.random.key(1), shape)
    t = jnp.full((shape[0],), 0.5)
    _, score_time, _ = timed(jax.jit(score_fn), x, t, repeats=20)
    entry = {"shape": shape, "score_eval_s": score_time}

    # (a) PC sampler (the config's reverse diffusion + Langevin, N = 1000): time per score evaluation.
    # The untrained network drives the samples far out (|x| ~ 1e3-1e4), where XLA:CPU's sin / cos of the
    # MLP's input Fourier features cost up to 1.5x more than at the prior's |x| ~ 1: one score evaluation
    # is timed at both ends of the trajectory, and the sampler is charged against their mean.
    pc = lambda rng: sampling.pc_sample(rng, score_fn, sde, shape, snr=config.sampling.snr, eps=1e-3)
    first, best, out = timed(pc, jax.random.key(2), repeats=1)
    _, score_time_final, _ = timed(jax.jit(score_fn), out.samples, t, repeats=20)
    score_mean = (score_time + score_time_final) / 2
    entry["score_eval_at_samples_s"] = score_time_final
    entry["pc"] = {"compile_s": first - best, "run_s": best, "nfe": int(out.nfe),
                   "run_over_nfe_x_score": best / (int(out.nfe) * score_mean)}
    rows.append((label, "pc_sample", int(out.nfe), best, first - best, entry["pc"]["run_over_nfe_x_score"]))

    # (b) probability-flow ODE, T -> eps: in-jit solver vs host-driven scipy RK45 (vs diffrax).
    flow = sde.reverse(score_fn, probability_flow=True)
    drift_fn = lambda y, s: flow.sde(y, jnp.full((shape[0],), s))[0]
    compile_s, run_s, nfe, y_own = own_ode(drift_fn, x, sde.T, 1e-3, rtol, atol)
    entry["ode_own"] = {"compile_s": compile_s, "run_s": run_s, "nfe": nfe}
    rows.append((label, "ode (own, in jit)", nfe, run_s, compile_s, run_s / (nfe * score_time)))
    run_s, nfe, y_scipy = scipy_ode(drift_fn, x, sde.T, 1e-3, rtol, atol)
    entry["ode_scipy"] = {"run_s": run_s, "nfe": nfe, "max_abs_diff_vs_own": float(np.abs(y_scipy - y_own).max())}
    rows.append((label, "ode (scipy RK45, host)", nfe, run_s, 0.0, run_s / (nfe * score_time)))
    if args.diffrax:
      compile_s, run_s, nfe, y_diffrax = diffrax_ode(drift_fn, x, sde.T, 1e-3, rtol, atol)
      entry["ode_diffrax"] = {"compile_s": compile_s, "run_s": run_s, "nfe": nfe,
                              "max_abs_diff_vs_own": float(np.abs(np.asarray(y_diffrax) - y_own).max())}
      rows.append((label, "ode (diffrax, in jit)", nfe, run_s, compile_s, run_s / (nfe * score_time)))

    # Likelihood, eps -> T, Rademacher probe: in jit vs host-driven scipy on the augmented state.
    data = jnp.clip(y_own, -3.0, 3.0)
    probe = jax.random.rademacher(jax.random.key(3), shape, jnp.float32)
    ll = lambda data: likelihood.log_likelihood(jax.random.key(3), score_fn, sde, data, probe=probe)
    first, best, out = timed(ll, data, repeats=1)
    entry["likelihood_own"] = {"compile_s": first - best, "run_s": best, "nfe": int(out.nfe)}
    rows.append((label, "likelihood (own, in jit)", int(out.nfe), best, first - best,
                 best / (int(out.nfe) * score_time)))
    augmented = lambda state, s: likelihood.hutchinson_divergence(lambda y: drift_fn(y, s), state[0], probe)
    flat = lambda state, s: augmented_flat(augmented, state, s, shape)
    run_s, nfe, _ = scipy_ode(flat, jnp.concatenate([data.reshape(-1), jnp.zeros(shape[0])]), 1e-5, sde.T, rtol, atol)
    entry["likelihood_scipy"] = {"run_s": run_s, "nfe": nfe}
    rows.append((label, "likelihood (scipy RK45, host)", nfe, run_s, 0.0, run_s / (nfe * score_time)))
    results[label] = entry

  print(f"{'problem':<11} {'method':<30} {'nfe':>6} {'run s':>8} {'compile s':>10} {'run/(nfe*eval)':>15}")
  for label, method, nfe, run_s, compile_s, ratio in rows:
    print(f"{label:<11} {method:<30} {nfe:>6} {run_s:>8.3f} {compile_s:>10.2f} {ratio:>15.2f}")
  for label in ("toy2d", "image3x8x8"):
    print(f"{label}: one jitted score evaluation = {results[label]['score_eval_s'] * 1e3:.3f} ms at the prior's "
          f"states, {results[label]['score_eval_at_samples_s'] * 1e3:.3f} ms at the PC samples'")
  with open(args.json, "w") as f:
    json.dump(results, f, indent=2)
  print(f"wrote {args.json}")


def config_nf(dim):
  return 128 if dim == 2 else 64


def augmented_flat(augmented, state, s, shape):
  """The likelihood's augmented field on one flat vector [x; delta_logp] (scipy's state)."""
  size = int(np.prod(shape))
  drift, divergence = augmented((state[:size].reshape(shape), None), s)
  return jnp.concatenate([drift.reshape(-1), divergence])


if __name__ == "__main__":
  main()
