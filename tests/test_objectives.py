"""Training objectives against closed forms on Gaussian data x0 ~ N(MU, S^2 I).

With a model replaced by the exact denoiser (the Gaussian posterior mean), each objective's
expected loss has a closed-form minimum; Monte Carlo estimates must match it within 4.5 standard
errors. The ELBO is checked against the exact negative log-likelihood, sliced score matching
against Hyvarinen's identity, and the importance-sampled likelihood weighting against the plain one.
"""

import importlib
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from score_jax import elbo, objectives, noise_schedule, parameterization as param_lib, sde as sde_lib
from score_jax.objectives import dsm, edm, ssm, vdm
from score_jax.run_setup import validate_config
from score_jax.utils import batch_mul

MU, S = 0.3, 0.7
DIM = 4
SDES = {"vp": sde_lib.VPSDE(), "subvp": sde_lib.subVPSDE(), "ve": sde_lib.VESDE(sigma_max=20.0)}


def draw(seed, batch, dim=DIM):
  k1, k2, k3 = jax.random.split(jax.random.PRNGKey(seed), 3)
  x0 = MU + S * jax.random.normal(k1, (batch, dim))
  return x0, jax.random.normal(k2, (batch, dim)), k3


def posterior(sde, t):
  """(m, std, Var[x0 | x_t]) for Gaussian data."""
  mean_scale, std = sde.marginal_coeffs(t)
  return mean_scale, std, S**2 * std**2 / (mean_scale**2 * S**2 + std**2)


def exact_denoiser(sde):
  def denoiser_fn(x, t):
    mean_scale, std = sde.marginal_coeffs(t)
    gain = mean_scale * S**2 / (mean_scale**2 * S**2 + std**2)
    return MU + batch_mul(gain, x - batch_mul(mean_scale, jnp.full_like(x, MU)))
  return denoiser_fn


def exact_score(sde):
  def score_fn(x, t):
    mean_scale, std = sde.marginal_coeffs(t)
    return batch_mul(-1.0 / (mean_scale**2 * S**2 + std**2), x - batch_mul(mean_scale, jnp.full_like(x, MU)))
  return score_fn


def assert_mc(samples, expected, label=""):
  samples = np.asarray(samples, np.float64)
  se = samples.std() / np.sqrt(samples.size)
  assert abs(samples.mean() - expected) <= 4.5 * se + 1e-6, (label, samples.mean(), expected, se)


BATCH = 20000
T_FIXED = 0.3


@pytest.mark.parametrize("sde_name", sorted(SDES))
def test_dsm_minimum(sde_name):
  """lambda = std^2: E|std s* + z|^2 / D = m^2 S^2 / (m^2 S^2 + std^2) = m^2 Var[x0|x] / std^2."""
  sde = SDES[sde_name]
  x0, z, _ = draw(0, BATCH)
  t = jnp.full((BATCH,), T_FIXED)
  out = dsm.dsm_loss(exact_score(sde), sde, x0, t, z)
  mean_scale, std, var = posterior(sde, t[:1])
  assert_mc(out.per_example, float(mean_scale[0]**2 * var[0] / std[0]**2), sde_name)


@pytest.mark.parametrize("sde_name", sorted(SDES))
@pytest.mark.parametrize("name", ["eps", "x0", "v", "edm"])
def test_regression_minimum(name, sde_name):
  """|F* - target|^2 / D = (d target / d x0 at fixed x)^2 Var[x0 | x]: eps m^2/std^2, x0 1, v a^2/std^2, edm 1/c_out^2."""
  sde = SDES[sde_name]
  p = param_lib.PARAMETERIZATIONS[name]()
  x0, z, _ = draw(1, BATCH)
  t = jnp.full((BATCH,), T_FIXED)
  denoiser = exact_denoiser(sde)
  output_fn = lambda x, t: p.output_from_denoised(sde, denoiser(x, t), x, t, True)
  out = dsm.regression_loss(output_fn, p, sde, x0, t, z)
  m, std, var = (float(v[0]) for v in posterior(sde, t[:1]))
  sigma = std / m
  factor = {"eps": m**2 / std**2, "x0": 1.0, "v": (m**2 + std**2) / std**2,
            "edm": (sigma**2 + 0.25) / (sigma * 0.5) ** 2}[name]
  assert_mc(out.per_example, factor * var, name)


