"""Time grids of the fast samplers, from `sde.T` down to the end time, and Karras et al.'s noise levels."""

import math

import jax.numpy as jnp

from score_jax.utils import choice_error

RHO = 7.0  # the rho of Karras et al. 2022's Eq. (5)


def karras_sigmas(index, num_steps, sigma_min, sigma_max, rho=RHO):
  """Level `index` of N = `num_steps` intervals of Karras et al. 2022's Eq. (5), ascending: sigma_i =
  (sigma_min^(1/rho) + i / N (sigma_max^(1/rho) - sigma_min^(1/rho)))^rho, i = 0 .. N (elementwise in `index`).
  The Heun sampler walks it down from i = N; consistency training and distillation draw intervals of it."""
  low, high = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
  return (low + index / num_steps * (high - low)) ** rho


def _logsnr_times(sde, steps, eps):
  """Uniform in lambda = -log sigma (Lu et al. 2022a, Sec. 3.3)."""
  log_snr = lambda t: -jnp.log(sde.noise_level(jnp.float32(t)))
  lambdas = jnp.linspace(log_snr(sde.T), log_snr(eps), steps + 1)
  return sde.noise_level_to_t(jnp.exp(-lambdas))


SCHEDULES = {
    "logsnr": _logsnr_times,
    "time_uniform": lambda sde, steps, eps: jnp.linspace(sde.T, eps, steps + 1),
    "time_quadratic": lambda sde, steps, eps: jnp.linspace(math.sqrt(sde.T), math.sqrt(eps), steps + 1)**2,
}


def get_timesteps(sde, schedule, steps, eps):
  """`(steps + 1,)` times from `sde.T` down to `eps` on the named schedule, ends pinned exactly."""
  return SCHEDULES[schedule](sde, steps, eps).at[0].set(sde.T).at[-1].set(eps)


def check_schedule(schedule):
  """Raises `ValueError` listing the valid names for an unknown `schedule`."""
  if schedule not in SCHEDULES:
    raise choice_error("schedule", schedule, SCHEDULES)


def check_steps(method, steps, least=1):
  """Raises `ValueError` unless `steps` is an int >= `least`."""
  if not (isinstance(steps, int) and steps >= least):
    raise ValueError(f"{method}: steps must be an int >= {least}")
