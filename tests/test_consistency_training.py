"""Consistency training (`training.objective = "consistency_training"`) and the `consistency` parameterization."""

import dataclasses
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from score_jax import models, objectives, parameterization as param_lib, run_setup, sampling
from score_jax import sde as sde_lib
from score_jax.objectives import consistency
from tests.helpers import assert_samples_the_gaussian, gaussian_denoiser, tiny_toy_config, train_on_gaussian


@pytest.mark.parametrize("sde", [sde_lib.VPSDE(), sde_lib.RectifiedFlow(), sde_lib.VESDE(sigma_max=10.0)],
                         ids=["vpsde", "rectified_flow", "vesde"])
def test_the_boundary_condition_holds_exactly(sde):
  """At t_min the consistency function is x / m(t_min) whatever the network outputs; elsewhere it is not."""
  param = param_lib.Consistency(t_min=1e-3)
  x = jnp.asarray(np.random.default_rng(0).normal(size=(3, 4)), jnp.float32)
  output = jnp.asarray(np.random.default_rng(1).normal(size=(3, 4)) * 100, jnp.float32)
  t_min = jnp.full((3,), 1e-3, jnp.float32)
  m = sde.marginal_coeffs(t_min)[0][:, None]
  np.testing.assert_array_equal(param.denoised(sde, output, x, t_min, True), x / m)
  later = jnp.full((3,), 0.3, jnp.float32)
  assert np.abs(np.asarray(param.denoised(sde, output, x, later, True) - x / m)).max() > 1.0


def test_the_curriculum_doubles_the_discretisation_in_eight_stages():
  total = 8000
  steps = [int(consistency.discretisation_steps(k, total)) for k in (0, 999, 1000, 2000, 6999, 7000, 7999, 20000)]
  assert steps == [10, 10, 20, 40, 640, 1280, 1280, 1280]


def test_noise_levels_follow_the_discretised_log_normal():
  """Interval frequencies against scipy's normal CDF of ln sigma at the Karras grid's edges."""
  sigma_min, sigma_max, n = 0.002, 80.0, 10
  uniform = jax.random.uniform(jax.random.key(0), (200_000,))
  index = np.asarray(consistency.interval_index(uniform, n, sigma_min, sigma_max))
  edges = (sigma_min ** (1 / 7) + np.arange(n + 1) / n * (sigma_max ** (1 / 7) - sigma_min ** (1 / 7))) ** 7
  np.testing.assert_allclose(np.asarray(consistency.karras_sigmas(jnp.arange(n + 1), n, sigma_min, sigma_max)),
                             edges, rtol=1e-5)
  expected = np.diff(stats.norm.cdf(np.log(edges), loc=-1.1, scale=2.0))
  expected /= expected.sum()
  observed = np.bincount(index, minlength=n) / len(index)
  assert index.max() < n
  tolerance = 4 * np.sqrt(expected * (1 - expected) / len(index)) + 1e-4
  assert (np.abs(observed - expected) <= tolerance).all(), (observed, expected)


def test_pseudo_huber_distance():
  a, b = jnp.ones((2, 3, 4)), jnp.zeros((2, 3, 4))
  c = 0.00054 * math.sqrt(12)
  np.testing.assert_allclose(consistency.pseudo_huber(a, b), [math.sqrt(12 + c**2) - c] * 2, rtol=1e-6)


def test_consistency_training_learns_the_flow_map_of_a_gaussian():
  """1-D data N(1.5, 0.5^2) on the VP SDE: after 3000 steps of consistency training (Adam 1e-3, batch 256, an
  EMA of 0.995 sampled, as the training loop does), one- and two-step samples have the data's mean and std
  (the exact consistency function maps the prior to it). Measured (mean / std): 1.513 / 0.474 and 1.493 / 0.477."""
  config = tiny_toy_config(**{"training.objective": "consistency_training", "training.n_iters": 3000,
                              "data.dim": 1, "model.nf": 64, "model.num_res_blocks": 2, "model.embedding_dim": 32})
  config = run_setup.prepare_config(config)  # as every entry point: the objective's parameterization set
  sde, _ = sde_lib.get_sde(config)
  model = models.get_model(config)
  assert isinstance(models.parameterization_of(model), param_lib.Consistency)
  objective = objectives.get_objective(config, sde, model)
  variables, ema, state = train_on_gaussian(config, objective, 3000, ema_decay=0.995)
  assert state is None  # the curriculum reads the train step's counter
  assert_samples_the_gaussian(models.get_denoiser_fn(sde, model, {**variables, "params": ema}), sde, 0.15)


