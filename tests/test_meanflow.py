"""MeanFlow (`training.objective = "meanflow"`, Geng et al. 2025): two-time networks, the average-velocity target
against the closed form of Gaussian data, training, flow-map sampling and the config's checks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from score_jax import base_config, models, objectives, run_setup, sampling
from score_jax import sde as sde_lib
from score_jax.objectives import meanflow, scm
from score_jax.parameterization import ScoreFunction, average_velocity_of
from tests.helpers import tiny_toy_config, train_on_gaussian

RF = sde_lib.RectifiedFlow()


def meanflow_config(**overrides):
  """The tiny toy config trained by MeanFlow, prepared as every entry point prepares it."""
  config = tiny_toy_config(**{"training.objective": "meanflow", "training.sde": "rectified_flow", **overrides})
  return run_setup.prepare_config(config)


def gaussian_flow(mu=1.5, scale=0.5):
  """(u(x, r, t), v(x, t)) of data N(mu, scale^2 I) on the linear path: x_t ~ N(m_t, s_t^2) with m_t = (1 - t) mu,
  s_t^2 = (1 - t)^2 scale^2 + t^2, and the ODE's flow map is affine, x_r = m_r + (s_r / s_t) (x_t - m_t)."""
  def moments(t):
    t = t[:, None]
    return (1 - t) * mu, jnp.sqrt(((1 - t) * scale) ** 2 + t**2)

  def u(x, r, t):
    (m_t, s_t), (m_r, s_r) = moments(t), moments(r)
    return (x - m_r - s_r / s_t * (x - m_t)) / (t - r)[:, None]

  def v(x, t):
    (m_t, s_t), (_, rate) = jax.jvp(moments, (t,), (jnp.ones_like(t),))
    return -mu + rate / s_t * (x - m_t)

  return u, v


def perturbed(variables, scale=0.3, key=1):
  """Every parameter redrawn N(0, scale^2), so that no zero-initialised layer (the interval embedding's last, an
  output layer) hides the rest."""
  leaves, tree = jax.tree.flatten(variables)
  keys = jax.random.split(jax.random.key(key), len(leaves))
  return jax.tree.unflatten(tree, [scale * jax.random.normal(k, leaf.shape) for k, leaf in zip(keys, leaves)])


def test_the_exact_average_velocity_zeroes_the_meanflow_residual():
  """u - (v - (t - r) du/dt) with du/dt by the objective's one jvp (tangent (v, 0, 1)) vanishes for the closed-form u
  of Gaussian data in 4-D, and not for that of a wrong std."""
  rng = np.random.default_rng(0)
  x = jnp.asarray(1.5 + rng.normal(size=(6, 4)), jnp.float32)
  t = jnp.asarray([0.2, 0.35, 0.5, 0.65, 0.8, 0.95], jnp.float32)
  r = t * jnp.asarray([0.0, 0.3, 0.5, 0.7, 0.9, 0.5], jnp.float32)
  _, v = gaussian_flow()
  for scale, exact in [(0.5, True), (0.6, False)]:
    u_fn = gaussian_flow(scale=scale)[0]
    u, du_dt = scm.velocity_tangent(lambda y, s: u_fn(y, r, s), x, t, v(x, t))
    residual = float(jnp.abs(u - meanflow.average_velocity_target(v(x, t), du_dt, r, t)).max())
    assert (residual < 1e-4) == exact, (scale, residual)


def test_the_average_velocity_at_r_equal_t_is_the_instantaneous_velocity():
  """The closed form's u(x, t - h, t) tends to v(x, t); a two-time model's u(x, t, t) (its interval embedding
  perturbed away from zero) is the probability-flow velocity f - g^2 s / 2 of its own score."""
  u_fn, v_fn = gaussian_flow()
  x = jnp.asarray(np.random.default_rng(1).normal(size=(4, 2)), jnp.float32)
  t = jnp.asarray([0.3, 0.5, 0.7, 0.9], jnp.float32)
  np.testing.assert_allclose(u_fn(x, t - 1e-3, t), v_fn(x, t), rtol=1e-3, atol=2e-3)  # first order in h
  config = meanflow_config(**{"model.nf": 32})
  model = models.get_model(config)
  variables = perturbed(models.init_model(jax.random.key(0), config))
  u = models.get_average_velocity_fn(RF, model, variables)(x, t, t)
  plain = ScoreFunction(models.get_score_fn(RF, model, variables).score)  # its score alone, no u of its own
  np.testing.assert_allclose(u, average_velocity_of(plain, RF)(x, t, t), rtol=1e-4, atol=1e-4)
  assert float(jnp.abs(u - models.get_average_velocity_fn(RF, model, variables)(x, 0.5 * t, t)).max()) > 1e-2


