"""SDEs against closed forms, Euler-Maruyama simulation and the reference's numbers."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from scipy import stats

from score_jax import sde as sde_lib

SDES = {
    "vp": sde_lib.VPSDE(0.1, 20.0, 1000),
    "subvp": sde_lib.subVPSDE(0.1, 20.0, 1000),
    "ve": sde_lib.VESDE(0.01, 50.0, 1000),
}


@pytest.mark.parametrize("name", ["vp", "subvp", "ve"])
def test_matches_reference_fixture(refcheck, name):
  ref = refcheck("sde_ops")
  sde = SDES[name]
  x = jnp.asarray(ref["sde/x"]).transpose(0, 2, 3, 1)
  t = jnp.asarray(ref["sde/t"])
  nchw = lambda a: np.asarray(a).transpose(0, 3, 1, 2)
  drift, diffusion = sde.sde(x, t)
  mean, std = sde.marginal_prob(x, t)
  f, g = sde.discretize(x, t)
  got = {"drift": nchw(drift), "diffusion": diffusion, "marginal_mean": nchw(mean),
         "marginal_std": std, "discretize_f": nchw(f), "discretize_G": g,
         "prior_logp": sde.prior_logp(x)}
  expected = {key: ref[f"sde/{name}/{key}"] for key in got}
  if name != "ve":
    # The reference's std, sqrt(1 - exp(2 lmc)) in float32, cancels near t = 0 (0.6% off at std 1e-3);
    # ours uses expm1. There the yardstick is the same formula in float64; elsewhere the fixture.
    t64 = np.asarray(ref["sde/t"], np.float64)
    lmc = -0.25 * t64**2 * 19.9 - 0.5 * t64 * 0.1
    exact = -np.expm1(2 * lmc) if name == "subvp" else np.sqrt(-np.expm1(2 * lmc))
    np.testing.assert_allclose(expected["marginal_std"][t64 > 0.01], exact[t64 > 0.01], rtol=2e-5)
    expected["marginal_std"] = exact
  if name == "subvp":  # likewise its diffusion sqrt(beta (1 - exp(-2 int beta))), and G = diffusion / sqrt(N)
    beta = 0.1 + t64 * 19.9
    diffusion = np.sqrt(beta * -np.expm1(-2 * 0.1 * t64 - 19.9 * t64**2))
    np.testing.assert_allclose(expected["diffusion"][t64 > 0.01], diffusion[t64 > 0.01], rtol=2e-5)
    expected["diffusion"], expected["discretize_G"] = diffusion, diffusion / np.sqrt(1000)
  for key, value in got.items():
    np.testing.assert_allclose(value, expected[key], rtol=2e-5, atol=1e-6, err_msg=key)


def test_discrete_tables_match_reference(refcheck):
  ref = refcheck("sde_ops")
  vp = SDES["vp"]
  for key in ["discrete_betas", "alphas", "alphas_cumprod", "sqrt_alphas_cumprod",
              "sqrt_1m_alphas_cumprod"]:
    # The reference accumulates the product in float32; ours is float64, so sqrt(1 - alpha_bar)
    # at the first steps differs by float32 rounding of alpha_bar (6e-8) over 2 sqrt(1 - alpha_bar).
    np.testing.assert_allclose(getattr(vp, key), ref[f"sde/vp/{key}"], rtol=1e-5, atol=3e-6)
  np.testing.assert_allclose(SDES["ve"].discrete_sigmas, ref["sde/ve/discrete_sigmas"], rtol=1e-5)


def _closed_form_marginal(name, t):
  """Integrates the linear SDE's mean/variance ODEs numerically in float64."""
  s = np.linspace(0.0, t, 200001)
  if name == "ve":
    sigma = 0.01 * (50 / 0.01) ** s
    return 1.0, np.sqrt(np.trapezoid(sigma**2 * 2 * np.log(5000), s) + 0.01**2)
  beta = 0.1 + s * 19.9
  integral = np.concatenate([[0.0], np.cumsum((beta[1:] + beta[:-1]) / 2 * np.diff(s))])
  g2 = beta if name == "vp" else beta * (1 - np.exp(-2 * integral))
  # d var / dt = -beta var + g^2, var(0) = 0.
  integrand = g2 * np.exp(integral)
  var = np.exp(-integral[-1]) * np.trapezoid(integrand, s)
  return np.exp(-0.5 * integral[-1]), np.sqrt(var)


@pytest.mark.parametrize("name", ["vp", "subvp", "ve"])
@pytest.mark.parametrize("t", [0.05, 0.3, 1.0])
def test_marginal_prob_solves_moment_equations(name, t):
  mean_scale, std = _closed_form_marginal(name, t)
  got_mean, got_std = SDES[name].marginal_prob(jnp.ones((1, 1)), jnp.array([t]))
  # VE std excludes the sigma_min^2 offset of sigma(0) by design: compare sigma(t) directly.
  if name == "ve":
    std = 0.01 * (50 / 0.01) ** t
  np.testing.assert_allclose(float(got_mean[0, 0]), mean_scale, rtol=1e-5)
  np.testing.assert_allclose(float(got_std[0]), std, rtol=1e-4)