def test_bad_settings_are_one_line_errors():
  config = tiny_toy_config(**{"training.objective": "consistency_training"})
  sde, _ = sde_lib.get_sde(config)
  for key, value, message in [("consistency_schedule", "linear", "training.consistency_schedule='linear'"),
                              ("consistency_loss", "l1", "training.consistency_loss='l1'")]:
    config.training[key] = value
    with pytest.raises(ValueError, match=message):
      objectives.get_objective(config, sde, models.get_model(config))
    config.training[key] = {"consistency_schedule": "ict", "consistency_loss": "pseudo_huber"}[key]
  config.model.parameterization = "flow"
  with pytest.raises(ValueError, match="trains model.parameterization='consistency'"):
    run_setup.prepare_config(config)


def test_init_workdir_starts_from_a_trained_runs_weights(tmp_path):
  """`training.init_workdir`: the run starts from that run's EMA parameters (ECT's consistency tuning of a
  diffusion model); a network of another shape, or no run there, is refused in one line."""
  from score_jax import checkpoint

  source = tiny_toy_config(**{"training.objective": "edm", "model.parameterization": "edm"})
  state = run_setup.RunSetup(source).initial_state(jax.random.key(5))
  state = state.replace(ema_params=jax.tree.map(lambda p: p + 1.0, state.params))  # EMA != raw: which is taken
  checkpoint.save(checkpoint.get_manager(str(tmp_path / "edm" / checkpoint.SNAPSHOT_DIR)), 40, state)
  (tmp_path / "edm" / "config.json").write_text(source.to_json_best_effort())
  tuned = tiny_toy_config(**{"training.objective": "consistency_training",
                             "training.init_workdir": str(tmp_path / "edm")})
  start = run_setup.RunSetup(tuned).init_state()
  for got, want in zip(jax.tree.leaves(start.params), jax.tree.leaves(state.ema_params)):
    np.testing.assert_array_equal(got, want)
  np.testing.assert_array_equal(jax.tree.leaves(start.ema_params)[0], jax.tree.leaves(state.ema_params)[0])
  wider = tiny_toy_config(**{"training.objective": "consistency_training", "model.nf": 32,
                             "training.init_workdir": str(tmp_path / "edm")})
  with pytest.raises(ValueError, match="its network's parameters differ from this config's"):
    run_setup.RunSetup(wider).init_state()
  tuned.training.init_workdir = str(tmp_path / "nowhere")
  with pytest.raises(ValueError, match="cannot read the run's config"):
    run_setup.RunSetup(tuned).init_state()


# ------------------------------------------------------------------------------------ distillation

