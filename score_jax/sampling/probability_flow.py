"""Sampling by the probability-flow ODE (Song et al. 2021, Sec. 4.3), solved inside jit."""

import dataclasses
from typing import Callable

import jax.numpy as jnp

from score_jax import ode
from score_jax.rng import fold_in, gaussian_noise, per_sample_keys
from score_jax.sampling.common import SampleOutput, Sampler, initial_state, not_in_config, sample_function
from score_jax.sampling.pc import reverse_diffusion_predictor


@dataclasses.dataclass(frozen=True)
class ODESampler(Sampler):
  """Samples by integrating the probability-flow ODE from T to eps with adaptive Dormand-Prince 5(4).

  The per-sample keys (prior draw and the denoising step's unused noise) are those of `pc_sample`;
  `nfe` is a 0-d int array (2 + 6 per solver step, + 1 with denoise).

  Options:
    rtol, atol: solver tolerances (RMS norm over the whole batch, as scipy's RK45 in the reference;
      samples therefore depend on the batch only through the shared step sizes, within tolerance).
    eps: end time. denoise: finish with one reverse-diffusion step's mean at `eps` (costs 1 NFE).
    max_steps: most solver steps (NaN samples beyond).
    noise_fn: as `pc_sample`.
  """

  rtol: float = 1e-5
  atol: float = 1e-5
  eps: float = not_in_config(1e-3)
  denoise: bool = False
  max_steps: int = 4096
  noise_fn: Callable = not_in_config(gaussian_noise)

  def check(self):
    """Raises `ValueError` for non-positive tolerances or step limits."""
    for key in ("rtol", "atol", "max_steps"):
      if not getattr(self, key) > 0:
        raise ValueError(f"ode: {key}={getattr(self, key)!r} must be positive")

  def run(self, rng, z, score_fn, sde, shape):
    """Probability-flow ODE (Eq. (13)) from T to eps, then optionally one reverse-diffusion step."""
    keys = per_sample_keys(rng, shape[0])
    x = initial_state(fold_in(keys, 0), sde, shape, z)
    flow = sde.reverse(score_fn, probability_flow=True)
    drift_fn = lambda x, t: flow.sde(x, jnp.full((shape[0],), t))[0]
    solution = ode.odeint(drift_fn, x, sde.T, self.eps, rtol=self.rtol, atol=self.atol, max_steps=self.max_steps)
    x, nfe = solution.y, solution.nfe
    if self.denoise:  # the reference's noise removal: the noise-free mean of one reverse-diffusion step at eps
      denoiser = reverse_diffusion_predictor(sde, score_fn, noise_fn=self.noise_fn)
      _, x = denoiser(fold_in(keys, 1), x, jnp.full((shape[0],), self.eps))
      nfe = nfe + 1
    # A solve that ran out of steps returns NaN rather than a silently unfinished sample.
    return SampleOutput(samples=jnp.where(solution.success, x, jnp.nan), nfe=nfe)


ode_sample = sample_function(ODESampler, "ode_sample")