def test_the_jvp_total_derivative_equals_a_central_difference():
  """du/dt along (v, 0, 1) for (z, r, t) by the objective's jvp against a central difference (step 1e-4 in t)."""
  config = meanflow_config(**{"model.nf": 32})
  model = models.get_model(config)
  u_fn = models.get_average_velocity_fn(RF, model, perturbed(models.init_model(jax.random.key(0), config), 0.2))
  rng = np.random.default_rng(2)
  x, direction = (jnp.asarray(rng.normal(size=(5, 2)), jnp.float32) for _ in range(2))
  t = jnp.asarray([0.1, 0.3, 0.5, 0.7, 0.9], jnp.float32)
  r = 0.4 * t
  _, rate = scm.velocity_tangent(lambda y, s: u_fn(y, r, s), x, t, direction)
  h = 1e-4
  difference = (u_fn(x + h * direction, r, t + h) - u_fn(x - h * direction, r, t - h)) / (2 * h)
  np.testing.assert_allclose(rate, difference, rtol=2e-2, atol=2e-3)
  assert float(jnp.abs(rate).max()) > 0.01


def _family_config(name):
  """A completed config of a tiny network of the family `name` on 8x8x1 images (2-D points for the MLP)."""
  if name == "mlp":
    return tiny_toy_config(**{"training.sde": "rectified_flow"})
  config = base_config.get_config()
  config.training.sde = "rectified_flow"
  config.data.image_size, config.data.num_channels = 8, 1
  model = {"ncsnpp": dict(nf=8, ch_mult=(1,), num_res_blocks=1, attn_resolutions=()),
           "ddpm": dict(nf=64, ch_mult=(1,), num_res_blocks=1, attn_resolutions=()),  # GroupNorm: 32 groups
           "edm2": dict(nf=8, ch_mult=(1,), num_res_blocks=1, attn_resolutions=()),
           "dit": dict(hidden_size=16, depth=1, num_heads=2, patch_size=2)}[name]
  config.model.update(dict(name=name, dropout=0.0, **model))
  return config


@pytest.mark.parametrize("name", ["mlp", "ncsnpp", "ddpm", "edm2", "dit"])
def test_a_fresh_two_time_network_is_the_one_time_network(name):
  """Every network family: the two-time network (`average_velocity`) has the one-time network's parameters plus the
  interval embedding, whose zero-initialised last layer makes u(x, r, t) equal the one-time network's output on the
  same inputs bit for bit at any r; with that layer perturbed, r matters."""
  config = _family_config(name)
  config.model.parameterization = "flow"
  one_time = models.get_model(config)
  config.model.parameterization = "average_velocity"
  two_time = models.get_model(config)
  variables = models.init_model(jax.random.key(0), config, model=two_time)
  params = dict(variables["params"])
  interval = {key: params.pop(key) for key in ("interval_embed_0", "interval_embed_1")}
  assert not any(np.any(leaf) for leaf in jax.tree.leaves(interval["interval_embed_1"]))
  params = perturbed(params)  # the other weights anything
  shape = (4, 2) if name == "mlp" else (4, 8, 8, 1)
  x = jnp.asarray(np.random.default_rng(3).normal(size=shape), jnp.float32)
  t = jnp.asarray([0.2, 0.4, 0.6, 0.9], jnp.float32)
  r = t * jnp.asarray([1.0, 0.5, 0.2, 0.0], jnp.float32)

  @jax.jit
  def outputs(params, interval_params):
    inputs = two_time.parameterization.network_inputs(RF, x, t, True)
    velocity = one_time.apply({**variables, "params": params}, *inputs)
    u_fn = models.get_average_velocity_fn(RF, two_time, {**variables, "params": {**params, **interval_params}})
    return velocity, u_fn(x, r, t)

  velocity, u = outputs(params, interval)
  np.testing.assert_array_equal(u, velocity)
  assert float(jnp.abs(velocity).max()) > 1e-3
  _, u_moved = outputs(params, {**interval, "interval_embed_1": perturbed(interval["interval_embed_1"], key=4)})
  assert float(jnp.abs(u_moved - velocity).max()) > 1e-5