def test_teacher_steps_are_ddim_and_heun_steps():
  """Euler's step in x / m against sigma is DDIM's step, m' D + std' (x - m D) / std; against the exact flow map
  of Gaussian data ((x / m - mu) / sqrt(c^2 + sigma^2) constant) Euler's error falls ~4x when the step halves
  (local error h^2) and Heun's ~8x (h^3)."""
  sde = sde_lib.VPSDE()
  denoise = gaussian_denoiser(sde)
  x = jnp.asarray(np.random.default_rng(0).normal(size=(6, 1)) * 1.3, jnp.float32)
  sigma, sigma_next = jnp.full((6,), 2.0), jnp.full((6,), 1.8)
  t, t_next = sde.noise_level_to_t(sigma), sde.noise_level_to_t(sigma_next)
  (m, std), (m_next, std_next) = sde.marginal_coeffs(t), sde.marginal_coeffs(t_next)
  d = denoise(x, t)
  ddim = m_next[:, None] * d + std_next[:, None] * (x - m[:, None] * d) / std[:, None]
  euler = consistency.teacher_step(denoise, sde, x, sigma, sigma_next, "euler")
  np.testing.assert_allclose(euler, ddim, rtol=1e-5, atol=1e-5)

  def error(solver, sigma_next):
    m_next = sde.marginal_coeffs(sde.noise_level_to_t(sigma_next))[0][:, None]
    exact = m_next * (1.5 + (x / m[:, None] - 1.5) * jnp.sqrt((0.25 + sigma_next[:, None]**2) / (0.25 + 4.0)))
    return float(np.abs(consistency.teacher_step(denoise, sde, x, sigma, sigma_next, solver) - exact).max())

  half = jnp.full((6,), 1.9)
  euler_ratio, heun_ratio = error("euler", sigma_next) / error("euler", half), error("heun", sigma_next) / error("heun", half)
  assert 3.0 < euler_ratio < 5.5 and 6.0 < heun_ratio < 11.0, (euler_ratio, heun_ratio)


def test_consistency_distillation_learns_the_flow_map_from_an_exact_teacher():
  """A student distilled from the exact Gaussian denoiser (Heun steps) on 1-D N(1.5, 0.5^2) with the squared l2
  distance: one-step samples have the data's mean and std. The student starts from random weights (the exact
  teacher has none), so its target is an EMA (mu = 0.95, the paper's setting for such a start; measured: mean /
  std 1.494 / 0.528 at 2000 steps; mu = 0 from random weights: 1.28 / 0.47 after 5000)."""
  config = tiny_toy_config(**{"training.objective": "consistency_distillation", "training.n_iters": 2000,
                              "training.consistency_target_ema": 0.95,
                              "training.teacher_workdir": "unused", "data.dim": 1, "model.nf": 64,
                              "model.num_res_blocks": 2, "model.embedding_dim": 32})
  config = run_setup.prepare_config(config)
  sde, _ = sde_lib.get_sde(config)
  model = models.get_model(config)
  objective = objectives.get_objective(config, sde, model)

  class ExactTeacher:
    variables = {}

    def denoiser_fn(self, variables, sde, class_labels=None):
      return gaussian_denoiser(sde)

  objective = dataclasses.replace(objective, teacher=ExactTeacher())  # no workdir to load
  variables, _, state = train_on_gaussian(config, objective, 2000)
  denoiser = models.get_denoiser_fn(sde, model, {**variables, "params": state["target"]})
  samples = np.asarray(sampling.consistency_sample(jax.random.key(2), denoiser, sde, (4096, 1)).samples)
  assert abs(samples.mean() - 1.5) < 0.1 and abs(samples.std() / 0.5 - 1) < 0.1, (samples.mean(), samples.std())


@pytest.mark.parametrize("objective,path,other_path", [("consistency_distillation", "vesde", "rectified_flow"),
                                                         ("reflow", "rectified_flow", "vesde"),
                                                         ("scm", "cosine", "vesde")])
