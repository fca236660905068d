"""DDIM (Song, Meng & Ermon 2021) with the marginals of any SDE."""

import jax
import jax.numpy as jnp

from score_jax.rng import fold_in, gaussian_noise
from score_jax.sampling.common import SampleOutput, denoise_fn, full, jitted, start
from score_jax.sampling.schedules import check_schedule_and_steps, get_timesteps
from score_jax.utils import batch_mul


def run(rng, z, *, score_fn, sde, shape, steps, eta, schedule, eps, denoise, noise_fn):
  """DDIM (Song, Meng & Ermon 2021, Eq. (12)) with the marginals of any SDE."""
  x, keys = start(rng, sde, shape, z)
  times = get_timesteps(sde, schedule, steps, eps)

  def step(i, x):
    t, t_next = full(x, times[i]), full(x, times[i + 1])
    (mean_scale, std), (mean_scale_next, std_next) = sde.marginal_coeffs(t), sde.marginal_coeffs(t_next)
    x0 = denoise_fn(score_fn, sde, x, t)
    noise_pred = batch_mul(1.0 / std, x - batch_mul(mean_scale, x0))
    # sigma_eta of Eq. (16), eta times the std of q(x_next | x_t, x0): eta std_next sqrt(1 - sigma_next^2 / sigma^2).
    ratio = (std_next * mean_scale) / (std * mean_scale_next)
    c = eta * std_next * jnp.sqrt(jnp.maximum(1.0 - ratio**2, 0.0))
    x_next = batch_mul(mean_scale_next, x0) + batch_mul(jnp.sqrt(jnp.maximum(std_next**2 - c**2, 0.0)), noise_pred)
    return x_next + batch_mul(c, noise_fn(fold_in(keys, i), x)) if eta > 0 else x_next

  x = jax.lax.fori_loop(0, steps, step, x)
  if denoise:
    x = denoise_fn(score_fn, sde, x, full(x, eps))
  return SampleOutput(samples=x, nfe=steps + int(denoise))


def ddim_sample(rng, score_fn, sde, shape, *, steps=50, eta=0.0, schedule="time_uniform", eps=1e-3,
                denoise=False, z=None, noise_fn=gaussian_noise):
  """DDIM sampling (Song, Meng & Ermon 2021): deterministic for eta = 0, DDPM-like for eta = 1.

  Args:
    rng, score_fn, sde, shape, z, noise_fn: as `sampling.pc_sample`.
    steps: score evaluations on the grid from `sde.T` to `eps`; schedule: a name in `SCHEDULES`.
    eta: the stochasticity of Eq. (16), >= 0.
    eps: the last time; denoise: then return Tweedie's x0 at `eps` (one more evaluation).

  Returns:
    `SampleOutput(samples, nfe = steps + denoise)`.
  """
  options = dict(steps=steps, eta=eta, schedule=schedule, eps=eps, denoise=denoise, noise_fn=noise_fn)
  check_options(options)
  return jitted(run)(rng, z, score_fn=score_fn, sde=sde, shape=tuple(shape), **options)


def check_options(options):
  """Raises `ValueError` for a bad schedule, step count or eta."""
  check_schedule_and_steps("ddim", options)
  if options.get("eta", 0.0) < 0:
    raise ValueError("ddim: eta must be >= 0")