@pytest.mark.parametrize("dim, form", [(1, "original"), (4, "improved")])
def test_meanflow_samples_a_gaussian_in_one_and_two_steps(dim, form):
  """N(1.5, 0.5^2 I) in 1-D (MeanFlow) and 4-D (improved MeanFlow): after 2000 steps from scratch, one- and two-step
  flow-map samples have the data's mean and std."""
  config = meanflow_config(**{"data.dim": dim, "model.nf": 64, "model.num_res_blocks": 2, "model.embedding_dim": 32,
                              "training.meanflow_form": form, "training.meanflow_r_equals_t": 0.5})
  model = models.get_model(config)
  objective = objectives.get_objective(config, RF, model)
  variables, ema, _ = train_on_gaussian(config, objective, 2000, ema_decay=0.99, dim=dim)
  score_fn = models.get_score_fn(RF, model, {**variables, "params": ema})
  for steps in (1, 2):
    samples = np.asarray(sampling.flow_map_sample(jax.random.key(2), score_fn, RF, (4096, dim), steps=steps).samples)
    mean, std = samples.mean(axis=0), samples.std(axis=0)
    assert np.all(np.abs(mean - 1.5) < 0.1) and np.all(np.abs(std / 0.5 - 1) < 0.15), (steps, mean, std)


def test_flow_map_sampling_of_the_exact_flow_map_is_exact():
  """The closed-form u of N(1.5, 0.5^2) in 1, 2 and 3 jumps (default and given times) maps the prior's draws to the
  data's law; a one-time model's jumps are Euler steps of its velocity (the exact velocity: 1 step lands on the
  mean, not on the data's spread)."""
  u_fn, v_fn = gaussian_flow()
  exact = ScoreFunction(score=None, average_velocity=u_fn)
  for options in [dict(steps=1), dict(steps=2), dict(steps=3, times=(0.6, 0.2))]:
    samples = np.asarray(sampling.sample(jax.random.key(0), exact, RF, (8192, 1), method="flow_map",
                                         **options).samples)
    # The prior stops at T = 0.999 with std T, neglecting m(T) x0 = 0.0015 (sde.GaussianPath).
    assert abs(samples.mean() - 1.5) < 0.02 and abs(samples.std() - 0.5) < 0.01, (options, samples.mean(),
                                                                                 samples.std())

  def score(x, t):  # the exact score of x_t, so the fallback's velocity f - g^2 s / 2 is v
    mean_scale, std = RF.marginal_coeffs(t)
    variance = (mean_scale[:, None] * 0.5) ** 2 + std[:, None] ** 2
    return -(x - mean_scale[:, None] * 1.5) / variance
  one_step = np.asarray(sampling.flow_map_sample(jax.random.key(0), score, RF, (8192, 1), steps=1).samples)
  assert abs(one_step.mean() - 1.5) < 0.05 and one_step.std() < 0.1


def test_meanflow_keys_are_checked_before_any_compile():
  config = meanflow_config()
  sde, _ = sde_lib.get_sde(config)
  model = models.get_model(config)
  assert type(models.parameterization_of(model)).__name__ == "AverageVelocity"
  bad = {"training.sde": ("vpsde", "training.sde='rectified_flow'"),
         "training.meanflow_form": ("better", "training.meanflow_form"),
         "training.meanflow_r_equals_t": (1.5, "training.meanflow_r_equals_t"),
         "training.meanflow_weight_power": (-1.0, "training.meanflow_weight_power"),
         "training.meanflow_guidance_mix": (1.0, "training.meanflow_guidance_mix"),
         "training.meanflow_guidance_scale": (1.0, "class-conditional model")}
  for key, (value, message) in bad.items():
    with pytest.raises(ValueError, match=message):
      run_setup.validate_config(tiny_toy_config(**{"training.objective": "meanflow", "training.sde": "rectified_flow",
                                                   key: value}))
  with pytest.raises(ValueError, match="model.attention='cudnn'"):
    config = _family_config("dit")
    config.training.objective, config.model.attention, config.model.dtype = "meanflow", "cudnn", "bfloat16"
    config = run_setup.prepare_config(config)
    objectives.get_objective(config, sde, models.get_model(config))
  with pytest.raises(ValueError, match="does not"):
    config = base_config.get_config()
    config.training.objective, config.training.sde, config.model.name = "meanflow", "rectified_flow", "ncsnv2_64"
    config = run_setup.prepare_config(config)
    objectives.get_objective(config, sde, models.get_model(config))
  for options, message in [(dict(steps=0), "steps"), (dict(steps=2, times=(0.5, 0.2)), "steps - 1"),
                           (dict(steps=3, times=(0.2, 0.5)), "decrease")]:
    with pytest.raises(ValueError, match=message):
      sampling.flow_map_sample(jax.random.key(0), lambda x, t: x, RF, (2, 1), **options)
  with pytest.raises(ValueError, match="average_velocity"):
    models.get_average_velocity_fn(RF, models.get_model(tiny_toy_config()), {})