def test_the_teacher_comes_from_its_workdir_and_must_share_the_path(tmp_path, objective, path, other_path):
  """Every objective with a teacher (`training.teacher_workdir`) reads its run: config, EMA variables, path."""
  from score_jax import checkpoint

  teacher = tiny_toy_config(**{"training.objective": "edm", "model.parameterization": "edm", "training.sde": path})
  state = run_setup.RunSetup(teacher).initial_state(jax.random.key(3))
  checkpoint.save(checkpoint.get_manager(str(tmp_path / "teacher" / checkpoint.SNAPSHOT_DIR)), 40, state)
  (tmp_path / "teacher" / "config.json").write_text(teacher.to_json_best_effort())
  student = tiny_toy_config(**{"training.objective": objective, "training.sde": path,
                               "training.teacher_workdir": str(tmp_path / "teacher")})
  run = run_setup.RunSetup(student)
  assert run.objective.teacher.workdir == str(tmp_path / "teacher")
  for got, want in zip(jax.tree.leaves(run.objective.frozen_variables()["teacher"]["params"]),
                       jax.tree.leaves(state.ema_params)):
    np.testing.assert_array_equal(got, want)
  teacher.training.sde = other_path  # the same weights, another path
  (tmp_path / "teacher" / "config.json").write_text(teacher.to_json_best_effort())
  with pytest.raises(ValueError, match="was trained on another path"):
    run_setup.RunSetup(student).init_state()
  if objective != "scm":  # without a teacher, scm is consistency training
    student.training.teacher_workdir = ""
    with pytest.raises(ValueError, match="needs training.teacher_workdir"):
      run_setup.validate_config(student)


# ------------------------------------------------------------------------------------ the losses by hand

class TinyConsistencyNetwork(nn.Module):
  """F(x_in, c_noise) = tanh(w x_in + b c_noise): two parameters, so that the student and its target differ."""

  @nn.compact
  def __call__(self, x_in, labels, train=False):
    w, b = self.param("w", nn.initializers.ones, ()), self.param("b", nn.initializers.zeros, ())
    return jnp.tanh(w * x_in + b * labels[:, None])


def _consistency_problem(objective_name, **config_values):
  """The tiny network on the VP SDE as the `consistency` parameterization, its objective (an exact Gaussian
  teacher stub where it learns from one), fixed data and draws, and the numpy pieces of the hand computation."""
  config = run_setup.prepare_config(tiny_toy_config(**{"training.objective": objective_name, **config_values}))
  sde, t_min = sde_lib.get_sde(config)
  model = models.ScoreModel(network=TinyConsistencyNetwork(), parameterization=param_lib.Consistency(t_min=t_min))

  class ExactTeacher:
    variables = {}

    def denoiser_fn(self, variables, sde, class_labels=None):
      return gaussian_denoiser(sde)

  teacher = ExactTeacher() if config.training.teacher_workdir else None
  objective = objectives.get_objective(config, sde, model, teacher=teacher)
  rng = np.random.default_rng(0)
  x, noise = rng.normal(size=(8, 2)) * 0.7 + 1.0, rng.normal(size=(8, 2))
  time = np.array([0.0, 0.06, 0.21, 0.38, 0.52, 0.67, 0.83, 0.97])  # a spread of intervals
  draws = {"noise": jnp.asarray(noise, jnp.float32), "time": jnp.asarray(time, jnp.float32)}

  def mean_scale(sigma):  # VP: m^2 (1 + sigma^2) = 1
    return 1.0 / np.sqrt(1.0 + sigma**2)

  def noise_level(t):
    return np.sqrt(np.expm1(0.5 * t**2 * (sde.beta_max - sde.beta_min) + t * sde.beta_min))

  sigma_min, sigma_max, sigma_data = noise_level(t_min), noise_level(1.0), 0.5

  def consistency_fn(params, x, sigma):  # Song et al. 2023, App. C: EDM's preconditioning shifted by sigma_min
    sigma = sigma[:, None]
    x_hat = x / mean_scale(sigma)
    c_skip = sigma_data**2 / ((sigma - sigma_min) ** 2 + sigma_data**2)
    c_out = sigma_data * (sigma - sigma_min) / np.sqrt(sigma_data**2 + sigma**2)
    c_in = 1.0 / np.sqrt(sigma**2 + sigma_data**2)
    return c_skip * x_hat + c_out * np.tanh(params["w"] * c_in * x_hat + params["b"] * 0.25 * np.log(sigma))

  def karras(i, n):
    low, high = sigma_min ** (1 / 7), sigma_max ** (1 / 7)
    return (low + i / n * (high - low)) ** 7

  def pseudo_huber(a, b):
    c = 0.00054 * np.sqrt(2)
    return np.sqrt(np.sum((a - b) ** 2, axis=-1) + c**2) - c

  pieces = dict(x=x, noise=noise, time=time, mean_scale=mean_scale, consistency_fn=consistency_fn, karras=karras,
                pseudo_huber=pseudo_huber, sigma_min=sigma_min, sigma_max=sigma_max)
  return objective, model, sde, draws, pieces