@pytest.mark.parametrize("sde_name", sorted(SDES))
def test_edm_minimum(sde_name):
  """lambda(sigma) E|D* - x0|^2 / D = lambda(sigma) S^2 sigma^2 / (S^2 + sigma^2) at each noise level."""
  sde = SDES[sde_name]
  x0, z, key = draw(2, BATCH)
  sigma = jnp.exp(-1.2 + 1.2 * jax.random.normal(key, (BATCH,)))
  out = edm.edm_loss(exact_denoiser(sde), sde, x0, sigma, z, sigma_data=0.5)
  # The per-example expectation given sigma; the residual (loss - its expectation) has mean 0.
  expected = (sigma**2 + 0.25) / (sigma * 0.5) ** 2 * S**2 * sigma**2 / (S**2 + sigma**2)
  assert_mc(out.per_example - expected, 0.0, sde_name)
  assert_mc(out.per_example / expected, 1.0, sde_name)


def test_edm_objective_with_edm_parameterization_is_plain_regression():
  """With EDM's preconditioning, lambda(sigma) |D - x0|^2 = |F - F_target|^2 (Karras et al. 2022, Eq. (8))."""
  sde = sde_lib.VESDE(sigma_min=0.002, sigma_max=80.0)
  p = param_lib.EDM(sigma_data=0.5)
  x0, z, key = draw(3, 64)
  sigma = jnp.exp(-1.2 + 1.2 * jax.random.normal(key, (64,)))
  output = jax.random.normal(jax.random.PRNGKey(9), x0.shape)
  t = sde.noise_level_to_t(sigma)
  denoiser = lambda x, t: p.denoised(sde, output, x, t, True)
  out = edm.edm_loss(denoiser, sde, x0, sigma, z, sigma_data=0.5)
  direct = jnp.mean(jnp.square(output - p.target(sde, x0, z, t)), axis=-1)
  np.testing.assert_allclose(out.per_example, direct, rtol=1e-4)


def wrong_score(sde):
  """A deliberately non-optimal, nonlinear score model."""
  def score_fn(x, t):
    return -jnp.tanh(1.3 * x) + 0.2 * jnp.roll(x, 1, axis=-1) ** 2 - 0.1 * x * t[:, None]
  return score_fn


@pytest.mark.parametrize("projection", ["rademacher", "gaussian"])
@pytest.mark.parametrize("model", ["exact", "wrong"])
def test_ssm_is_dsm_minus_the_dimension(model, projection):
  """Hyvarinen: E[|s|^2 + 2 tr ds/dx] = E|s - grad log p_0t|^2 - E|grad log p_0t|^2, i.e. SSM = DSM - 1 per dim."""
  sde = SDES["vp"]
  score_fn = (exact_score if model == "exact" else wrong_score)(sde)
  x0, z, key = draw(4, BATCH)
  t = jax.random.uniform(key, (BATCH,), minval=0.05, maxval=1.0)
  v_key = jax.random.fold_in(key, 1)
  v = (jax.random.rademacher(v_key, x0.shape, jnp.float32) if projection == "rademacher"
       else jax.random.normal(v_key, x0.shape))
  sliced = ssm.ssm_loss(score_fn, sde, x0, t, z, v).per_example
  denoising = dsm.dsm_loss(score_fn, sde, x0, t, z).per_example
  assert_mc(sliced - denoising, -1.0, model)


def linear_gamma_sde(gamma_0, gamma_1):
  return sde_lib.GammaVPSDE(gamma_fn=lambda t: (gamma_0 + (gamma_1 - gamma_0) * t, jnp.full_like(t, gamma_1 - gamma_0)))


