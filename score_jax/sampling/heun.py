"""Karras et al. 2022: Heun's method (Algorithm 1) and its stochastic form (Algorithm 2), for any SDE."""

import dataclasses
import math
from typing import Callable

import jax
import jax.numpy as jnp

from score_jax.rng import fold_in, gaussian_noise
from score_jax.sampling.common import Sampler, SampleOutput, denoise_fn, full, not_in_config, sample_function, start
from score_jax.sampling.schedules import check_steps, karras_sigmas
from score_jax.utils import batch_mul


def _per_example(sigma, x):
  """A noise level (scalar or `(B,)`) shaped to broadcast against `x`."""
  return jnp.reshape(sigma, jnp.shape(sigma) + (1,) * (x.ndim - jnp.ndim(sigma)))


def karras_ode_step(denoiser, x_hat, sigma, sigma_next, second_order=True):
  """One step of Karras et al. 2022's probability-flow ODE dx_hat/dsigma = (x_hat - D(x_hat; sigma)) / sigma
  (Eq. (3) in x_hat = x / m) from noise level `sigma` to `sigma_next` (scalars or `(B,)`): Euler's step (DDIM's),
  with Heun's second-order correction (Algorithm 1, lines 5-8). `denoiser(x_hat, sigma) -> D`. The Heun
  sampler, consistency distillation's teacher and reflow's pairs all step with it."""
  d = (x_hat - denoiser(x_hat, sigma)) / _per_example(sigma, x_hat)
  x_next = x_hat + _per_example(sigma_next - sigma, x_hat) * d  # Euler step
  if not second_order:
    return x_next
  d_prime = (x_next - denoiser(x_next, sigma_next)) / _per_example(sigma_next, x_hat)
  return x_hat + _per_example(sigma_next - sigma, x_hat) * (0.5 * d + 0.5 * d_prime)


@dataclasses.dataclass(frozen=True)
class HeunSampler(Sampler):
  """Karras et al. 2022: Heun's method (Algorithm 1), stochastic with S_churn > 0 (Algorithm 2).

  Any SDE runs as Karras's ODE in x_hat = x / m(t) with sigma(t) = std / m; the denoiser is the
  model's own (or Tweedie's x0 from the score) at t(sigma). It ends at sigma = 0, where x = x_hat;
  `nfe = 2 steps - 1`.

  Options:
    steps: N >= 2 noise levels from sigma(T) to sigma(eps) spaced by Eq. (5) with `rho`, then 0.
    S_churn, S_tmin, S_tmax, S_noise: Algorithm 2's churn (0: deterministic), its sigma range, noise scale.
    noise_fn: as `pc_sample`.
  """

  steps: int = 18
  rho: float = 7.0
  eps: float = not_in_config(1e-3)
  S_churn: float = 0.0  # noqa: N815 (the paper's names)
  S_tmin: float = 0.0  # noqa: N815
  S_tmax: float = float("inf")  # noqa: N815
  S_noise: float = 1.0  # noqa: N815
  noise_fn: Callable = not_in_config(gaussian_noise)

  def check(self):
    """Raises `ValueError` for fewer than 2 steps or a negative churn."""
    check_steps("heun", self.steps, least=2)
    if self.S_churn < 0:
      raise ValueError("heun: S_churn must be >= 0")

  def run(self, rng, z, score_fn, sde, shape):
    """Algorithms 1 and 2 of Karras et al. 2022 on x_hat = x / m, noise level sigma = std / m."""
    x, keys = start(rng, sde, shape, z)
    steps, rho = self.steps, self.rho
    sigma_max, sigma_min = sde.noise_level(jnp.float32(sde.T)), sde.noise_level(jnp.float32(self.eps))
    sigmas = karras_sigmas(jnp.arange(steps - 1, -1, -1), steps - 1, sigma_min, sigma_max, rho)  # Eq. (5) down
    sigmas = jnp.concatenate([sigmas, jnp.zeros((1,))])  # then sigma_N = 0
    gamma = jnp.where((sigmas >= self.S_tmin) & (sigmas <= self.S_tmax), min(self.S_churn / steps, math.sqrt(2) - 1),
                      0.0)

    def denoiser(x_hat, sigma):  # D(x_hat; sigma) from the score at t(sigma)
      t = sde.noise_level_to_t(full(x_hat, sigma))
      return denoise_fn(score_fn, sde, batch_mul(sde.marginal_coeffs(t)[0], x_hat), t)

    def step(i, x, second_order=True):
      sigma, sigma_next = sigmas[i], sigmas[i + 1]
      sigma_hat = sigma * (1 + gamma[i])
      if self.S_churn > 0:  # Algorithm 2, lines 5-6: raise the noise level to sigma_hat
        churn_std = sigma * jnp.sqrt(gamma[i] * (2 + gamma[i]))  # sqrt(sigma_hat^2 - sigma^2), never negative
        x = x + churn_std * self.S_noise * self.noise_fn(fold_in(keys, i), x)
      return karras_ode_step(denoiser, x, sigma_hat, sigma_next, second_order)

    x_hat = batch_mul(1.0 / sde.marginal_coeffs(full(x, sde.T))[0], x)
    x_hat = jax.lax.fori_loop(0, steps - 1, step, x_hat)
    x_hat = step(steps - 1, x_hat, second_order=False)  # the last step, to sigma = 0, is Euler
    return SampleOutput(samples=x_hat, nfe=2 * steps - 1)  # at sigma = 0, x = x_hat


heun_sample = sample_function(HeunSampler, "heun_sample")