def _objective_loss(objective, model, sde, x, draws, params, inputs):
  variables = {"params": {key: jnp.float32(value) for key, value in params.items()}}
  call = objectives.ModelCall(model, sde, variables, False)
  return np.asarray(objective.loss(call, jnp.asarray(x, jnp.float32), draws, inputs).per_example)


@pytest.mark.parametrize("solver,distance,target_ema", [("heun", "pseudo_huber", 0.95), ("euler", "", 0.0)])
def test_consistency_distillation_loss_by_hand(solver, distance, target_ema):
  """One consistency-distillation loss in float64 numpy (Song et al. 2023, Algorithm 2) against the objective's to
  float32 rounding (measured: 1.2e-5 relative, the round trips sigma -> t -> sigma of the VP SDE): on the 6-level Karras grid the interval n = floor(u N), x at sigma_n+1 from the data, the exact
  Gaussian teacher's Euler / Heun step down to sigma_n in x / m, the student's f there against its EMA target's f
  at the teacher's point. The weighting is lambda(t_n) = 1 (the paper's choice in all its experiments), not
  improved consistency training's 1 / (sigma_n+1 - sigma_n). The distance is by default the squared l2 (averaged
  over the dimensions), and with mu = 0 (the default) the target is the student itself, not the state's copy."""
  objective, model, sde, draws, p = _consistency_problem(
      "consistency_distillation", **{"training.teacher_workdir": "unused", "training.teacher_steps": 6,
                                     "training.teacher_solver": solver, "training.consistency_loss": distance,
                                     "training.consistency_target_ema": target_ema})
  student, target = {"w": 0.9, "b": 0.3}, {"w": 0.7, "b": -0.2}
  assert (objective.init_state(student) is None) == (target_ema == 0.0)
  aimed = target if target_ema else student
  n = 5
  index = np.minimum(np.floor(p["time"] * n).astype(int), n - 1)
  sigma, sigma_next = p["karras"](index, n), p["karras"](index + 1, n)
  m, m_next = p["mean_scale"](sigma)[:, None], p["mean_scale"](sigma_next)[:, None]
  noisy = m_next * (p["x"] + sigma_next[:, None] * p["noise"])

  def teacher(x_hat, level):  # E[x0 | x] of N(1.5, 0.5^2) data, in the scaled variable
    return 1.5 + 0.25 * (x_hat - 1.5) / (0.25 + level[:, None] ** 2)

  x_hat, h = noisy / m_next, (sigma - sigma_next)[:, None]
  slope = (x_hat - teacher(x_hat, sigma_next)) / sigma_next[:, None]
  stepped = x_hat + h * slope
  if solver == "heun":
    stepped = x_hat + 0.5 * h * (slope + (stepped - teacher(stepped, sigma)) / sigma[:, None])
  prediction = p["consistency_fn"](student, noisy, sigma_next)
  aim = p["consistency_fn"](aimed, m * stepped, sigma)
  expected = (p["pseudo_huber"](prediction, aim) if distance == "pseudo_huber"
              else np.mean((prediction - aim) ** 2, axis=-1))
  inputs = {"step": jnp.int32(0), "target": {key: jnp.float32(value) for key, value in target.items()}, "teacher": {}}
  loss = _objective_loss(objective, model, sde, p["x"], draws, student, inputs)
  assert len(set(index)) >= 4  # several intervals
  np.testing.assert_allclose(loss, expected, rtol=5e-5, atol=1e-6)
  assert np.abs(loss - expected / (sigma_next - sigma)).max() > 1e-2  # and not iCT's weighting
  if not distance:  # the default distance: squared, not iCT's pseudo-Huber
    assert np.abs(loss - p["pseudo_huber"](prediction, aim)).max() > 1e-3


