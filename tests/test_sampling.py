"""Samplers against closed-form scores (Gaussian, Gaussian mixture) and the reference's recorded runs."""

import json
import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from score_jax import base_config, models, sampling
from score_jax import sde as sde_lib
from score_jax.parameterization import ScoreFunction, denoiser_of, network_evaluations_of, tweedie
from tests.helpers import FIXTURES, ReferenceToyModel

# ----------------------------------------------------------------------------- closed-form scores

DIM = 16
MU = np.linspace(-1.0, 1.0, DIM).astype(np.float32)
SCALE = np.linspace(0.5, 1.0, DIM).astype(np.float32)


def gaussian_score_fn(sde, mu=MU, scale=SCALE):
  """Exact score of N(mu, diag(scale^2)) perturbed by the SDE: -(x - m mu) / (m^2 s^2 + std^2)."""
  def score_fn(x, t):
    m = sde.marginal_prob(jnp.ones_like(x), t)[0]
    std = sde.marginal_prob(x, t)[1][:, None]
    return -(x - m * mu) / (m**2 * scale**2 + std**2)
  return score_fn


def mixture_score_fn(sde, weights, means, scales):
  """Exact score of a perturbed 1-D Gaussian mixture: responsibilities times component scores."""
  weights, means, scales = (jnp.asarray(v, jnp.float32) for v in (weights, means, scales))

  def score_fn(x, t):
    m = sde.marginal_prob(jnp.ones_like(x), t)[0]          # (B, 1)
    std = sde.marginal_prob(x, t)[1][:, None]               # (B, 1)
    var = m**2 * scales**2 + std**2                         # (B, K)
    log_joint = jnp.log(weights) - 0.5 * (x - m * means)**2 / var - 0.5 * jnp.log(var)
    resp = jax.nn.softmax(log_joint, axis=-1)
    return jnp.sum(resp * -(x - m * means) / var, axis=-1, keepdims=True)
  return score_fn


VP, SUBVP, VE = sde_lib.VPSDE(N=500), sde_lib.subVPSDE(N=500), sde_lib.VESDE(sigma_max=20.0, N=500)
RF, COSINE = sde_lib.RectifiedFlow(N=500), sde_lib.CosinePath(N=500)  # flow matching's paths
EPS = {VP: 1e-3, SUBVP: 1e-3, VE: 1e-5, RF: 1e-3, COSINE: 1e-3}
NUM_SAMPLES = 8192


def assert_matches_gaussian(x, discretisation, mean=MU, std=SCALE):
  """Mean within 4.5 standard errors; std within 4.5 standard errors plus the discretisation bias."""
  n = x.shape[0]
  mean_error = np.abs(x.mean(0) - mean) / (std / math.sqrt(n))
  assert mean_error.max() < 4.5, mean_error
  std_error = np.abs(x.std(0) / std - 1)
  assert std_error.max() < 4.5 / math.sqrt(2 * n) + discretisation, std_error


# N = 500 steps: the predictors' discretisation error of the std is well under 2%. The Langevin
# corrector is biased too: unadjusted Langevin with step eps targets a Gaussian of variance
# s^2 / (1 - eps / (2 s^2)); with eps = 2 snr^2 D / sum(s^-2) ~ 0.026 here, the narrowest
# dimension's std comes out ~2.7% too large, whence 3.5% with a corrector.
@pytest.mark.parametrize("sde,predictor,corrector,probability_flow", [
    (VP, "reverse_diffusion", "langevin", False),
    (VP, "euler_maruyama", "none", False),
    (VP, "ancestral_sampling", "none", False),
    (VP, "euler_maruyama", "none", True),
    (SUBVP, "euler_maruyama", "langevin", False),
    (SUBVP, "reverse_diffusion", "none", True),
    (VE, "reverse_diffusion", "langevin", False),
    (VE, "reverse_diffusion", "none", False),
    (VE, "ancestral_sampling", "none", False),
    (RF, "reverse_diffusion", "langevin", False),
    (COSINE, "euler_maruyama", "none", True),
], ids=lambda v: type(v).__name__ if isinstance(v, sde_lib.SDE) else str(v))
def test_pc_sample_recovers_gaussian(sde, predictor, corrector, probability_flow):
  out = sampling.pc_sample(jax.random.key(0), gaussian_score_fn(sde), sde, (NUM_SAMPLES, DIM),
                           predictor=predictor, corrector=corrector, probability_flow=probability_flow,
                           eps=EPS[sde])
  assert_matches_gaussian(np.asarray(out.samples), discretisation=0.035 if corrector == "langevin" else 0.02)
  assert int(out.nfe) == sde.N * ((predictor != "none") + (corrector != "none"))