def closed_form_elbo(gamma_0, gamma_1):
  """Per dimension, for the exact denoiser of N(MU, S^2) on any schedule from gamma_0 to gamma_1.

  Diffusion: 1/2 int -SNR' S^2 / (1 + SNR S^2) dt = 1/2 log((1 + SNR_0 S^2) / (1 + SNR_1 S^2));
  reconstruction: 1/2 (log(2 pi sigma_0^2) + 1); prior: KL(N(m_1 x0, std_1^2) || N(0, 1)) averaged over x0.
  """
  snr_0, snr_1 = np.exp(-gamma_0), np.exp(-gamma_1)
  diffusion = 0.5 * np.log((1 + snr_0 * S**2) / (1 + snr_1 * S**2))
  recon = 0.5 * (np.log(2 * np.pi * np.exp(gamma_0)) + 1.0)
  m2, var = 1 / (1 + np.exp(gamma_1)), 1 / (1 + np.exp(-gamma_1))
  prior = 0.5 * (var + m2 * (MU**2 + S**2) - 1.0 - np.log(var))
  return diffusion + recon + prior


def exact_nll():
  return 0.5 * np.log(2 * np.pi * np.e * S**2)


def test_elbo_bounds_the_nll_and_is_tight_on_a_wide_schedule():
  assert closed_form_elbo(-3.0, 3.0) > exact_nll() + 0.01  # a narrow schedule leaves a gap
  wide = closed_form_elbo(-13.3, 12.0)
  assert exact_nll() <= wide <= exact_nll() + 0.01, (wide, exact_nll())


@pytest.mark.parametrize("schedule", ["linear", "learned", "vp"])
def test_elbo_estimate_matches_closed_form(schedule):
  """The Monte Carlo ELBO (antithetic times) equals the closed form; on a learned schedule the bound
  depends on its endpoints only (VDM Eq. (15)); on the VP SDE from t0 = 1e-5, with times importance-
  sampled in log-SNR (what evaluation uses), and with a smaller spread than uniform times."""
  gamma_0, gamma_1 = -13.3, 12.0
  if schedule == "vp":
    sde, t0 = SDES["vp"], 1e-5
    gamma_0, gamma_1 = (float(2 * np.log(sde.noise_level(jnp.float32(t)))) for t in (t0, 1.0))
    x0, z_t, key = draw(6, BATCH)
    z_0 = jax.random.normal(jax.random.fold_in(key, 1), x0.shape)
    t, inverse_density = elbo.importance_times(elbo.antithetic_uniforms(key, BATCH), sde, t0)
    total = elbo.per_dim(sum(elbo.elbo_terms(exact_denoiser(sde), sde, x0, t, z_t, z_0, t0, None, inverse_density)),
                         x0.shape[1:])
    assert_mc(total, closed_form_elbo(gamma_0, gamma_1), schedule)
    uniform = elbo.per_dim(sum(elbo.elbo_terms(exact_denoiser(sde), sde, x0, elbo.antithetic_times(key, BATCH, t0, 1.0),
                                               z_t, z_0, t0)), x0.shape[1:])
    assert float(jnp.std(total)) < 0.2 * float(jnp.std(uniform)), (jnp.std(total), jnp.std(uniform))
    return
  if schedule == "linear":
    sde = linear_gamma_sde(gamma_0, gamma_1)
  else:
    template = sde_lib.LearnedVPSDE(gamma_min=gamma_0, gamma_max=gamma_1, features=32)
    params = template.init_params(jax.random.PRNGKey(5))
    params["noise_schedule"]["shape"]["out"]["kernel"] *= 200.0  # a strongly non-linear shape
    sde = template.bind({"params": params})
  x0, z_t, key = draw(6, BATCH)
  z_0 = jax.random.normal(jax.random.fold_in(key, 1), x0.shape)
  t = elbo.antithetic_times(key, BATCH, 0.0, 1.0)
  terms = elbo.elbo_terms(exact_denoiser(sde), sde, x0, t, z_t, z_0, 0.0)
  total = elbo.per_dim(sum(terms), x0.shape[1:])
  assert_mc(total, closed_form_elbo(gamma_0, gamma_1), schedule)
  assert float(jnp.mean(total)) >= exact_nll() - 4.5 * float(jnp.std(total)) / np.sqrt(BATCH)


