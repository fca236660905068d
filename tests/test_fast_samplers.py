"""Fast samplers against the closed-form 16-D Gaussian: its probability-flow map and its moments."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from score_jax import models, sampling
from score_jax import sde as sde_lib
from tests.test_sampling import (COSINE, DIM, EPS, MU, NUM_SAMPLES, RF, SCALE, SUBVP, VE, VP,
                                 assert_matches_gaussian, gaussian_score_fn, tiny_config)

SDE_IDS = {VP: "VPSDE", SUBVP: "subVPSDE", VE: "VESDE", RF: "RectifiedFlow", COSINE: "CosinePath"}
sde_id = lambda v: SDE_IDS.get(v, str(v)) if isinstance(v, sde_lib.SDE) else str(v)


def flow_latent(sde, batch):
  """A fixed x_T drawn from the prior."""
  return np.asarray(sde.prior_sampling(jax.random.key(0), (batch, DIM)))


def exact_flow(sde, z, t):
  """The Gaussian's probability-flow map x_T -> x(t): m_t mu + (x_T - m_T mu) v_t / v_T, v^2 = m^2 s^2 + std^2."""
  (m_end, m_t), (std_end, std_t) = (np.asarray(c, np.float64) for c in sde.marginal_coeffs(jnp.array([sde.T, t])))
  v_end, v_t = np.sqrt(m_end**2 * SCALE**2 + std_end**2), np.sqrt(m_t**2 * SCALE**2 + std_t**2)
  return m_t * MU + (z - m_end * MU) * v_t / v_end


def flow_error(sde, method, **options):
  """RMS error, in units of the data std, of a deterministic sampler against the exact flow from the same x_T."""
  z = flow_latent(sde, 256)
  out = sampling.sample(jax.random.key(1), gaussian_score_fn(sde), sde, z.shape, method=method, eps=EPS[sde], z=z,
                        **options)
  end = 0.0 if method == "heun" else EPS[sde]  # Heun ends at sigma = 0
  return float(np.sqrt(np.mean(((np.asarray(out.samples) - exact_flow(sde, z, end)) / SCALE)**2)))


@pytest.mark.parametrize("sde", [VP, SUBVP, VE, RF, COSINE], ids=sde_id)
def test_noise_level_round_trips(sde):
  t = jnp.array([1e-5, 1e-3, 0.1, 0.5, sde.T])
  m, std = sde.marginal_coeffs(t[2:])  # small t: the noise levels avoid the cancellation in std
  np.testing.assert_allclose(sde.noise_level(t[2:]), std / m, rtol=1e-4)
  np.testing.assert_allclose(sde.noise_level_to_t(sde.noise_level(t)), t, rtol=1e-4, atol=1e-8)


# Measured RMS errors (VP / subVP / VE): DDIM-100 0.022 / 0.022 / 0.019; 2M-20 0.013 / 0.026 / 0.009;
# 3M-20 0.003 / 0.013 / 0.001; 2S-20 (40 NFE) 0.013 / 0.027 / 0.009; Heun-25 (49 NFE) 0.027 / 0.037 / 0.011.
# The bounds leave ~1.5x room; a wrong sign or coefficient anywhere gives errors of 0.1 and more.
# Rectified flow / cosine path: DDIM-100 0.013 / 0.013; 2M-20 0.025 / 0.022; 3M-20 0.012 / 0.009; 2S-20 0.026 /
# 0.023; 3S-20 0.0002 / 0.0001; Heun-25 0.064 / 0.053 (50 steps: 0.014 / 0.012, second order): EDM's rho = 7
# grid from sigma(T) = 999 / 636 spends its steps at high noise, so Heun's bound is 0.09 on the paths.
@pytest.mark.parametrize("sde", [VP, SUBVP, VE, RF, COSINE], ids=sde_id)
@pytest.mark.parametrize("method,options,bound", [
    ("ddim", dict(steps=100), 0.035),
    ("dpm_solver", dict(steps=20, order=2), 0.04),
    ("dpm_solver", dict(steps=20, order=3), 0.02),
    ("dpm_solver", dict(steps=20, order=2, solver_type="singlestep"), 0.04),
    ("dpm_solver", dict(steps=20, order=3, solver_type="singlestep"), 0.01),
    ("heun", dict(steps=25), 0.06),
], ids=["ddim", "dpm2M", "dpm3M", "dpm2S", "dpm3S", "heun"])
def test_deterministic_samplers_follow_the_exact_flow(sde, method, options, bound):
  if method == "heun" and isinstance(sde, sde_lib.GaussianPath):
    bound = 0.09
  assert flow_error(sde, method, **options) < bound