@pytest.mark.parametrize("sde", [VP, VE], ids=["VPSDE", "VESDE"])
def test_ode_sample_recovers_gaussian(sde):
  # The probability-flow map of a Gaussian is affine: x_0 = mu + (x_T - m_T mu) s / v_T with
  # v_T^2 = m_T^2 s^2 + std_T^2. The prior N(0, prior_std^2) is not exactly p_T (VE keeps the mean
  # mu), so the deterministic sampler's output has mean mu - m_T mu s / v_T, std s prior_std / v_T:
  # 1-5% off for VE at sigma_max = 20, which the test resolves. Adaptive solve at 1e-5: the
  # transport error is far below the sampling error.
  t_max = jnp.full((1,), sde.T)
  m_max, std_max = float(sde.marginal_prob(jnp.ones((1,)), t_max)[0][0]), float(sde.marginal_prob(t_max, t_max)[1][0])
  prior_std = getattr(sde, "sigma_max", 1.0)
  v_max = np.sqrt(m_max**2 * SCALE**2 + std_max**2)
  out = sampling.ode_sample(jax.random.key(1), gaussian_score_fn(sde), sde, (NUM_SAMPLES, DIM), eps=EPS[sde],
                            denoise=True)
  assert_matches_gaussian(np.asarray(out.samples), discretisation=0.005, mean=MU - m_max * MU * SCALE / v_max,
                          std=SCALE * prior_std / v_max)
  assert 20 < int(out.nfe) < 400


def test_pc_sample_recovers_mixture_weights():
  # Unequal weights: a sampler that loses mass between modes (e.g. no corrector with a biased
  # score) would miss 0.3 / 0.7. Standard error of the fraction: sqrt(0.21 / n) = 0.005.
  sde = sde_lib.VESDE(sigma_max=10.0, N=500)
  score_fn = mixture_score_fn(sde, [0.3, 0.7], [-2.0, 2.0], [0.4, 0.6])
  x = np.asarray(sampling.pc_sample(jax.random.key(2), score_fn, sde, (NUM_SAMPLES, 1), eps=1e-5).samples)[:, 0]
  assert abs((x > 0).mean() - 0.7) < 4.5 * math.sqrt(0.21 / NUM_SAMPLES) + 0.01
  for sign, mean, scale in [(-1, -2.0, 0.4), (1, 2.0, 0.6)]:
    mode = x[sign * x > 0]
    assert abs(mode.mean() - mean) < 4.5 * scale / math.sqrt(mode.size) + 0.01
    assert abs(mode.std() / scale - 1) < 4.5 / math.sqrt(2 * mode.size) + 0.03


def test_sample_i_does_not_depend_on_batch_size():
  sde = sde_lib.VESDE(sigma_max=20.0, N=20)
  score_fn = gaussian_score_fn(sde)
  for options in [dict(corrector="langevin", langevin_norm="sample"),
                  dict(predictor="ancestral_sampling", corrector="ald")]:
    big = sampling.pc_sample(jax.random.key(3), score_fn, sde, (8, DIM), **options).samples
    small = sampling.pc_sample(jax.random.key(3), score_fn, sde, (4, DIM), **options).samples
    np.testing.assert_allclose(big[3], small[3], rtol=1e-6, atol=1e-6, err_msg=str(options))
    assert not np.allclose(big[3], big[2])


def test_samplers_do_not_retrace():
  traces = []
  sde = sde_lib.VPSDE(N=50)

  def score_fn(x, t):
    traces.append(None)
    return -x

  for sampler in [sampling.pc_sample, sampling.ode_sample]:
    sampler(jax.random.key(0), score_fn, sde, (4, 2))
    count = len(traces)
    out = sampler(jax.random.key(1), score_fn, sde, (4, 2))
    assert len(traces) == count and count > 0
    assert np.isfinite(out.samples).all()


