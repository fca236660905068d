"""DDIM (Song, Meng & Ermon 2021) with the marginals of any SDE."""

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp

from score_jax.rng import fold_in, gaussian_noise
from score_jax.sampling.common import SampleOutput, Sampler, denoise_fn, full, not_in_config, sample_function, start
from score_jax.sampling.schedules import check_schedule, check_steps, get_timesteps
from score_jax.utils import batch_mul


@dataclasses.dataclass(frozen=True)
class DDIMSampler(Sampler):
  """DDIM sampling (Song, Meng & Ermon 2021): deterministic for eta = 0, DDPM-like for eta = 1.

  `nfe = steps + denoise`.

  Options:
    steps: score evaluations on the grid from `sde.T` to `eps`; schedule: a name in `SCHEDULES`.
    eta: the stochasticity of Eq. (16), >= 0.
    eps: the last time; denoise: then return Tweedie's x0 at `eps` (one more evaluation).
    noise_fn: as `pc_sample`.
  """

  steps: int = 50
  eta: float = 0.0
  schedule: str = "time_uniform"
  eps: float = not_in_config(1e-3)
  denoise: bool = False
  noise_fn: Callable = not_in_config(gaussian_noise)

  def check(self):
    """Raises `ValueError` for a bad schedule, step count or eta."""
    check_schedule(self.schedule)
    check_steps("ddim", self.steps)
    if self.eta < 0:
      raise ValueError("ddim: eta must be >= 0")

  def run(self, rng, z, score_fn, sde, shape):
    """DDIM (Song, Meng & Ermon 2021, Eq. (12)) with the marginals of any SDE."""
    x, keys = start(rng, sde, shape, z)
    times = get_timesteps(sde, self.schedule, self.steps, self.eps)

    def step(i, x):
      t, t_next = full(x, times[i]), full(x, times[i + 1])
      (mean_scale, std), (mean_scale_next, std_next) = sde.marginal_coeffs(t), sde.marginal_coeffs(t_next)
      x0 = denoise_fn(score_fn, sde, x, t)
      noise_pred = batch_mul(1.0 / std, x - batch_mul(mean_scale, x0))
      # sigma_eta of Eq. (16), eta times the std of q(x_next | x_t, x0): eta std_next sqrt(1 - sigma_next^2 / sigma^2).
      ratio = (std_next * mean_scale) / (std * mean_scale_next)
      c = self.eta * std_next * jnp.sqrt(jnp.maximum(1.0 - ratio**2, 0.0))
      x_next = batch_mul(mean_scale_next, x0) + batch_mul(jnp.sqrt(jnp.maximum(std_next**2 - c**2, 0.0)), noise_pred)
      return x_next + batch_mul(c, self.noise_fn(fold_in(keys, i), x)) if self.eta > 0 else x_next

    x = jax.lax.fori_loop(0, self.steps, step, x)
    if self.denoise:
      x = denoise_fn(score_fn, sde, x, full(x, self.eps))
    return SampleOutput(samples=x, nfe=self.steps + int(self.denoise))


ddim_sample = sample_function(DDIMSampler, "ddim_sample")