def test_prior_and_reconstruction_terms():
  """Per example, in closed form: KL(N(m_1 x0, std_1^2) || N(0, 1)) and the Gaussian decoder's expected NLL."""
  sde = linear_gamma_sde(-4.0, 2.0)
  x0, z, _ = draw(9, 16)
  m2, var = 1 / (1 + np.exp(2.0)), 1 / (1 + np.exp(-2.0))
  expected_kl = 0.5 * np.sum(var + m2 * np.asarray(x0) ** 2 - 1.0 - np.log(var), axis=-1)
  np.testing.assert_allclose(elbo.prior_kl(sde, x0), expected_kl, rtol=1e-5)
  expected_recon = 0.5 * DIM * (np.log(2 * np.pi * np.exp(-4.0)) + 1.0)
  np.testing.assert_allclose(elbo.reconstruction_nll(sde, x0, 0.0, z), np.full(16, expected_recon), rtol=1e-5)
  ve = sde_lib.VESDE(sigma_min=0.01, sigma_max=5.0)  # prior N(0, 25)
  kl = 0.5 * np.sum(1.0 + np.asarray(x0) ** 2 / 25.0 - 1.0, axis=-1)
  np.testing.assert_allclose(elbo.prior_kl(ve, x0), kl, rtol=1e-5, atol=1e-6)


def _hand_decoder_nll(level, z0, spacing_units=1.0, count=256):
  """-log p(level | v_level + sigma z0) of VDM's decoder when sigma is `spacing_units` level spacings:
  the logits are -(level - j + z0)^2 / (2 spacing_units^2) over the levels j, written out term by term."""
  logits = [-((level - j) / spacing_units + z0) ** 2 / 2.0 for j in range(count)]
  top = max(logits)
  return top + np.log(sum(np.exp(v - top) for v in logits)) - logits[level]


def test_discretised_decoder_hand_computed():
  """With sigma(t0) one level spacing and the noisy point on its level, -log p = log sum_n exp(-n^2 / 2):
  log sqrt(2 pi) inside the range (Jacobi's theta sum; its correction is 2 e^(-2 pi^2) ~ 5e-9) and
  log((1 + sqrt(2 pi)) / 2) + O(e^-2 pi^2) at an end level; it sharpens as sigma -> 0."""
  levels = elbo.PixelLevels(-1.0, 1.0, 256)
  spacing = 2.0 / 255.0
  sde = linear_gamma_sde(2.0 * np.log(spacing), 10.0)  # sigma(0) = exp(gamma_0 / 2) = one spacing
  x0 = levels.values()[jnp.array([[0], [128], [255]])]
  nll = np.asarray(elbo.reconstruction_nll(sde, x0, 0.0, jnp.zeros_like(x0), levels))
  inside, end = np.log(np.sqrt(2 * np.pi)), np.log((1.0 + np.sqrt(2 * np.pi)) / 2.0)
  np.testing.assert_allclose(nll, [end, inside, end], atol=2e-5)  # float32 levels and sigma
  sharp = elbo.reconstruction_nll(linear_gamma_sde(-16.0, 10.0), x0, 0.0, jnp.zeros_like(x0), levels)
  assert float(jnp.max(sharp)) < 1e-4