def test_an_equal_score_function_object_does_not_retrace():
  """The samplers' jit takes score_fn as static: a new `ScoreFunction` equal to the last one reuses its trace."""
  traces = []
  sde = sde_lib.VPSDE(N=10)

  def score(x, t):
    traces.append(None)
    return -x

  for method, options in [("pc", {}), ("ddim", dict(steps=3))]:
    first = sampling.sample(jax.random.key(0), ScoreFunction(score, network_evaluations=2), sde, (4, 2),
                            method=method, **options)
    count = len(traces)
    second = sampling.sample(jax.random.key(1), ScoreFunction(score, network_evaluations=2), sde, (4, 2),
                             method=method, **options)
    assert len(traces) == count > 0, method
    assert int(second.nfe) == int(first.nfe) and not np.allclose(first.samples, second.samples)
  sampling.ddim_sample(jax.random.key(1), ScoreFunction(score, network_evaluations=1), sde, (4, 2), steps=3)
  assert len(traces) > count  # a different object is a different program


def test_network_evaluations_of_a_guided_score_object_and_of_a_plain_function():
  from tests.test_guidance import MODEL, SDE  # a class-conditional model in closed form
  labels, x, t = jnp.zeros(4, jnp.int32), jnp.ones((4, 2)), jnp.full((4,), 0.5)
  guided = models.get_score_fn(SDE, MODEL, {}, class_labels=labels, guidance_scale=1.5)
  unguided = models.get_score_fn(SDE, MODEL, {}, class_labels=labels)
  plain = lambda x, t: -x
  assert isinstance(guided, ScoreFunction) and (guided.network_evaluations, unguided.network_evaluations) == (2, 1)
  assert (network_evaluations_of(guided), network_evaluations_of(plain)) == (2, 1)
  # The model's own denoiser for the object; Tweedie's formula for the plain function.
  np.testing.assert_allclose(denoiser_of(guided, SDE)(x, t),
                             models.get_denoiser_fn(SDE, MODEL, {}, class_labels=labels, guidance_scale=1.5)(x, t))
  np.testing.assert_allclose(denoiser_of(plain, SDE)(x, t), tweedie(SDE, x, t, -x))
  nfe = {name: int(sampling.ddim_sample(jax.random.key(0), fn, SDE, (4, 2), steps=3).nfe)
         for name, fn in [("guided", guided), ("unguided", unguided), ("plain", plain)]}
  assert nfe == {"guided": 6, "unguided": 3, "plain": 3}


def tiny_config(method="pc"):
  config = ml_collections.ConfigDict()
  config.training = ml_collections.ConfigDict(dict(sde="vpsde", continuous=True))
  config.sampling = ml_collections.ConfigDict(dict(
      method=method, predictor="reverse_diffusion", corrector="langevin", snr=0.16, n_steps_each=1,
      noise_removal=True, probability_flow=False, rtol=1e-3, atol=1e-3))
  config.data = ml_collections.ConfigDict(dict(dim=2))
  config.model = ml_collections.ConfigDict(dict(
      name="mlp", nf=16, num_res_blocks=1, embedding_type="positional", embedding_dim=8, fourier_scale=16.0,
      scale_by_sigma=False, dropout=0.0, sigma_min=0.01, sigma_max=4.0, beta_min=0.1, beta_max=20.0,
      num_scales=40))  # beta_max / N < 1: the DDPM discretisation needs sqrt(1 - beta_i)
  return base_config.complete(config)


@pytest.mark.parametrize("method", ["pc", "ode"])
def test_get_sampling_fn_runs_the_model_without_retracing(method):
  config = tiny_config(method)
  sde = sde_lib.VPSDE(N=config.model.num_scales)
  model = models.get_model(config)
  variables = models.init_model(jax.random.key(0), config)
  sample_fn = sampling.get_sampling_fn(config, sde, model, (6, 2), lambda x: (x + 1) / 2, eps=1e-3)
  first = sample_fn(jax.random.key(1), variables)
  second = sample_fn(jax.random.key(2), jax.tree.map(lambda v: v * 1.01, variables))
  assert sample_fn.jitted._cache_size() == 1  # one trace for both (the inverse scaler runs after the program)
  assert first.samples.shape == (6, 2) and np.isfinite(second.samples).all()
  assert not np.allclose(first.samples, second.samples)
  if method == "pc":
    assert int(first.nfe) == 2 * config.model.num_scales