@pytest.mark.parametrize("method,options,order", [
    ("ddim", {}, 1), ("heun", {}, 2), ("dpm_solver", dict(order=2), 2), ("dpm_solver", dict(order=3), 3),
    ("dpm_solver", dict(order=2, solver_type="singlestep"), 2),
], ids=["ddim", "heun", "dpm2M", "dpm3M", "dpm2S"])
def test_convergence_orders(method, options, order):
  # log2 of the error ratio between 20 and 40 steps: measured 0.96, 2.17, 1.86, 4.01, 1.9 on VP (3M was
  # 3.77 while std = sqrt(1 - exp(2 lmc)) put a float32 floor under its 40-step error; expm1 removed it,
  # and 3M is pre-asymptotic at 20 steps). The upper bound only guards the error measure itself.
  errors = [flow_error(VP, method, steps=steps, **options) for steps in (20, 40)]
  assert order - 0.5 < math.log2(errors[0] / errors[1]) < order + 1.5, errors


@pytest.mark.parametrize("sde", [VP, VE], ids=sde_id)
def test_dpm_solver_3s_is_third_order(sde):
  # 3S reaches the float32 floor (~2e-4) by 10-20 steps, so the order is read between 5 and 10 steps:
  # log2 ratio measured 4.6 (VP) and 1.95 (VE, already near the floor at 10); a wrong stage coefficient
  # drops it to first order (ratio ~1) with errors of 0.05 and more.
  errors = [flow_error(sde, "dpm_solver", steps=steps, order=3, solver_type="singlestep") for steps in (5, 10)]
  assert errors[1] < 1e-3 and math.log2(errors[0] / errors[1]) > 1.7, errors


def test_dpm_solver_order3_beats_order2():
  # Not at 10 steps: there the 3M warm-up (orders 1, 2 first) weighs; measured 0.043 vs 0.035.
  for steps in (20, 40):
    assert flow_error(VP, "dpm_solver", steps=steps, order=3) < 0.5 * flow_error(VP, "dpm_solver", steps=steps, order=2)


# Moments of 8192 samples: 4.5 standard errors plus the sampler's measured std bias (the first
# value) with ~1.5x room. First-order DDPM-like DDIM (eta = 1) at 100 steps is 5-7% wide; churn
# raises Heun's error at 25 steps from 3-5% to 5-8%; the adaptive SDE solver at eps_rel = 0.05
# is within 2.5%. Deterministic samplers are checked on VP / subVP only, whose prior is p_T to
# 1e-4; VE's N(0, sigma_max^2) prior misses p_T's mean mu, which an ODE carries to the end.
@pytest.mark.parametrize("sde", [VP, SUBVP, VE, RF, COSINE], ids=sde_id)
@pytest.mark.parametrize("method,options,discretisation", [
    ("ddim", dict(steps=100, eta=1.0), 0.1),
    ("heun", dict(steps=25, S_churn=5.0), 0.11),
    ("adaptive_sde", {}, 0.04),
    ("dpm_solver", dict(steps=20, order=3), 0.04),
], ids=["ddim_eta1", "heun_churn", "adaptive_sde", "dpm3M"])
def test_samplers_recover_gaussian(sde, method, options, discretisation):
  if sde is VE and method == "dpm_solver":
    pytest.skip("deterministic: VE prior mismatch (covered by the exact-flow test)")
  out = sampling.sample(jax.random.key(2), gaussian_score_fn(sde), sde, (NUM_SAMPLES, DIM), method=method,
                        eps=EPS[sde], **options)
  assert_matches_gaussian(np.asarray(out.samples), discretisation=discretisation)


def test_nfe_counts():
  sde, score_fn, key, shape = VP, gaussian_score_fn(VP), jax.random.key(0), (4, DIM)
  nfe = lambda method, **options: int(sampling.sample(key, score_fn, sde, shape, method=method, **options).nfe)
  assert nfe("ddim", steps=7) == 7 and nfe("ddim", steps=7, denoise=True) == 8
  assert nfe("dpm_solver", steps=7, order=3) == 7
  assert nfe("dpm_solver", steps=7, order=2, solver_type="singlestep") == 14
  assert nfe("dpm_solver", steps=7, order=3, solver_type="singlestep") == 21
  assert nfe("heun", steps=7) == 13
  adaptive = nfe("adaptive_sde")
  assert adaptive % 2 == 1 and 20 < adaptive < 1000


