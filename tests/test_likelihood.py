"""Probability-flow likelihoods against closed-form Gaussian densities and the reference's runs."""

import json
import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from scipy import stats

from score_jax import base_config, likelihood, models
from score_jax import sde as sde_lib
from tests.helpers import FIXTURES, ReferenceToyModel
from tests import test_sampling

DIM = 16
MU = np.linspace(-1.0, 1.0, DIM).astype(np.float32)
SCALE = np.linspace(0.3, 1.5, DIM).astype(np.float32)
SDES = {"vp": (sde_lib.VPSDE(), 1.0), "subvp": (sde_lib.subVPSDE(), 1.0), "ve": (sde_lib.VESDE(sigma_max=50.0), 50.0),
        # flow matching's paths: the prior N(0, std(T)^2) at T = 1 - 1e-3 (std(T) = 0.999 and 0.9999988)
        "rectified_flow": (sde_lib.RectifiedFlow(), 0.999), "cosine": (sde_lib.CosinePath(), math.sin(0.4995 * math.pi))}


def coefficients(sde, t, scale):
  """Marginal mean scale m(t) and per-dimension std v(t) = sqrt(m^2 s^2 + std^2) of the perturbed Gaussian."""
  t = jnp.full((1,), t)
  m = float(sde.marginal_prob(jnp.ones((1,)), t)[0][0])
  std = float(sde.marginal_prob(t, t)[1][0])
  return m, np.sqrt(m**2 * scale.astype(np.float64)**2 + std**2)


def gaussian_score_fn(sde, mu=MU, scale=SCALE):
  """The exact perturbed Gaussian score of test_sampling, with this module's mu and scale."""
  return test_sampling.gaussian_score_fn(sde, mu, scale)


def model_logp(sde, prior_std, x, eps, mu=MU, scale=SCALE):
  """The model's exact log-density: the probability-flow map of a Gaussian is affine per dimension,
  z = m_T mu + (x - m_eps mu) v_T / v_eps, so log p(x) = log N(z; 0, prior_std^2) + sum log(v_T / v_eps)."""
  m_eps, v_eps = coefficients(sde, eps, scale)
  m_max, v_max = coefficients(sde, sde.T, scale)
  z = m_max * mu + (x - m_eps * mu) * v_max / v_eps
  return stats.norm.logpdf(z, scale=prior_std).sum(-1) + np.log(v_max / v_eps).sum()


@pytest.mark.parametrize("name", ["vp", "subvp", "ve", "rectified_flow", "cosine"])
def test_exact_divergence_gives_closed_form_density(name):
  sde, prior_std = SDES[name]
  x = (MU + SCALE * np.random.default_rng(0).standard_normal((8, DIM))).astype(np.float32)
  out = likelihood.log_likelihood(jax.random.key(0), gaussian_score_fn(sde), sde, jnp.asarray(x), hutchinson="exact")
  expected = model_logp(sde, prior_std, x.astype(np.float64), 1e-5)
  # Measured: 3e-6 (VP, sub-VP) and 2e-5 (VE) nats/dim; the requirement is 1e-3.
  np.testing.assert_allclose(np.asarray(out.logp) / DIM, expected / DIM, atol=1e-4)
  # And close to the data density itself: the prior is not exactly p_T, and p_eps is p_0 blurred
  # by std(eps) (0.01 for VE), both at the 1e-2 nats/dim level here.
  np.testing.assert_allclose(np.asarray(out.logp) / DIM, stats.norm.logpdf(x, MU, SCALE).sum(-1) / DIM, atol=1e-2)
  assert out.z.shape == x.shape and 20 < int(out.nfe) < 1000