@pytest.mark.parametrize("name", ["vp", "subvp", "ve"])
def test_euler_maruyama_simulation_matches_marginal(name):
  """Simulating dx = f dt + g dw from x0 reproduces marginal_prob's mean and std."""
  sde = SDES[name]
  n, steps, t_end = 20000, 500, 0.5
  x0 = 1.5
  dt = t_end / steps

  def step(x, inputs):
    i, key = inputs
    t = jnp.full((n,), i * dt)
    drift, diffusion = sde.sde(x, t)
    return x + drift * dt + diffusion[:, None] * jnp.sqrt(dt) * jax.random.normal(key, x.shape), None

  keys = jax.random.split(jax.random.PRNGKey(0), steps)
  x, _ = jax.lax.scan(step, jnp.full((n, 1), x0), (jnp.arange(steps), keys))
  mean, std = sde.marginal_prob(jnp.full((1, 1), x0), jnp.array([t_end]))
  sample_std = float(jnp.std(x))
  assert abs(float(jnp.mean(x)) - float(mean[0, 0])) < 4 * sample_std / np.sqrt(n) + 0.01 * sample_std
  expected_std = float(std[0])
  if name == "ve":  # x(0) is deterministic here; marginal_prob's sigma(t) includes sigma_min.
    expected_std = np.sqrt(expected_std**2 - 0.01**2)
  np.testing.assert_allclose(sample_std, expected_std, rtol=0.03)


@pytest.mark.parametrize("name", ["vp", "subvp", "ve"])
def test_prior_logp_is_the_exact_density(name):
  sde = SDES[name]
  z = sde.prior_sampling(jax.random.PRNGKey(1), (5, 2, 3))
  scale = 50.0 if name == "ve" else 1.0
  expected = stats.norm(scale=scale).logpdf(np.asarray(z, np.float64)).reshape(5, -1).sum(-1)
  np.testing.assert_allclose(sde.prior_logp(z), expected, rtol=1e-5)
  assert np.std(np.asarray(z)) == pytest.approx(scale, rel=0.5)


@pytest.mark.parametrize("name", ["vp", "subvp", "ve"])
def test_reverse_drift_and_probability_flow(name):
  sde = SDES[name]
  score_fn = lambda x, t: -x
  x = jnp.linspace(-1, 1, 6).reshape(3, 2)
  t = jnp.array([0.1, 0.5, 0.9])
  drift, g = sde.sde(x, t)
  rev_drift, rev_g = sde.reverse(score_fn).sde(x, t)
  ode_drift, ode_g = sde.reverse(score_fn, probability_flow=True).sde(x, t)
  np.testing.assert_allclose(rev_drift, drift + g[:, None] ** 2 * x, rtol=1e-6)
  np.testing.assert_allclose(ode_drift, drift + 0.5 * g[:, None] ** 2 * x, rtol=1e-6)
  np.testing.assert_allclose(rev_g, g)
  np.testing.assert_array_equal(ode_g, 0.0)
  f, G = sde.discretize(x, t)
  rev_f, rev_G = sde.reverse(score_fn).discretize(x, t)
  np.testing.assert_allclose(rev_f, f + G[:, None] ** 2 * x, rtol=1e-6)


def test_get_sde_names_and_errors():
  config = ml_collections.ConfigDict({
      "training": {"sde": "VESDE"},
      "model": {"sigma_min": 0.01, "sigma_max": 50.0, "num_scales": 10, "beta_min": 0.1, "beta_max": 20.0}})
  sde, eps = sde_lib.get_sde(config)
  assert isinstance(sde, sde_lib.VESDE) and sde.N == 10 and eps == 1e-5
  config.training.sde = "vpsde"
  sde, eps = sde_lib.get_sde(config)
  assert isinstance(sde, sde_lib.VPSDE) and eps == 1e-3
  config.training.sde = "linear"
  with pytest.raises(ValueError, match="training.sde.*rectified_flow, subvpsde, vesde, vpsde"):
    sde_lib.get_sde(config)


def test_sde_methods_jit_with_static_sde():
  sde = SDES["vp"]
  fn = jax.jit(lambda x, t: sde.marginal_prob(x, t)[1])
  np.testing.assert_allclose(fn(jnp.ones((2, 3)), jnp.array([0.2, 0.4])),
                             sde.marginal_prob(jnp.ones((2, 3)), jnp.array([0.2, 0.4]))[1])
  assert hash(sde) == hash(sde_lib.VPSDE(0.1, 20.0, 1000))
