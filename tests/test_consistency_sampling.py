"""Multistep consistency sampling against the exact consistency function of Gaussian data."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from score_jax import sampling
from tests.test_sampling import COSINE, DIM, MU, NUM_SAMPLES, RF, SCALE, VP, assert_matches_gaussian


def flow_map(sde):
  """The probability-flow ODE's map from (x, t) to t = 0 for N(MU, diag(SCALE^2)) data: affine per dimension,
  MU + (x - m MU) SCALE / v(t) with v^2 = m^2 SCALE^2 + std^2 (the ideal consistency function)."""
  def f(x, t):
    m, std = sde.marginal_coeffs(t)
    m, std = m[:, None], std[:, None]
    return MU + (x - m * MU) * SCALE / jnp.sqrt(m**2 * SCALE**2 + std**2)
  return f


def posterior_mean(sde):
  """E[x(0) | x(t)], the denoiser (not a consistency function)."""
  def d(x, t):
    m, std = sde.marginal_coeffs(t)
    m, std = m[:, None], std[:, None]
    return MU + m * SCALE**2 * (x - m * MU) / (m**2 * SCALE**2 + std**2)
  return d


@pytest.mark.parametrize("sde", [RF, COSINE, VP], ids=["rectified_flow", "cosine", "vpsde"])
@pytest.mark.parametrize("steps", [1, 2, 4])
def test_the_exact_consistency_function_gives_the_data_at_any_step_count(sde, steps):
  out = sampling.consistency_sample(jax.random.key(0), flow_map(sde), sde, (NUM_SAMPLES, DIM), steps=steps)
  assert int(out.nfe) == steps
  assert_matches_gaussian(np.asarray(out.samples), discretisation=0.01)


def test_the_sampler_uses_the_given_function_and_times():
  """A denoiser (posterior mean) in one step collapses onto MU (std m(T) SCALE^2 / v(T) ~ 1e-3): the
  sampler takes the function it is given, not Tweedie's formula of a score."""
  one = np.asarray(sampling.consistency_sample(jax.random.key(0), posterior_mean(RF), RF, (512, DIM)).samples)
  assert one.std(0).max() < 0.01
  calls = []

  def recording(x, t):
    calls.append(t)
    return flow_map(RF)(x, t)

  explicit = sampling.consistency_sample(jax.random.key(0), recording, RF, (4, DIM), steps=3, times=(0.8, 0.4))
  assert int(explicit.nfe) == 3 and len(calls) >= 2  # traced: the first call and the loop's body
  with pytest.raises(ValueError, match="must hold steps - 1 = 2 intermediate times"):
    sampling.consistency_sample(jax.random.key(0), recording, RF, (4, DIM), steps=3, times=(0.5,))
  with pytest.raises(ValueError, match="must decrease strictly"):
    sampling.consistency_sample(jax.random.key(0), recording, RF, (4, DIM), steps=3, times=(0.4, 0.8))


def test_the_default_grid_is_the_interior_of_the_log_snr_grid():
  sampler = sampling.ConsistencySampler(steps=4)
  times = np.asarray(sampler.intermediate_times(VP))
  full = np.asarray(sampling.get_timesteps(VP, "logsnr", 4, 1e-3))
  np.testing.assert_allclose(times, full[1:-1])
  assert sampling.config_key("times") == "consistency_times" and "consistency" in sampling.FAMILIES


def test_with_a_training_grid_the_times_lie_on_its_levels():
  """`grid`: the log-SNR times moved to the nearest interior level of Karras's rho = 7 grid of that many levels
  between sigma(eps) and sigma(T) (consistency distillation's training grid, written out here); a distillation
  config gets its `training.teacher_steps` by default (measured before: sigma 1.26 for 2 steps, off the grid)."""
  from score_jax import run_setup
  from tests.helpers import tiny_toy_config

  sigma_min, sigma_max = (float(VP.noise_level(jnp.float32(t))) for t in (1e-3, 1.0))
  levels = (sigma_min ** (1 / 7) + np.arange(18) / 17 * (sigma_max ** (1 / 7) - sigma_min ** (1 / 7))) ** 7
  for steps in (2, 4):
    times = sampling.ConsistencySampler(steps=steps, grid=18).intermediate_times(VP)
    sigmas = np.asarray(VP.noise_level(times))
    off = np.abs(np.log(sigmas)[:, None] - np.log(levels[1:-1])[None]).min(axis=1)
    assert off.max() < 1e-4, (sigmas, off)
    logsnr = np.asarray(VP.noise_level(sampling.get_timesteps(VP, "logsnr", steps, 1e-3)[1:-1]))
    nearest = levels[1:-1][np.abs(np.log(logsnr)[:, None] - np.log(levels[1:-1])[None]).argmin(axis=1)]
    np.testing.assert_allclose(sigmas, nearest, rtol=1e-4)
  config = run_setup.prepare_config(tiny_toy_config(**{"training.objective": "consistency_distillation",
                                                       "training.teacher_workdir": "unused"}))
  assert config.sampling.consistency_grid == config.training.teacher_steps == 18
  with pytest.raises(ValueError, match=r"grid=2 \(sampling.consistency_grid\)"):
    sampling.ConsistencySampler(steps=2, grid=2).check()
