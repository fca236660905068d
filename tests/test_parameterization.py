"""The parameterization layer against closed forms: Gaussian data, Tweedie's formula, EDM's Table 1."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from score_jax import base_config, models, parameterization as param_lib, sde as sde_lib
from score_jax.utils import batch_mul

jax.config.update("jax_enable_x64", False)

SDES = {"vp": sde_lib.VPSDE(), "subvp": sde_lib.subVPSDE(), "ve": sde_lib.VESDE(sigma_max=20.0)}
NAMES = sorted(name for name, cls in param_lib.PARAMETERIZATIONS.items() if cls.denoises)  # not `autoencoder`
TRAINABLE = [name for name in NAMES if name != "reference"]
MU, S = 0.3, 0.7  # Gaussian data N(MU, S^2) per dimension


def gaussian_problem(sde, seed=0, batch=64, dim=5):
  rng = np.random.default_rng(seed)
  t = jnp.asarray(rng.uniform(1e-3, 1.0, batch), jnp.float32)
  x0 = jnp.asarray(MU + S * rng.normal(size=(batch, dim)), jnp.float32)
  z = jnp.asarray(rng.normal(size=(batch, dim)), jnp.float32)
  mean_scale, std = sde.marginal_coeffs(t)
  return t, x0, z, batch_mul(mean_scale, x0) + batch_mul(std, z)


def exact_denoiser_and_score(sde, x, t):
  """E[x0 | x] and grad log p(x) for x = m x0 + std z, x0 ~ N(MU, S^2): a Gaussian posterior."""
  mean_scale, std = sde.marginal_coeffs(t)
  variance = mean_scale**2 * S**2 + std**2
  residual = x - batch_mul(mean_scale, jnp.full_like(x, MU))
  return MU + batch_mul(mean_scale * S**2 / variance, residual), batch_mul(-1.0 / variance, residual)


def marginal_rates(sde, t):
  """(m'(t), std'(t)) differentiated by hand, in float64: VP / sub-VP m = exp(-t^2 (b1 - b0) / 4 - t b0 / 2),
  std = sqrt(1 - m^2) (VP) or 1 - m^2 (sub-VP); VE m = 1, std = s_min (s_max / s_min)^t."""
  t = np.asarray(t, np.float64)
  if isinstance(sde, sde_lib.VESDE):
    std = sde.sigma_min * (sde.sigma_max / sde.sigma_min) ** t
    return np.zeros_like(t), std * np.log(sde.sigma_max / sde.sigma_min)
  b0, b1 = sde.beta_min, sde.beta_max
  m = np.exp(-0.25 * t**2 * (b1 - b0) - 0.5 * t * b0)
  m_rate = m * (-0.5 * t * (b1 - b0) - 0.5 * b0)
  std_rate = -m * m_rate / np.sqrt(1 - m**2) if isinstance(sde, sde_lib.VPSDE) else -2 * m * m_rate
  return jnp.asarray(m_rate, jnp.float32), jnp.asarray(std_rate, jnp.float32)


def optimal_output(name, sde, x, t, denoised):
  """The network output that makes each parameterization's denoiser equal `denoised` (derived by hand)."""
  mean_scale, std = sde.marginal_coeffs(t)
  a = jnp.sqrt(mean_scale**2 + std**2)
  if name == "eps":
    return batch_mul(1.0 / std, x - batch_mul(mean_scale, denoised))
  if name == "x0":
    return denoised
  if name == "v":  # v = alpha z - sigma x0 with alpha = m / a, sigma = std / a, z = (x - m x0) / std
    return batch_mul(mean_scale / (a * std), x - batch_mul(mean_scale, denoised)) - batch_mul(std / a, denoised)
  if name in ("flow", "trigflow", "average_velocity"):  # F = m' D + std' z, z = (x - m D) / std (u at r = t)
    m_rate, std_rate = marginal_rates(sde, t)
    noise = batch_mul(1.0 / std, x - batch_mul(mean_scale, denoised))
    return batch_mul(m_rate, denoised) + batch_mul(std_rate, noise)
  sigma, sigma_data = std / mean_scale, 0.5  # edm: F = (D - c_skip x_hat) / c_out
  sigma_min = 0.0
  if name == "consistency":  # EDM's with sigma - sigma_min in c_skip and c_out, sigma_min that of t = 1e-3
    m_min, std_min = sde.marginal_coeffs(jnp.full_like(t, 1e-3))
    sigma_min = std_min / m_min
  c_skip = sigma_data**2 / ((sigma - sigma_min)**2 + sigma_data**2)
  c_out = (sigma - sigma_min) * sigma_data / jnp.sqrt(sigma**2 + sigma_data**2)
  return batch_mul(1.0 / c_out, denoised - batch_mul(c_skip / mean_scale, x))