def test_vdm_loss_decodes_8bit_images_by_hand():
  """Inside the `vdm` objective on an image batch: the reconstruction term (nats per dimension) of pixels
  at known levels and known decoder noise equals the hand-computed softmax over the 256 levels."""
  levels = elbo.PixelLevels(-1.0, 1.0, 256)
  spacing = 2.0 / 255.0
  sde = linear_gamma_sde(2.0 * np.log(2.0 * spacing), 10.0)  # sigma(0) = two level spacings
  pixel_levels = np.array([[[0, 17], [128, 255]], [[3, 254], [100, 1]]])  # (B, H, W), one channel
  x = levels.values()[jnp.asarray(pixel_levels)][..., None]
  decoder_noise = jnp.asarray(np.array([[[0.0, 0.5], [-1.25, 0.3]], [[2.0, -0.7], [0.0, 1.5]]]))[..., None]
  objective = objectives.OBJECTIVES["vdm"](sde=sde, model=None, settings=objectives.LossConfig(objective="vdm"),
                                           pixel_levels=levels)
  call = types.SimpleNamespace(sde=sde, denoiser_fn=lambda: (lambda x_t, t: x_t))
  draws = {"noise": jnp.zeros_like(x), "decoder_noise": decoder_noise, "time": jnp.array([0.25, 0.75])}
  out = objective.loss(call, x, draws)
  expected = [np.mean([_hand_decoder_nll(int(k), float(z), 2.0) for k, z in
                       zip(pixel_levels[b].ravel(), np.asarray(decoder_noise[b]).ravel())]) for b in range(2)]
  np.testing.assert_allclose(out.terms["reconstruction"], expected, rtol=1e-5)
  total = sum(out.terms.values())
  np.testing.assert_allclose(out.per_example, total, rtol=1e-6)


def test_vdm_refuses_dequantised_pixels():
  config = importlib.import_module("configs.vdm.digits").get_config()
  config.data.uniform_dequantization = True
  with pytest.raises(ValueError, match="data.uniform_dequantization=True"):
    validate_config(config)


def test_learned_schedule_is_monotone_with_learned_endpoints():
  template = sde_lib.LearnedVPSDE(gamma_min=-10.0, gamma_max=6.0, features=64)
  for seed in range(3):
    params = template.init_params(jax.random.PRNGKey(seed))
    params = jax.tree_util.tree_map(lambda p: p * 50.0 * jax.random.normal(jax.random.PRNGKey(seed + 7), p.shape), params)
    t = jnp.linspace(0.0, 1.0, 2001)
    gamma, rate = noise_schedule.gamma_and_rate(params["noise_schedule"], t)
    assert bool(jnp.all(jnp.diff(gamma) >= 0)) and bool(jnp.all(rate >= 0))
    g0, g1 = noise_schedule.endpoints(params["noise_schedule"])
    np.testing.assert_allclose([gamma[0], gamma[-1]], [g0, g1], rtol=1e-5, atol=1e-4)


def test_learned_schedule_gets_the_variance_gradient():
  """The shape's gradient through the training loss is that of E[L_diff^2] (VDM Sec. 5.1), computed
  here by plain autodiff; the network's and the endpoints' are those of the bound."""
  from score_jax.models import get_denoiser_fn, init_model, get_model
  from tests.helpers import tiny_toy_config

  config = tiny_toy_config()
  config.training.sde, config.training.objective, config.model.parameterization = "learned_vpsde", "vdm", "eps"
  config.model.schedule_features = 16
  model, template = get_model(config), sde_lib.get_sde(config)[0]
  variables = init_model(jax.random.PRNGKey(0), config)
  variables["params"] = {**variables["params"], **template.init_params(jax.random.PRNGKey(1))}
  x0, z_t, key = draw(8, 32, dim=2)
  z_0 = jax.random.normal(key, x0.shape)
  t = elbo.antithetic_times(jax.random.fold_in(key, 1), 32, 0.0, 1.0)

  def plain_terms(params):
    sde = template.bind({"params": params})
    denoiser_fn = get_denoiser_fn(sde, model, {**variables, "params": params})
    prior, recon, diffusion = elbo.elbo_terms(denoiser_fn, sde, x0, t, z_t, z_0, 0.0)
    return prior + recon + diffusion, diffusion

  def trained(params):
    return jnp.mean(vdm.learned_schedule_elbo(model, template, {**variables, "params": params}, x0, t, z_t,
                                                 z_0, None, train=False, rng=None)[0])

  params = variables["params"]
  grads = jax.grad(trained)(params)
  bound_grads = jax.grad(lambda p: jnp.mean(plain_terms(p)[0]))(params)
  variance_grads = jax.grad(lambda p: jnp.mean(plain_terms(p)[1] ** 2))(params)
  np.testing.assert_allclose(float(jnp.mean(plain_terms(params)[0])), float(trained(params)), rtol=1e-5)
  largest = lambda tree: max(float(jnp.max(jnp.abs(leaf))) for leaf in jax.tree_util.tree_leaves(tree))
  scale = largest(variance_grads["noise_schedule"]["shape"])
  shape_close = lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-3, atol=1e-4 * scale)
  jax.tree_util.tree_map(shape_close, grads["noise_schedule"]["shape"], variance_grads["noise_schedule"]["shape"])
  close = lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-3, atol=1e-4 * float(jnp.max(jnp.abs(b))))
  for name in ("gamma_0", "gamma_1"):
    close(grads["noise_schedule"][name], bound_grads["noise_schedule"][name])
  network = lambda g: {k: v for k, v in g.items() if k != "noise_schedule"}
  jax.tree_util.tree_map(close, network(grads), network(bound_grads))