@pytest.mark.parametrize("hutchinson", ["rademacher", "gaussian"])
def test_hutchinson_estimates_are_unbiased(hutchinson):
  # A full covariance, so that the Jacobian of the drift is not diagonal and Rademacher probes
  # have nonzero variance too. 1024 copies of one point get independent probes (per-sample keys):
  # standard errors ~0.05 nats against a spread of 1.4 (Rademacher) and 2.2 (Gaussian).
  dim = 8
  rng = np.random.default_rng(1)
  factor = rng.standard_normal((dim, dim)).astype(np.float32) / math.sqrt(dim)
  covariance = factor @ factor.T + 0.2 * np.eye(dim, dtype=np.float32)
  mu = rng.standard_normal(dim).astype(np.float32)
  sde = sde_lib.VPSDE()

  def score_fn(x, t):
    m = sde.marginal_prob(jnp.ones_like(t), t)[0][:, None, None]
    std = sde.marginal_prob(x, t)[1][:, None, None]
    covariance_t = m**2 * covariance + std**2 * jnp.eye(dim)
    return -jnp.linalg.solve(covariance_t, (x - m[:, :, 0] * mu)[..., None])[..., 0]

  x = jnp.broadcast_to(jnp.asarray(rng.multivariate_normal(mu, covariance), jnp.float32), (1024, dim))
  exact = likelihood.log_likelihood(jax.random.key(0), score_fn, sde, x[:1], hutchinson="exact").logp[0]
  true_logp = stats.multivariate_normal.logpdf(np.asarray(x[0]), mu, covariance)
  assert abs(exact - true_logp) < 1e-2 * dim  # the prior mismatch of VP at T, as above
  estimates = np.asarray(likelihood.log_likelihood(jax.random.key(2), score_fn, sde, x, hutchinson=hutchinson).logp)
  standard_error = estimates.std() / math.sqrt(estimates.size)
  assert estimates.std() > 1e-3  # the estimator is really random
  assert abs(estimates.mean() - exact) < 4.5 * standard_error


def test_bits_per_dim_bounds_the_discrete_likelihood():
  # Centred 8-bit data (offset 7) under the exact model, a Gaussian in model space (see
  # `model_logp`): the dequantised estimate is an upper bound on -log2 P(pixels) / D, and a tight
  # one for a density this smooth on 1/256 cells. 32 copies of one image average over u.
  dim, scale, mu = 4, np.full(4, 0.3, np.float32), np.array([-0.5, 0.0, 0.2, 0.6], np.float32)
  sde, eps = sde_lib.VPSDE(), 1e-5
  pixels = np.array([40, 128, 150, 200])
  x = jnp.broadcast_to(jnp.asarray(2 * pixels / 255 - 1, jnp.float32), (32, dim))
  out = likelihood.bits_per_dim(jax.random.key(0), gaussian_score_fn(sde, mu, scale), sde, x,
                                inverse_scaler=lambda v: (v + 1) / 2, hutchinson="exact", eps=eps)
  # The model density in model space is N(m_eps mu - m_T mu v_eps / v_T, (v_eps / v_T)^2).
  m_eps, v_eps = coefficients(sde, eps, scale)
  m_max, v_max = coefficients(sde, sde.T, scale)
  mean01, std01 = (m_eps * mu - m_max * mu * v_eps / v_max + 1) / 2, v_eps / v_max / 2
  cell_probability = (stats.norm.cdf((pixels + 1) / 256, mean01, std01) - stats.norm.cdf(pixels / 256, mean01, std01))
  discrete_bpd = -np.log2(cell_probability).sum() / dim
  bpd = np.asarray(out.bpd)
  assert bpd.std() > 1e-4  # the dequantisation noise differs per sample
  assert bpd.mean() > discrete_bpd - 3 * bpd.std() / math.sqrt(bpd.size)
  assert bpd.mean() - discrete_bpd < 5e-3


def test_num_repeats_averages_independent_probes():
  sde, _ = SDES["vp"]
  x = jnp.asarray(MU[None] + SCALE[None] * 0.5)
  score_fn = gaussian_score_fn(sde)
  one = likelihood.log_likelihood(jax.random.key(0), score_fn, sde, x, hutchinson="gaussian", rtol=1e-4, atol=1e-4)
  four = likelihood.log_likelihood(jax.random.key(0), score_fn, sde, x, hutchinson="gaussian", num_repeats=4,
                                   rtol=1e-4, atol=1e-4)
  assert int(four.nfe) > 3 * int(one.nfe) and not np.allclose(one.logp, four.logp)


def test_does_not_retrace_and_rejects_bad_names():
  traces = []
  sde, _ = SDES["vp"]

  def score_fn(x, t):
    traces.append(None)
    return -x

  for seed in range(2):
    likelihood.log_likelihood(jax.random.key(seed), score_fn, sde, jnp.ones((2, 3)), rtol=1e-3, atol=1e-3)
  assert 0 < len(traces) <= 3  # first evaluation, initial step, loop body: traced once
  with pytest.raises(ValueError, match="exact, gaussian, rademacher"):
    likelihood.log_likelihood(jax.random.key(0), score_fn, sde, jnp.ones((2, 3)), hutchinson="Rademacher")