@pytest.mark.parametrize("sde_name", sorted(SDES))
@pytest.mark.parametrize("name", TRAINABLE)
def test_optimal_output_gives_exact_denoiser_and_score(name, sde_name):
  sde = SDES[sde_name]
  p = param_lib.PARAMETERIZATIONS[name]()
  t, _, _, x = gaussian_problem(sde)
  denoised, score = exact_denoiser_and_score(sde, x, t)
  output = optimal_output(name, sde, x, t, denoised)
  np.testing.assert_allclose(p.denoised(sde, output, x, t, True), denoised, rtol=2e-4, atol=2e-4)
  # s = (m D - x) / std^2 cancels in float32 where std is small (x0 and edm have no other route): check
  # the score where the problem is well conditioned.
  ok = np.asarray(sde.marginal_coeffs(t)[1]) > 0.05
  np.testing.assert_allclose(p.score(sde, output, x, t, True)[ok], score[ok], rtol=2e-3,
                             atol=2e-3 * np.abs(score).max())


@pytest.mark.parametrize("sde_name", sorted(SDES))
@pytest.mark.parametrize("name", TRAINABLE)
def test_target_is_the_output_that_recovers_the_data(name, sde_name):
  sde = SDES[sde_name]
  p = param_lib.PARAMETERIZATIONS[name]()
  t, x0, z, x = gaussian_problem(sde, seed=1)
  np.testing.assert_allclose(p.denoised(sde, p.target(sde, x0, z, t), x, t, True), x0, rtol=1e-4, atol=5e-4)
  expected = {"eps": z, "x0": x0}.get(name)
  if expected is not None:
    np.testing.assert_array_equal(p.target(sde, x0, z, t), expected)