def test_importance_sampling_same_expectation_lower_variance():
  """Song et al. 2021b: t ~ q(t) with weight 1 / q has the plain likelihood weighting's mean, and less variance."""
  sde = SDES["vp"]
  score_fn = wrong_score(sde)
  x0, z, key = draw(7, BATCH)
  u = jax.random.uniform(key, (BATCH,))
  eps = 1e-5
  t_plain = eps + u * (1.0 - eps)
  plain = dsm.dsm_loss(score_fn, sde, x0, t_plain, z, likelihood_weighting=True).per_example
  t_is, inverse_density = elbo.importance_times(u, sde, eps)
  weighted = dsm.dsm_loss(score_fn, sde, x0, t_is, z, likelihood_weighting=True,
                             time_weight=inverse_density / (1.0 - eps)).per_example
  se = np.sqrt(np.var(plain) / BATCH + np.var(weighted) / BATCH)
  assert abs(float(np.mean(plain) - np.mean(weighted))) <= 4.5 * se, (np.mean(plain), np.mean(weighted), se)
  assert np.var(weighted) < 0.5 * np.var(plain), (np.var(weighted), np.var(plain))
  assert bool(jnp.all((t_is >= eps * 0.999) & (t_is <= 1.0 + 1e-6)))


# ------------------------------------------------------------------------------- training, end to end

TRAINING_CASES = {  # the regression targets and SSM train in benchmarks/objectives.py; their losses are tested above
    "dsm-v": dict(objective="dsm", parameterization="v"),
    "dsm-lw-is": dict(objective="dsm", likelihood_weighting=True, importance_sampling=True),
    "edm-ve": dict(objective="edm", parameterization="edm", sde="vesde"),
    "ssm-gaussian": dict(objective="ssm", ssm_projection="gaussian"),
    "vdm-learned": dict(objective="vdm", parameterization="eps", sde="learned_vpsde"),
}
TRAINED_IN_TESTS = ("dsm-lw-is", "edm-ve", "vdm-learned")


def training_config(case):
  from tests.helpers import tiny_toy_config

  options = dict(TRAINING_CASES[case])
  config = tiny_toy_config()
  config.model.parameterization = options.pop("parameterization", "reference")
  config.training.sde = options.pop("sde", "vpsde")
  config.model.schedule_features = 16
  config.optim.lr = 3e-3
  config.optim.warmup = 0
  for key, value in options.items():
    config.training[key] = value
  return config


@pytest.mark.parametrize("case", TRAINED_IN_TESTS)
def test_objectives_train(case):
  """60 steps through the real train step lower the objective on held-out data (fixed noise, raw parameters)."""
  from score_jax.run_setup import RunSetup

  config = training_config(case)
  run = RunSetup(config)
  state = run.init_state()
  held_out = jnp.concatenate([run.scaler(b) for b in run.dataset.eval_batches()])
  loss_fn = jax.jit(objectives.get_loss_fn(run.objective, train=False))
  held_out_loss = lambda state: float(loss_fn(jax.random.PRNGKey(3), state.variables(ema=False), held_out).loss)
  before = held_out_loss(state)
  for step in range(0, 60, config.training.n_jitted_steps):
    state, block = run.multi_step(state, run.train_batches(step))
    assert np.all(np.isfinite(np.asarray(block))), (case, step)
  assert held_out_loss(state) < before, (case, before, held_out_loss(state))


