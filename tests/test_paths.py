"""Flow matching's Gaussian paths (`rectified_flow`, `cosine`) and the `flow` parameterization, against
closed forms. Every sampler and the likelihood run on them in test_sampling, test_fast_samplers and
test_likelihood (the paths are in their SDE lists)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from score_jax import parameterization as param_lib
from score_jax import sde as sde_lib
from tests.test_sampling import gaussian_score_fn

MU, SCALE = np.array([0.5, -1.0, 2.0, 0.0], np.float32), np.array([0.3, 1.0, 0.7, 1.5], np.float32)
CLOSED_FORMS = {  # (m, std) as the papers write them, in numpy
    "rectified_flow": lambda t: (1.0 - t, t),
    "cosine": lambda t: (np.cos(0.5 * np.pi * t), np.sin(0.5 * np.pi * t)),
}
PATHS = {"rectified_flow": sde_lib.RectifiedFlow(), "cosine": sde_lib.CosinePath()}
TIMES = np.array([0.02, 0.3, 0.5, 0.8, 0.99])


@pytest.mark.parametrize("name", PATHS)
def test_paths_have_the_papers_marginals_and_stop_before_the_signal_vanishes(name):
  sde = PATHS[name]
  m, std = CLOSED_FORMS[name](TIMES)
  np.testing.assert_allclose(sde.marginal_coeffs(jnp.asarray(TIMES)), (m, std), rtol=1e-6, atol=1e-7)
  assert sde.T == 1 - 1e-3 and sde.prior_std == pytest.approx(CLOSED_FORMS[name](sde.T)[1], rel=1e-6)
  np.testing.assert_allclose(sde.noise_level_to_t(jnp.asarray(std / m)), TIMES, rtol=1e-5)


@pytest.mark.parametrize("name", PATHS)
def test_drift_and_diffusion_keep_the_marginals(name):
  """For Gaussian data the SDE's marginal variance v = m^2 c^2 + std^2 obeys dv/dt = 2 f v + g^2 with f = drift / x;
  the time derivative taken by central differences of the closed forms, not by the code's jvp."""
  sde, closed = PATHS[name], CLOSED_FORMS[name]
  h = 1e-4
  for c in (0.3, 1.0, 2.0):
    variance = lambda t: closed(t)[0] ** 2 * c**2 + closed(t)[1] ** 2  # noqa: E731
    dv = (variance(TIMES + h) - variance(TIMES - h)) / (2 * h)
    drift, diffusion = sde.sde(jnp.ones((len(TIMES), 1)), jnp.asarray(TIMES, jnp.float32))
    np.testing.assert_allclose(2 * np.asarray(drift)[:, 0] * variance(TIMES) + np.asarray(diffusion) ** 2, dv,
                               rtol=2e-3, atol=1e-4)


def exact_denoiser(m, std, x):
  """E[x(0) | x(t)] for x(0) ~ N(MU, diag(SCALE^2)): MU + m c^2 (x - m MU) / (m^2 c^2 + std^2)."""
  m, std = m[:, None], std[:, None]
  return MU + m * SCALE**2 * (x - m * MU) / (m**2 * SCALE**2 + std**2)


@pytest.mark.parametrize("name", PATHS)
def test_probability_flow_is_the_marginal_velocity_and_flow_outputs_it(name):
  """The probability-flow ODE f - g^2 score / 2 with the exact score equals E[m' x(0) + std' z | x(t)] in closed
  form (z - x(0) on the linear path); the `flow` parameterization's output for the exact denoiser is that
  velocity, and its denoised() maps it back."""
  sde, closed = PATHS[name], CLOSED_FORMS[name]
  t = np.repeat(TIMES, 3).astype(np.float32)
  x = np.random.default_rng(0).normal(size=(len(t), 4)).astype(np.float32) * 2
  t64, h = t.astype(np.float64), 1e-6
  m, std = closed(t64)
  m_rate = (closed(t64 + h)[0] - closed(t64 - h)[0]) / (2 * h)
  std_rate = (closed(t64 + h)[1] - closed(t64 - h)[1]) / (2 * h)
  denoised = exact_denoiser(m, std, x)
  noise = (x - m[:, None] * denoised) / std[:, None]
  velocity = m_rate[:, None] * denoised + std_rate[:, None] * noise
  if name == "rectified_flow":
    np.testing.assert_allclose(velocity, noise - denoised, rtol=1e-6, atol=1e-6)
  drift, diffusion = sde.sde(jnp.asarray(x), jnp.asarray(t))
  score = gaussian_score_fn(sde, MU, SCALE)(jnp.asarray(x), jnp.asarray(t))
  ode = np.asarray(drift) - 0.5 * np.asarray(diffusion)[:, None] ** 2 * np.asarray(score)
  np.testing.assert_allclose(ode, velocity, rtol=2e-4, atol=2e-4)
  flow = param_lib.Flow()
  output = flow.output_from_denoised(sde, jnp.asarray(denoised, jnp.float32), jnp.asarray(x), jnp.asarray(t), True)
  np.testing.assert_allclose(output, velocity, rtol=2e-4, atol=2e-4)
  np.testing.assert_allclose(flow.denoised(sde, output, jnp.asarray(x), jnp.asarray(t), True), denoised,
                             rtol=2e-4, atol=2e-4)
  np.testing.assert_allclose(flow.score(sde, output, jnp.asarray(x), jnp.asarray(t), True), score, rtol=1e-3,
                             atol=1e-3)


@pytest.mark.parametrize("sde", [sde_lib.RectifiedFlow(), sde_lib.CosinePath(), sde_lib.VPSDE()],
                         ids=["rectified_flow", "cosine", "vpsde"])
def test_flow_target_is_the_conditional_velocity_and_denoises_exactly(sde):
  """The regression target at x = m x0 + std z is the conditional velocity m' x0 + std' z (z - x0 on the linear
  path) and gives D = x0; the parameterization works on any SDE (VP too)."""
  rng = np.random.default_rng(1)
  x0, z = (jnp.asarray(rng.normal(size=(5, 4)), jnp.float32) for _ in range(2))
  t = jnp.asarray([0.05, 0.2, 0.5, 0.7, 0.95], jnp.float32)
  flow = param_lib.Flow()
  target = flow.target(sde, x0, z, t)
  if isinstance(sde, sde_lib.RectifiedFlow):
    np.testing.assert_allclose(target, z - x0, rtol=1e-6, atol=1e-6)
  m, std = sde.marginal_coeffs(t)
  x = m[:, None] * x0 + std[:, None] * z
  np.testing.assert_allclose(flow.denoised(sde, target, x, t, True), x0, rtol=1e-4, atol=1e-4)
  assert param_lib.PARAMETERIZATIONS["flow"] is param_lib.Flow


def test_paths_are_configured_by_name():
  from score_jax import base_config

  config = base_config.get_config()
  for name, cls in (("rectified_flow", sde_lib.RectifiedFlow), ("cosine", sde_lib.CosinePath)):
    config.training.sde = name
    sde, eps = sde_lib.get_sde(config)
    assert isinstance(sde, cls) and eps == 1e-3 and sde.N == config.model.num_scales
  assert math.isclose(sde_lib.CosinePath().noise_level(jnp.asarray(0.5)), 1.0, rel_tol=1e-6)