def test_get_likelihood_fn_runs_the_model():
  config = ml_collections.ConfigDict()
  config.training = ml_collections.ConfigDict(dict(sde="vpsde", continuous=True))
  config.data = ml_collections.ConfigDict(dict(dim=3))
  config.model = ml_collections.ConfigDict(dict(
      name="mlp", nf=16, num_res_blocks=1, embedding_type="positional", embedding_dim=8, fourier_scale=16.0,
      scale_by_sigma=False, dropout=0.0, sigma_min=0.01, sigma_max=4.0, beta_min=0.1, beta_max=20.0,
      num_scales=1000))
  config = base_config.complete(config)
  sde = sde_lib.VPSDE()
  model, variables = models.get_model(config), models.init_model(jax.random.key(0), config)
  bpd_fn = likelihood.get_likelihood_fn(config, sde, model, lambda v: (v + 1) / 2, rtol=1e-5, atol=1e-5)
  x = jnp.asarray(2 * np.array([[0, 100, 255], [7, 8, 9]]) / 255 - 1, jnp.float32)
  out = bpd_fn(jax.random.key(1), variables, x)
  # The config path equals bits_per_dim on the model's score function (same key, same probe draws), to the
  # solver's tolerance: the two programs compile differently and the adaptive steps follow the rounding.
  score_fn = models.get_score_fn(sde, model, variables, continuous=True)
  direct = likelihood.bits_per_dim(jax.random.key(1), score_fn, sde, x, inverse_scaler=lambda v: (v + 1) / 2,
                                   rtol=1e-5, atol=1e-5)
  # (At the solver tolerance 1e-3 the two adaptive runs took 92 and 116 steps and differed by 0.3% on optimised code.)
  np.testing.assert_allclose(out.bpd, direct.bpd, rtol=2e-4)
  assert int(out.nfe) > 0 and abs(int(out.nfe) - int(direct.nfe)) <= 0.3 * int(direct.nfe)


# ------------------------------------------------------------------- replays of the reference

CASES = json.loads((FIXTURES / "toy_pipelines.json").read_text())["cases"]
TOY_SDES = {"vp": sde_lib.VPSDE(0.1, 20.0, 10), "subvp": sde_lib.subVPSDE(0.1, 20.0, 10),
            "ve": sde_lib.VESDE(0.01, 50.0, 10)}


@pytest.mark.parametrize("name", sorted(n for n in CASES if n.startswith("likelihood/")))
def test_replays_reference_likelihood(refcheck, name):
  toy = refcheck("toy_pipelines")
  sde_name = name.split("/")[1]
  sde = TOY_SDES[sde_name]

  # The fixture's analytic model; the reference's likelihood always used continuous time labels.
  score_fn = models.get_score_fn(sde, ReferenceToyModel(), {}, continuous=True)

  # VP / sub-VP on centred data with inverse scaler (x + 1) / 2 (offset 7); VE on [0, 1] data (offset 8).
  centred = sde_name != "ve"
  x = toy["inputs/data_centered" if centred else "inputs/data_01"]
  probe = 2.0 * toy[f"{name}/draw000"] - 1.0  # the reference's Rademacher draw: randint{0, 1} * 2 - 1
  out = likelihood.bits_per_dim(jax.random.key(0), score_fn, sde, jnp.asarray(x), probe=jnp.asarray(probe),
                                inverse_scaler=(lambda v: (v + 1) / 2) if centred else (lambda v: v),
                                dequantize=False)
  # Same algorithm as scipy's RK45, in float32 instead of float64: tolerance-level agreement.
  np.testing.assert_allclose(out.bpd, toy[f"{name}/out0"], rtol=1e-4)
  np.testing.assert_allclose(out.z, toy[f"{name}/out1"], rtol=1e-3, atol=1e-4 * np.abs(toy[f"{name}/out1"]).max())
  assert abs(int(out.nfe) / int(toy[f"{name}/out2"]) - 1) < 0.25