def test_bad_names_raise_value_errors_listing_choices():
  sde, score_fn, key = sde_lib.VPSDE(N=5), lambda x, t: -x, jax.random.key(0)
  with pytest.raises(ValueError, match="euler_maruyama, none, reverse_diffusion"):
    sampling.pc_sample(key, score_fn, sde, (2, 2), predictor="euler")
  with pytest.raises(ValueError, match="ald, langevin, none"):
    sampling.pc_sample(key, score_fn, sde, (2, 2), corrector="Langevin")
  with pytest.raises(ValueError, match="batch, sample"):
    sampling.pc_sample(key, score_fn, sde, (2, 2), langevin_norm="device")
  with pytest.raises(ValueError, match="ode, pc"):
    sampling.sample(key, score_fn, sde, (2, 2), method="ddpm")
  with pytest.raises(ValueError, match="n_step"):
    sampling.sample(key, score_fn, sde, (2, 2), method="pc", n_step=2)
  with pytest.raises(ValueError, match="subVPSDE"):
    sampling.pc_sample(key, score_fn, sde_lib.subVPSDE(N=5), (2, 2), predictor="ancestral_sampling")
  with pytest.raises(ValueError, match="probability_flow"):
    sampling.pc_sample(key, score_fn, sde, (2, 2), predictor="ancestral_sampling", probability_flow=True)
  config = tiny_config()
  config.sampling.corrector = "mala"
  with pytest.raises(ValueError, match="ald, langevin, none"):
    sampling.get_sampling_fn(config, sde, None, (2, 2), lambda x: x, eps=1e-3)


def test_sample_dispatches_to_ode():
  sde = sde_lib.VPSDE(N=5)
  out = sampling.sample(jax.random.key(0), lambda x, t: -x, sde, (3, 2), method="ode", rtol=1e-3, atol=1e-3)
  assert out.samples.shape == (3, 2) and int(out.nfe) > 0


# ------------------------------------------------------------------- replays of the reference

TOY_SDES = {"vp": sde_lib.VPSDE(0.1, 20.0, 10), "subvp": sde_lib.subVPSDE(0.1, 20.0, 10),
            "ve": sde_lib.VESDE(0.01, 50.0, 10)}
CASES = json.loads((FIXTURES / "toy_pipelines.json").read_text())["cases"]  # the case list, at collection


def toy_score_fn(sde, continuous):
  """The fixture's analytic model tanh(0.5 x) + 0.001 labels, through the reference parameterization."""
  return models.get_score_fn(sde, ReferenceToyModel(), {}, continuous=continuous)


class Replay:
  """A `noise_fn` that returns the recorded draws in order (NCHW is fine: every op is elementwise)."""

  def __init__(self, draws):
    self.draws = list(draws)

  def __call__(self, keys, x):
    z = self.draws.pop(0)
    assert z.shape == x.shape
    return jnp.asarray(z)


def draws_of(toy, name):
  return [toy[key] for _, key, _ in CASES[name]["random_draws_in_order"]]


def cases(prefix):
  return sorted(name for name, case in CASES.items() if name.startswith(prefix) and "outputs" in case)


@pytest.fixture(scope="module")
def toy(refcheck):
  return refcheck("toy_pipelines")


