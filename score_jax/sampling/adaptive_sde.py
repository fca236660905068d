"""Adaptive reverse-SDE solver of Jolicoeur-Martineau et al. 2021 ("Gotta Go Fast", Algorithm 1)."""

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp

from score_jax.rng import fold_in, gaussian_noise
from score_jax.sampling.common import Sampler, SampleOutput, denoise_fn, full, not_in_config, sample_function, start
from score_jax.utils import append_dims, batch_mul, choice_error

STEP_SIZES = ("sample", "batch")


@dataclasses.dataclass(frozen=True)
class AdaptiveSDESampler(Sampler):
  """Adaptive reverse-SDE solver of Jolicoeur-Martineau et al. 2021 ("Gotta Go Fast", Algorithm 1).

  Euler-Maruyama and its improved-Euler extrapolation share one Brownian increment; their difference,
  scaled by the mixed tolerance max(eps_abs, eps_rel max(|x'|, |x'_prev|)), gives the L2 error E per
  sample (divided by sqrt(dimension)); a step is accepted when E <= 1, the next is theta h E^-r.
  `nfe` is a 0-d int array: 2 per attempted step of the batch, + denoise.

  Options:
    eps_abs, eps_rel: absolute and relative tolerances (eps_abs ~ 1/128 suits data in [-1, 1]).
    theta, r: safety factor and exponent of the step-size update; h_init: the first step size.
    step_size: "batch" (default: one step size for the batch, set by its largest error) or "sample"
      (each sample its own: sample i is batch-independent; the loop runs until the slowest sample ends).
      With "sample", accepting a step depends on that sample's own Brownian increment, which biases
      the samples in low dimension, as a state-dependent Langevin step does (`sampling`): on
      N(mu, diag(s^2)) under VP, the std came out 12% too large at D = 4, 3% at D = 16 and within
      0.2% at D = 256 and 1024, where "batch" stayed within 2% everywhere. Use "sample" for images.
    eps: the end time; denoise: finish with Tweedie's x0 at eps (one more evaluation).
    max_steps: most attempted steps; samples unfinished by then are NaN.
    noise_fn: as `pc_sample`.
  """

  eps_abs: float = 0.0078
  eps_rel: float = 0.05
  theta: float = 0.9
  r: float = 0.9
  h_init: float = 0.01
  step_size: str = "batch"
  eps: float = not_in_config(1e-3)
  denoise: bool = True
  max_steps: int = 4096
  noise_fn: Callable = not_in_config(gaussian_noise)

  def check(self):
    """Raises `ValueError` for an unknown step-size rule or non-positive tolerances."""
    if self.step_size not in STEP_SIZES:
      raise choice_error("step_size", self.step_size, STEP_SIZES)
    for key in ("eps_rel", "h_init", "max_steps"):
      if not getattr(self, key) > 0:
        raise ValueError(f"adaptive_sde: {key}={getattr(self, key)!r} must be positive")

  def run(self, rng, z, score_fn, sde, shape):
    """Algorithm 1 of Jolicoeur-Martineau et al. 2021 on the reverse SDE, per-sample or batch-shared steps."""
    x, keys = start(rng, sde, shape, z)
    eps, theta, r = self.eps, self.theta, self.r
    reverse_sde = sde.reverse(score_fn)
    t = full(x, sde.T)
    h = jnp.minimum(self.h_init, t - eps)

    def step(x, h, x_eval, t_eval, noise):  # x - h (f - g^2 s) + sqrt(h) g z, coefficients at (x_eval, t_eval)
      drift, diffusion = reverse_sde.sde(x_eval, t_eval)
      return x - batch_mul(h, drift) + batch_mul(jnp.sqrt(h) * diffusion, noise)

    def cond(carry):
      i, _, _, t, _ = carry
      return jnp.any(t > eps) & (i < self.max_steps)

    def body(carry):
      i, x, x_prev, t, h = carry
      noise = self.noise_fn(fold_in(keys, i), x)  # the same Brownian increment for both proposals
      x_low = step(x, h, x, t, noise)  # Euler-Maruyama: x'
      x_high = 0.5 * (x_low + step(x, h, x_low, t - h, noise))  # improved Euler: x'' = (x' + x~) / 2
      delta = jnp.maximum(self.eps_abs, self.eps_rel * jnp.maximum(jnp.abs(x_low), jnp.abs(x_prev)))  # mixed tolerance
      error = jnp.sqrt(jnp.mean(((x_low - x_high) / delta).reshape(x.shape[0], -1)**2, axis=-1))  # scaled L2
      if self.step_size == "batch":
        error = jnp.full_like(error, jnp.max(error))  # every sample meets the tolerance
      active = t > eps
      accept = active & (error <= 1.0)
      t = jnp.where(accept, jnp.maximum(t - h, eps), t)
      h = jnp.where(active, jnp.minimum(t - eps, theta * h * error**-r), h)
      accept_x = append_dims(accept, x.ndim)
      return i + 1, jnp.where(accept_x, x_high, x), jnp.where(accept_x, x_low, x_prev), t, h

    iterations, x, _, t, _ = jax.lax.while_loop(cond, body, (0, x, x, t, h))
    nfe = 2 * iterations
    if self.denoise:  # the final denoising step: Tweedie's x0 at eps
      x = denoise_fn(score_fn, sde, x, full(x, eps))
      nfe = nfe + 1
    # A sample that ran out of steps is NaN rather than silently unfinished.
    return SampleOutput(samples=jnp.where(append_dims(t <= eps, x.ndim), x, jnp.nan), nfe=nfe)


adaptive_sde_sample = sample_function(AdaptiveSDESampler, "adaptive_sde_sample")