def test_learned_schedule_trains_monotone_and_samples():
  """A VDM model: the schedule moves and stays monotone; the samplers that invert its noise level (by
  bisection) run on it (tests/test_evaluate.py runs PC sampling and the ODE likelihood of a VDM run)."""
  from score_jax import sampling
  from score_jax.models import get_score_fn
  from score_jax.run_setup import RunSetup

  config = training_config("vdm-learned")
  run = RunSetup(config)
  state = run.init_state()
  before = jax.device_get(state.params["noise_schedule"])  # the train step donates the state
  for step in range(0, 20, config.training.n_jitted_steps):
    state, _ = run.multi_step(state, run.train_batches(step))
  after = state.params["noise_schedule"]
  assert float(jnp.abs(after["gamma_1"] - before["gamma_1"])) > 0
  assert float(jnp.max(jnp.abs(after["shape"]["hidden"]["kernel"] - before["shape"]["hidden"]["kernel"]))) > 0
  gamma, rate = noise_schedule.gamma_and_rate(after, jnp.linspace(0.0, 1.0, 1001))
  assert bool(jnp.all(jnp.diff(gamma) >= 0)) and bool(jnp.all(rate >= 0))
  variables = state.variables()
  sde = run.sde.bind(variables)
  score_fn = get_score_fn(sde, run.model, variables)
  for method, options in [("dpm_solver", dict(steps=6)), ("heun", dict(steps=4))]:
    out = sampling.sample(jax.random.PRNGKey(0), score_fn, sde, (16, 2), method=method, **options)
    assert bool(jnp.all(jnp.isfinite(out.samples))), method


def test_edm_preconditioning_feeds_a_fourier_network_its_log_noise():
  """NCSN++'s Fourier features embed log(labels): under edm it gets exp(c_noise), so it embeds c_noise."""
  from score_jax.models import get_model

  config = _tiny_ncsnpp_config()
  config.model.parameterization = "edm"
  model = get_model(config)
  assert model.parameterization.log_embedding
  sde = sde_lib.VESDE(sigma_min=0.002, sigma_max=80.0)
  t = jnp.asarray([1e-5, 0.3])  # sigma 0.002 and ~0.05: c_noise < 0
  _, labels = model.parameterization.network_inputs(sde, jnp.zeros((2, 8, 8, 1)), t, True)
  np.testing.assert_allclose(np.log(labels), 0.25 * np.log(sde.sigma(t)), rtol=1e-5)
  config.model.embedding_type = "positional"
  assert not get_model(config).parameterization.log_embedding


def _tiny_ncsnpp_config():
  from configs.ve import cifar10_ncsnpp_continuous

  config = cifar10_ncsnpp_continuous.get_config()
  config.data.image_size, config.data.num_channels = 8, 1
  config.model.nf, config.model.ch_mult, config.model.num_res_blocks = 8, (1, 2), 1
  config.model.attn_resolutions = (4,)
  return config


def test_bad_objective_settings_name_the_key():
  from score_jax.run_setup import validate_config

  config = training_config("dsm-v")
  config.training.objective = "score_matching"
  with pytest.raises(ValueError, match="training.objective=.*dsm, edm, meanflow, reflow, scm, ssm, vdm"):
    validate_config(config)
  config = training_config("dsm-v")
  config.training.importance_sampling = True
  with pytest.raises(ValueError, match="training.importance_sampling"):
    validate_config(config)
  config = training_config("dsm-v")
  config.training.sde = "learned_vpsde"
  with pytest.raises(ValueError, match="learned_vpsde"):
    validate_config(config)
  config = training_config("edm-ve")
  config.training.continuous = False
  config.model.parameterization = "reference"
  with pytest.raises(ValueError, match="needs training.continuous=True"):
    validate_config(config)