def test_reference_score_of_the_exact_noise_predictor_is_the_exact_score():
  """VP's reference network predicts the noise: output -std s gives back s, and Tweedie gives D."""
  sde = SDES["vp"]
  t, _, _, x = gaussian_problem(sde, seed=2)
  denoised, score = exact_denoiser_and_score(sde, x, t)
  std = sde.marginal_coeffs(t)[1]
  p = param_lib.Reference()
  np.testing.assert_allclose(p.score(sde, batch_mul(-std, score), x, t, True), score, rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(p.denoised(sde, batch_mul(-std, score), x, t, True), denoised, rtol=1e-3,
                             atol=1e-3)


def test_edm_preconditioning_is_table_1():
  """Karras et al. 2022, Table 1 on VE (m = 1): c_in = 1 / sqrt(sigma^2 + sd^2), c_noise = ln(sigma) / 4."""
  sde = sde_lib.VESDE(0.002, 80.0)
  t = jnp.asarray([0.0, 0.3, 1.0])
  sigma = np.asarray(sde.sigma(t))
  x = jnp.ones((3, 2))
  x_in, labels = param_lib.EDM(sigma_data=0.5).network_inputs(sde, x, t, True)
  np.testing.assert_allclose(x_in[:, 0], 1.0 / np.sqrt(sigma**2 + 0.25), rtol=1e-5)
  np.testing.assert_allclose(labels, np.log(sigma) / 4, rtol=1e-5, atol=1e-6)
  # D = c_skip x + c_out F with F = 0: the skip connection alone, sd^2 / (sigma^2 + sd^2).
  np.testing.assert_allclose(param_lib.EDM().denoised(sde, jnp.zeros_like(x), x, t, True)[:, 0],
                             0.25 / (sigma**2 + 0.25), rtol=1e-5)


def test_scaled_inputs_have_unit_scale_and_reference_labels():
  for sde in SDES.values():
    t = jnp.asarray([0.01, 0.5, 1.0])
    mean_scale, std = sde.marginal_coeffs(t)
    x_in, labels = param_lib.Epsilon().network_inputs(sde, jnp.ones((3, 4)), t, True)
    np.testing.assert_allclose(x_in[:, 0], 1.0 / np.sqrt(mean_scale**2 + std**2), rtol=1e-6)
    np.testing.assert_array_equal(labels, param_lib.reference_labels(sde, t, True))


def tiny_mlp_config(parameterization="reference", sde="vpsde", dtype="float32"):
  config = ml_collections.ConfigDict()
  config.training = ml_collections.ConfigDict(dict(sde=sde, continuous=True))
  config.data = ml_collections.ConfigDict(dict(dim=3, centered=True))
  config.model = ml_collections.ConfigDict(dict(
      name="mlp", nf=16, num_res_blocks=1, embedding_type="fourier" if sde == "vesde" else "positional",
      embedding_dim=8, fourier_scale=16.0, scale_by_sigma=sde == "vesde", dropout=0.0, sigma_min=0.01,
      sigma_max=4.0, beta_min=0.1, beta_max=20.0, num_scales=100, parameterization=parameterization,
      dtype=dtype, sigma_data=0.5))
  return base_config.complete(config)


@pytest.mark.parametrize("name", NAMES)
def test_model_denoiser_and_score_agree_by_tweedie(name):
  """get_denoiser_fn and get_score_fn of one network are tied by D = (x + std^2 s) / m, for every convention."""
  config = tiny_mlp_config(name, sde="vesde" if name == "reference" else "vpsde")
  sde, _ = sde_lib.get_sde(config)
  model = models.get_model(config)
  assert isinstance(model.parameterization, param_lib.PARAMETERIZATIONS[name])
  variables = models.init_model(jax.random.key(0), config)
  t, _, _, x = gaussian_problem(sde, batch=8, dim=3)
  score = models.get_score_fn(sde, model, variables)(x, t)
  denoised = models.get_denoiser_fn(sde, model, variables)(x, t)
  tweedie = param_lib.tweedie_denoiser(lambda x, t: score, sde)(x, t)
  np.testing.assert_allclose(denoised, tweedie, rtol=1e-3, atol=1e-3 * np.abs(tweedie).max())
  assert np.abs(denoised).max() > 1e-3  # a real network output, not zeros


def test_reference_mlp_divides_by_sigma_outside_the_network():
  config = tiny_mlp_config("reference", sde="vesde")
  sde, _ = sde_lib.get_sde(config)
  model = models.get_model(config)
  variables = models.init_model(jax.random.key(0), config)
  x, t = jnp.ones((2, 3)), jnp.asarray([0.2, 0.9])
  raw = model.apply(variables, x, sde.sigma(t))
  np.testing.assert_allclose(models.get_score_fn(sde, model, variables)(x, t), raw / sde.sigma(t)[:, None],
                             rtol=1e-6)


def test_compute_dtype_is_applied_at_the_boundary():
  config = tiny_mlp_config("eps", dtype="bfloat16")
  sde, _ = sde_lib.get_sde(config)
  model = models.get_model(config)
  seen = []
  p = model.parameterization
  out = p.apply_network(lambda x, labels: seen.append(x.dtype) or x * 2, sde, jnp.ones((2, 3)),
                        jnp.asarray([0.5, 0.5]), True)
  assert seen == [jnp.bfloat16] and out.dtype == jnp.float32


def test_unknown_parameterization_or_dtype_names_the_key():
  with pytest.raises(ValueError,
                     match="model.parameterization=.*choose one of: autoencoder, average_velocity, consistency, edm, eps, flow, reference, trigflow, v, x0"):
    models.get_model(tiny_mlp_config("score"))
  with pytest.raises(ValueError, match="model.dtype"):
    models.get_model(tiny_mlp_config("eps", dtype="int8"))
  with pytest.raises(ValueError, match="parameterization='reference'"):
    param_lib.Reference().target(SDES["vp"], None, None, None)


@pytest.mark.parametrize("sde_name", sorted(SDES))
@pytest.mark.parametrize("name", TRAINABLE)
def test_output_from_denoised_inverts_denoised(name, sde_name):
  """`output_from_denoised` is the hand-derived optimal output, and `denoised` of it gives D back."""
  sde = SDES[sde_name]
  p = param_lib.PARAMETERIZATIONS[name]()
  t, _, _, x = gaussian_problem(sde, seed=3)
  denoised, _ = exact_denoiser_and_score(sde, x, t)
  output = p.output_from_denoised(sde, denoised, x, t, True)
  np.testing.assert_allclose(output, optimal_output(name, sde, x, t, denoised), rtol=2e-4, atol=1e-3)
  np.testing.assert_allclose(p.denoised(sde, output, x, t, True), denoised, rtol=2e-4, atol=2e-4)
