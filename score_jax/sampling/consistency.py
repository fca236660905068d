"""Multistep consistency sampling (Song et al. 2023, Algorithm 1) with the marginals of any SDE."""

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp

from score_jax.parameterization import ScoreFunction, tweedie_score
from score_jax.rng import fold_in, gaussian_noise
from score_jax.sampling.common import SampleOutput, Sampler, denoise_fn, full, not_in_config, start
from score_jax.sampling.schedules import check_steps, get_timesteps, karras_sigmas
from score_jax.utils import batch_mul


@dataclasses.dataclass(frozen=True)
class ConsistencySampler(Sampler):
  """A consistency model's samples in `steps` network evaluations: x = f(x_T, T), then for each intermediate
  time tau (decreasing) re-noise x_tau = m(tau) x + std(tau) z and map back, x = f(x_tau, tau). f is the
  model's denoiser: for a consistency model, its estimate of the ODE's end point.

  Options:
    steps: network evaluations, >= 1.
    times: the `steps - 1` intermediate times, decreasing, in (eps, T) (`sampling.consistency_times`);
      empty: the interior of the log-SNR grid from T to eps with `steps` intervals, each moved to the nearest
      (in log sigma) interior level of the training grid when `grid` is set.
    grid: the levels of the training grid (`sampling.consistency_grid`): Karras's rho = 7 grid of `grid` levels
      between the noise levels of eps and T, consistency distillation's (set to its `training.teacher_steps`
      when unset); 0: none.
    eps: the end time; noise_fn: as `pc_sample`.
  """

  steps: int = 1
  times: tuple = ()
  grid: int = 0
  eps: float = not_in_config(1e-3)
  noise_fn: Callable = not_in_config(gaussian_noise)

  def __post_init__(self):
    object.__setattr__(self, "times", tuple(float(t) for t in (self.times or ())))  # a config's list, hashable

  def check(self):
    """Raises `ValueError` for a bad step count or intermediate times."""
    check_steps("consistency", self.steps)
    if self.times:
      if len(self.times) != self.steps - 1:
        raise ValueError(f"consistency: times={list(self.times)} must hold steps - 1 = {self.steps - 1} "
                         "intermediate times (or be empty for the default grid)")
      bounds = (1.0,) + self.times + (self.eps,)
      if any(later >= earlier for earlier, later in zip(bounds, bounds[1:])):
        raise ValueError(f"consistency: times={list(self.times)} must decrease strictly within "
                         f"({self.eps}, T)")
    if not (isinstance(self.grid, int) and (self.grid == 0 or self.grid >= 3)):
      raise ValueError(f"consistency: grid={self.grid} (sampling.consistency_grid) must be 0 (none) or at least 3 "
                       "levels (an interior level to land on)")

  def intermediate_times(self, sde):
    if self.times:
      return jnp.asarray(self.times, jnp.float32)
    times = get_timesteps(sde, "logsnr", self.steps, self.eps)[1:-1]
    if not self.grid:
      return times
    sigma_min, sigma_max = (sde.noise_level(jnp.float32(t)) for t in (self.eps, sde.T))
    levels = karras_sigmas(jnp.arange(1, self.grid - 1), self.grid - 1, sigma_min, sigma_max)
    nearest = jnp.argmin(jnp.abs(jnp.log(sde.noise_level(times))[:, None] - jnp.log(levels)[None, :]), axis=1)
    return sde.noise_level_to_t(levels[nearest])

  def run(self, rng, z, score_fn, sde, shape):
    x, keys = start(rng, sde, shape, z)
    x = denoise_fn(score_fn, sde, x, full(x, sde.T))
    times = self.intermediate_times(sde)

    def step(i, x):
      t = full(x, times[i])
      mean_scale, std = sde.marginal_coeffs(t)
      noisy = batch_mul(mean_scale, x) + batch_mul(std, self.noise_fn(fold_in(keys, i), x))
      return denoise_fn(score_fn, sde, noisy, t)

    if self.steps > 1:  # a one-step loop body would index an empty grid
      x = jax.lax.fori_loop(0, self.steps - 1, step, x)
    return SampleOutput(samples=x, nfe=self.steps)


def consistency_sample(rng, denoiser_fn, sde, shape, *, steps=1, times=None, grid=0, eps=1e-3, z=None):
  """Multistep consistency sampling (`ConsistencySampler`) of `denoiser_fn(x, t)` -> the end point (a
  consistency model's f, or any model's `models.get_denoiser_fn`); a `ScoreFunction` is taken as it is."""
  if not isinstance(denoiser_fn, ScoreFunction):
    denoiser_fn = ScoreFunction(score=tweedie_score(denoiser_fn, sde), denoiser=denoiser_fn)
  sampler = ConsistencySampler(steps=steps, times=tuple(times or ()), grid=grid, eps=eps)
  return sampler(rng, denoiser_fn, sde, shape, z=z)