@pytest.mark.parametrize("name", cases("step/"))
def test_replays_reference_step(toy, name):
  _, sde_name, cont, method, *pf = name.split("/")
  sde, continuous = TOY_SDES[sde_name], cont == "cont1"
  score_fn, noise_fn = toy_score_fn(sde, continuous), Replay(draws_of(toy, name))
  if method in sampling.PREDICTORS:
    update_fn = sampling.PREDICTORS[method](sde, score_fn, probability_flow=pf == ["pf1"], noise_fn=noise_fn)
  else:  # the fixture's correctors: snr 0.16, 2 steps, the reference's batch-mean norms
    update_fn = sampling.CORRECTORS[method](sde, score_fn, 0.16, 2, noise_fn=noise_fn, langevin_norm="batch")
  with jax.disable_jit():  # the corrector's fori_loop runs in Python, drawing in order
    keys = sampling.per_sample_keys(jax.random.key(0), 2)  # unused by the replay
    x, x_mean = update_fn(keys, jnp.asarray(toy["inputs/x_state"]), jnp.asarray(toy["inputs/t_single_step"]))
  assert not noise_fn.draws
  np.testing.assert_allclose(x, toy[f"{name}/out0"], rtol=2e-5, atol=2e-5)
  np.testing.assert_allclose(x_mean, toy[f"{name}/out1"], rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("name", [n for n, c in CASES.items() if n.startswith("step/") and "reference_fails" in c])
def test_runs_where_the_reference_fails(name):
  # Sub-VP Langevin (the reference reads alphas that sub-VP lacks) and Euler-Maruyama with the probability flow
  # (the PyTorch port's diffusion is a float it then indexes).
  _, sde_name, cont, method, *pf = name.split("/")
  sde = TOY_SDES[sde_name]
  score_fn = toy_score_fn(sde, cont == "cont1")
  if method in sampling.PREDICTORS:
    update_fn = sampling.PREDICTORS[method](sde, score_fn, probability_flow=pf == ["pf1"])
  else:
    update_fn = sampling.CORRECTORS[method](sde, score_fn, 0.16, 2)
  x, x_mean = update_fn(sampling.per_sample_keys(jax.random.key(0), 2), jnp.ones((2, 3, 4, 4)), jnp.full((2,), 0.55))
  assert np.isfinite(x).all() and (pf != ["pf1"] or np.array_equal(x, x_mean))


@pytest.mark.parametrize("name", cases("pc/"))
def test_replays_reference_pc_run(toy, name):
  _, sde_name, cont, methods, pf = name.split("/")
  predictor, corrector = methods.split("+")
  sde = TOY_SDES[sde_name]
  prior, *draws = draws_of(toy, name)
  z = prior * sde.sigma_max if sde_name == "ve" else prior
  with jax.disable_jit():  # the loop runs in Python so the replayed draws are consumed in order
    out = sampling.pc_sample(jax.random.key(0), toy_score_fn(sde, cont == "cont1"), sde, prior.shape, predictor=predictor,
                             corrector=corrector, snr=0.16, n_steps=1, probability_flow=pf == "pf1", denoise=True,
                             eps=1e-5 if sde_name == "ve" else 1e-3, langevin_norm="batch", z=z,
                             noise_fn=Replay(draws))
  samples = out.samples if sde_name == "ve" else (out.samples + 1) / 2
  ref = toy[f"{name}/out0"]  # NaN where the reference's own run overflows (beta_i = 2 at N = 10)
  np.testing.assert_allclose(samples, ref, rtol=1e-4, atol=1e-5 * np.nanmax(np.abs(ref), initial=1.0))
  # The reference reports N (n_steps + 1) whatever runs, `none` included; we count what runs.
  assert int(toy[f"{name}/out1"]) == 20
  assert int(out.nfe) == 10 * ((predictor != "none") + (corrector != "none"))


@pytest.mark.parametrize("sde_name", ["vp", "ve"])
def test_replays_reference_ode_sampler(toy, sde_name):
  name = f"ode_sampler/{sde_name}"
  if name not in CASES:
    pytest.skip("no ODE sampler case")
  sde = TOY_SDES[sde_name]
  z = toy["inputs/ode_z"] * (sde.sigma_max if sde_name == "ve" else 1.0)
  out = sampling.ode_sample(jax.random.key(0), toy_score_fn(sde, True), sde, z.shape, eps=1e-5 if sde_name == "ve" else 1e-3,
                            denoise=True, z=z, noise_fn=Replay(draws_of(toy, name)))
  samples = out.samples if sde_name == "ve" else (out.samples + 1) / 2  # the fixture's inverse scalers
  ref = toy[f"{name}/out0"]
  # Same algorithm as scipy's RK45 but in float32 (scipy: float64): tolerance-level agreement.
  np.testing.assert_allclose(samples, ref, rtol=1e-3, atol=1e-4 * np.abs(ref).max())
  # scipy's count excludes the denoising evaluation; ours includes it.
  assert abs(int(out.nfe) - 1 - int(toy[f"{name}/out1"])) <= 12
