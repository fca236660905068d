"""Sampling by the probability-flow ODE (Song et al. 2021, Sec. 4.3), solved inside jit."""

import jax.numpy as jnp

from score_jax import ode
from score_jax.rng import fold_in, gaussian_noise, per_sample_keys
from score_jax.sampling.common import SampleOutput, initial_state, jitted
from score_jax.sampling.pc import reverse_diffusion_predictor


def run(rng, z, *, score_fn, sde, shape, rtol, atol, eps, denoise, max_steps, noise_fn):
  """Probability-flow ODE (Eq. (13)) from T to eps, then optionally one reverse-diffusion step."""
  keys = per_sample_keys(rng, shape[0])
  x = initial_state(fold_in(keys, 0), sde, shape, z)
  flow = sde.reverse(score_fn, probability_flow=True)
  drift_fn = lambda x, t: flow.sde(x, jnp.full((shape[0],), t))[0]
  solution = ode.odeint(drift_fn, x, sde.T, eps, rtol=rtol, atol=atol, max_steps=max_steps)
  x, nfe = solution.y, solution.nfe
  if denoise:  # the reference's noise removal: the noise-free mean of one reverse-diffusion step at eps
    denoiser = reverse_diffusion_predictor(sde, score_fn, noise_fn=noise_fn)
    _, x = denoiser(fold_in(keys, 1), x, jnp.full((shape[0],), eps))
    nfe = nfe + 1
  # A solve that ran out of steps returns NaN rather than a silently unfinished sample.
  return SampleOutput(samples=jnp.where(solution.success, x, jnp.nan), nfe=nfe)


def ode_sample(rng, score_fn, sde, shape, *, rtol=1e-5, atol=1e-5, eps=1e-3, denoise=False, z=None,
               max_steps=4096, noise_fn=gaussian_noise):
  """Samples by integrating the probability-flow ODE from T to eps with adaptive Dormand-Prince 5(4).

  Args:
    rng: PRNG key (prior draw and the denoising step's unused noise); per-sample keys as `pc_sample`.
    score_fn, sde, shape: as `pc_sample`.
    rtol, atol: solver tolerances (RMS norm over the whole batch, as scipy's RK45 in the reference;
      samples therefore depend on the batch only through the shared step sizes, within tolerance).
    eps: end time. denoise: finish with one reverse-diffusion step's mean at `eps` (costs 1 NFE).
    z: optional latent x_T (else a prior draw). max_steps: most solver steps (NaN samples beyond).
    noise_fn: as `pc_sample`.

  Returns:
    `SampleOutput(samples, nfe)`, `nfe` a 0-d int array (2 + 6 per solver step, + 1 with denoise).
  """
  return jitted(run)(rng, z, score_fn=score_fn, sde=sde, shape=tuple(shape), rtol=rtol, atol=atol, eps=eps,
                     denoise=denoise, max_steps=max_steps, noise_fn=noise_fn)


def check_options(options):
  """Raises `ValueError` for non-positive tolerances or step limits."""
  for key in ("rtol", "atol", "max_steps"):
    if key in options and not options[key] > 0:
      raise ValueError(f"ode: {key}={options[key]!r} must be positive")