def test_consistency_training_loss_by_hand():
  """One consistency-training loss in float64 numpy (Song & Dhariwal 2024) against the objective's to float32
  rounding, at train step 150 of 800 (the curriculum's N = 20): the interval from the discretised log-normal
  (inverse CDF of erf over the Karras grid's edges), f at sigma_i+1 against f at sigma_i along the same noise, the
  pseudo-Huber distance weighted by 1 / (sigma_i+1 - sigma_i)."""
  from scipy import special

  objective, model, sde, draws, p = _consistency_problem("consistency_training", **{"training.n_iters": 800})
  params, n = {"w": 0.9, "b": 0.3}, 20
  edges = p["karras"](np.arange(n + 1), n)
  cumulative = np.cumsum(np.diff(special.erf((np.log(edges) + 1.1) / (np.sqrt(2.0) * 2.0))))
  index = np.minimum(np.searchsorted(cumulative, p["time"] * cumulative[-1], side="right"), n - 1)
  assert np.abs(p["time"][:, None] * cumulative[-1] - cumulative[None]).min() > 1e-4  # no draw on an edge
  sigma, sigma_next = edges[index], edges[index + 1]

  def f(level):
    return p["consistency_fn"](params, p["mean_scale"](level)[:, None] * (p["x"] + level[:, None] * p["noise"]), level)

  expected = p["pseudo_huber"](f(sigma_next), f(sigma)) / (sigma_next - sigma)
  loss = _objective_loss(objective, model, sde, p["x"], draws, params, {"step": jnp.int32(150)})
  assert len(set(index)) >= 4
  np.testing.assert_allclose(loss, expected, rtol=5e-5, atol=1e-6)


# ------------------------------------------------------------------------------------ ECT and the recipes

def test_the_ect_mapping_is_the_papers_at_chosen_points():
  """r(t) = max(t (1 - 2^-(s+1) (1 + 8 / (1 + e^t))), 0) (Geng et al. 2024; locuslab/ect's `t_to_r_sigmoid`
  with q = 2, k = 8, b = 1) written out at chosen t and stages, and the 8 equal stages of training."""
  t = np.array([0.01, 0.3, 1.0, 2.5, 10.0])
  for stage in (0, 2, 7):
    expected = np.maximum(t * (1 - 2.0 ** -(stage + 1) * (1 + 8 / (1 + np.exp(t)))), 0.0)
    np.testing.assert_allclose(consistency.ect_r(jnp.asarray(t, jnp.float32), stage), expected, rtol=1e-5,
                               atol=1e-7)
  np.testing.assert_allclose(consistency.ect_r(jnp.float32(1.0), 0), 0.0)  # stage 0: 1 - (1 + 8 / (1 + e)) / 2 < 0
  assert [int(consistency.ect_stage(k, 8000)) for k in (0, 999, 1000, 3500, 7999, 9000)] == [0, 0, 1, 3, 7, 7]


def test_ect_loss_by_hand():
  """One ECT loss in float64 numpy against the objective's, at train step 150 of 800 (stage 1): t from the
  log-normal ln t ~ N(-1.1, 2^2) truncated to [sigma_min, sigma_max] (scipy's inverse CDF), r(t), f at t against
  f at r along the same noise or the data itself where r <= sigma_min, pseudo-Huber weighted by 1 / (t - r)."""
  from scipy import special

  objective, model, sde, draws, p = _consistency_problem("consistency_training", **{
      "training.n_iters": 800, "training.consistency_schedule": "ect"})
  params, stage = {"w": 0.9, "b": 0.3}, 1
  low, high = (special.ndtr((np.log(s) + 1.1) / 2.0) for s in (p["sigma_min"], p["sigma_max"]))
  t = np.exp(-1.1 + 2.0 * special.ndtri(low + p["time"] * (high - low)))
  r = np.maximum(t * (1 - 2.0 ** -(stage + 1) * (1 + 8 / (1 + np.exp(t)))), 0.0)
  on_data = r <= p["sigma_min"]
  assert 2 <= on_data.sum() <= 6  # both kinds of target

  def f(level):
    return p["consistency_fn"](params, p["mean_scale"](level)[:, None] * (p["x"] + level[:, None] * p["noise"]), level)

  target = np.where(on_data[:, None], p["x"], f(np.maximum(r, p["sigma_min"])))
  expected = p["pseudo_huber"](f(t), target) / (t - r)
  loss = _objective_loss(objective, model, sde, p["x"], draws, params, {"step": jnp.int32(150)})
  np.testing.assert_allclose(loss, expected, rtol=2e-4, atol=1e-6)