@pytest.mark.parametrize("method,options", [
    ("ddim", dict(steps=10, eta=1.0)), ("dpm_solver", dict(steps=10, order=2, solver_type="singlestep")),
    ("heun", dict(steps=10, S_churn=5.0)), ("adaptive_sde", dict(step_size="sample")),
], ids=["ddim", "dpm_solver", "heun", "adaptive_sde"])
def test_sample_i_does_not_depend_on_batch_size(method, options):
  score_fn = gaussian_score_fn(VE)
  big, small = (sampling.sample(jax.random.key(3), score_fn, VE, (batch, DIM), method=method, eps=1e-5,
                                **options).samples for batch in (8, 4))
  np.testing.assert_allclose(big[3], small[3], rtol=1e-5, atol=1e-5)
  assert not np.allclose(big[3], big[2])


def test_fast_samplers_do_not_retrace():
  traces = []
  sde = sde_lib.VPSDE(N=50)

  def score_fn(x, t):
    traces.append(None)
    return -x

  for method, options in [("ddim", dict(steps=5, eta=0.5)), ("dpm_solver", dict(steps=5, order=3)),
                          ("heun", dict(steps=5, S_churn=1.0)), ("adaptive_sde", dict(eps_rel=0.2))]:
    sampling.sample(jax.random.key(0), score_fn, sde, (4, 2), method=method, **options)
    count = len(traces)
    out = sampling.sample(jax.random.key(1), score_fn, sde, (4, 2), method=method, **options)
    assert len(traces) == count and count > 0, method
    assert np.isfinite(out.samples).all()


def test_t_end_is_an_alias_of_eps():
  score_fn, key = gaussian_score_fn(VP), jax.random.key(0)
  a = sampling.sample(key, score_fn, VP, (4, DIM), method="dpm_solver", steps=5, t_end=0.01).samples
  b = sampling.sample(key, score_fn, VP, (4, DIM), method="dpm_solver", steps=5, eps=0.01).samples
  np.testing.assert_array_equal(a, b)


def test_bad_options_raise_value_errors_listing_choices():
  sde, score_fn, key = VP, lambda x, t: -x, jax.random.key(0)
  run = lambda method, **options: sampling.sample(key, score_fn, sde, (2, 2), method=method, **options)
  with pytest.raises(ValueError, match="adaptive_sde, consistency, ddim, dpm_solver, flow_map, heun, ode, pc"):
    run("dpm")
  with pytest.raises(ValueError, match=r"\['step'\].*steps"):
    run("ddim", step=3)
  with pytest.raises(ValueError, match="S_churn"):
    run("heun", churn=3.0)
  with pytest.raises(ValueError, match="logsnr, time_quadratic, time_uniform"):
    run("dpm_solver", schedule="karras")
  with pytest.raises(ValueError, match="multistep, singlestep"):
    run("dpm_solver", solver_type="multi")
  with pytest.raises(ValueError, match="choose one of: 1, 2, 3$"):
    run("dpm_solver", order=4, solver_type="singlestep")
  with pytest.raises(ValueError, match="batch, sample"):
    run("adaptive_sde", step_size="device")
  with pytest.raises(ValueError, match="steps must be an int >= 2"):
    run("heun", steps=1)
  with pytest.raises(ValueError, match="eta"):
    run("ddim", eta=-1.0)
  config = tiny_config("dpm_solver")
  config.sampling.order = 4
  with pytest.raises(ValueError, match="order=4"):
    sampling.get_sampling_fn(config, sde, None, (2, 2), lambda x: x, eps=1e-3)


@pytest.mark.parametrize("method,steps,nfe", [("ddim", 6, 7), ("dpm_solver", 6, 7), ("heun", 6, 11),
                                              ("adaptive_sde", None, None), ("consistency", 2, 2)])
def test_get_sampling_fn_runs_fast_samplers(method, steps, nfe):
  config = tiny_config(method)  # noise_removal=True: ddim and dpm_solver add the denoising evaluation
  if steps:
    config.sampling.steps = steps
  else:
    config.sampling.eps_rel = 0.2
  sde = sde_lib.VPSDE(N=config.model.num_scales)
  model = models.get_model(config)
  variables = models.init_model(jax.random.key(0), config)
  sample_fn = sampling.get_sampling_fn(config, sde, model, (6, 2), lambda x: x, eps=1e-3)
  first = sample_fn(jax.random.key(1), variables)
  second = sample_fn(jax.random.key(2), jax.tree.map(lambda v: v * 1.01, variables))
  assert sample_fn.jitted._cache_size() == 1  # one trace for both (the inverse scaler runs after the program)
  assert first.samples.shape == (6, 2) and np.isfinite(second.samples).all()
  assert not np.allclose(first.samples, second.samples)
  if nfe:
    assert int(first.nfe) == nfe
  assert {"ddim", "dpm_solver", "heun", "adaptive_sde"} <= set(sampling.SAMPLERS)