def _saved_run(path, seed, **values):
  """A tiny run of `values` saved in `path` (an EMA that differs from the raw weights); its EMA parameters."""
  from score_jax import checkpoint

  config = tiny_toy_config(**values)
  state = run_setup.RunSetup(config).initial_state(jax.random.key(seed))
  state = state.replace(ema_params=jax.tree.map(lambda p: p + 1.0, state.params))
  checkpoint.save(checkpoint.get_manager(str(path / checkpoint.SNAPSHOT_DIR)), 40, state)
  (path / "config.json").write_text(config.to_json_best_effort())
  return state.ema_params


def test_consistency_distillation_starts_from_its_teachers_weights(tmp_path):
  """An EDM-preconditioned teacher of the same network and sigma_data starts the student (its EMA weights); a VP
  score teacher (the `reference` parameterization) or another sigma_data does not (random weights), and such a
  run given as `training.init_workdir` of a consistency objective is refused in one line."""
  edm = _saved_run(tmp_path / "edm", 5, **{"training.objective": "edm", "model.parameterization": "edm"})
  _saved_run(tmp_path / "vp", 6, **{"training.objective": "dsm"})
  student = {"training.objective": "consistency_distillation", "training.teacher_workdir": str(tmp_path / "edm")}

  def start(**values):
    return jax.tree.leaves(run_setup.RunSetup(tiny_toy_config(**{**student, **values})).init_state().params)

  for got, want in zip(start(), jax.tree.leaves(edm)):
    np.testing.assert_array_equal(got, want)
  for values in ({"model.sigma_data": 1.15}, {"training.teacher_workdir": str(tmp_path / "vp")},
                 {"training.init_from_teacher": False}):
    assert not np.array_equal(start(**values)[0], jax.tree.leaves(edm)[0]), values
  for objective in ("consistency_distillation", "consistency_training"):
    with pytest.raises(ValueError, match=r"training.init_workdir=.*cannot start a consistency function: its "
                                         r"model.parameterization='reference'"):
      start(**{"training.objective": objective, "training.init_workdir": str(tmp_path / "vp")})


def test_the_recipes_settings_are_checked_in_one_line():
  """CD's distance defaults to the squared l2, iCT / ECT's to pseudo-Huber; a target EMA outside [0, 1) and an
  unknown schedule are one-line errors naming the key."""
  def objective(**values):
    config = tiny_toy_config(**values)
    return objectives.get_objective(config, sde_lib.get_sde(config)[0], models.get_model(config))

  assert objective(**{"training.objective": "consistency_distillation",
                      "training.teacher_workdir": "unused"}).distance == "l2"
  assert objective(**{"training.objective": "consistency_training"}).distance == "pseudo_huber"
  assert objective(**{"training.objective": "consistency_training",
                      "training.consistency_schedule": "ect"}).schedule == "ect"
  with pytest.raises(ValueError, match=r"training.consistency_target_ema=1.0 must lie in \[0, 1\)"):
    objective(**{"training.objective": "consistency_distillation", "training.teacher_workdir": "unused",
                 "training.consistency_target_ema": 1.0})
  with pytest.raises(ValueError, match="training.consistency_schedule='ctm' is not valid; choose one of: ect, ict"):
    objective(**{"training.objective": "consistency_training", "training.consistency_schedule": "ctm"})
