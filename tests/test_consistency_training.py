"""Consistency training (`training.objective = "consistency_training"`) and the `consistency` parameterization."""

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from score_jax import models, objectives, parameterization as param_lib, sampling
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
  sde, _ = sde_lib.get_sde(config)
  model = models.get_model(config)
  assert isinstance(models.parameterization_of(model), param_lib.Consistency)
  objective = objectives.get_objective(sde, model, objectives.LossConfig.from_config(config))
  variables, ema, state = train_on_gaussian(config, objective, 3000, ema_decay=0.995)
  assert int(state["step"]) == 3000
  assert_samples_the_gaussian(models.get_denoiser_fn(sde, model, {**variables, "params": ema}), sde, 0.15)


def test_bad_settings_are_one_line_errors():
  config = tiny_toy_config(**{"training.objective": "consistency_training"})
  sde, _ = sde_lib.get_sde(config)
  for key, value, message in [("consistency_schedule", "linear", "training.consistency_schedule='linear'"),
                              ("consistency_loss", "l1", "training.consistency_loss='l1'")]:
    config.training[key] = value
    with pytest.raises(ValueError, match=message):
      objectives.check_loss_config(objectives.LossConfig.from_config(config), sde)
    config.training[key] = {"consistency_schedule": "ict", "consistency_loss": "pseudo_huber"}[key]
  config.model.parameterization = "flow"
  with pytest.raises(ValueError, match="trains model.parameterization='consistency'"):
    models.get_model(config)


def test_init_workdir_starts_from_a_trained_runs_weights(tmp_path):
  """`training.init_workdir`: the run starts from that run's EMA parameters (ECT's consistency tuning of a
  diffusion model); a network of another shape, or no run there, is refused in one line."""
  from score_jax import checkpoint, optim, run_setup, train_state

  source = tiny_toy_config(**{"training.objective": "edm", "model.parameterization": "edm"})
  state = train_state.init_train_state(jax.random.key(5), source, optim.get_optimizer(source))
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
  """A student distilled from the exact Gaussian denoiser (Heun steps) on 1-D N(1.5, 0.5^2): one-step samples
  have the data's mean and std."""
  config = tiny_toy_config(**{"training.objective": "consistency_distillation", "training.n_iters": 2000,
                              "training.teacher_workdir": "unused", "data.dim": 1, "model.nf": 64,
                              "model.num_res_blocks": 2, "model.embedding_dim": 32})
  sde, _ = sde_lib.get_sde(config)
  model = models.get_model(config)
  objective = objectives.get_objective(sde, model, objectives.LossConfig.from_config(config))

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
  from score_jax import checkpoint, optim, run_setup, train_state

  teacher = tiny_toy_config(**{"training.objective": "edm", "model.parameterization": "edm", "training.sde": path})
  state = train_state.init_train_state(jax.random.key(3), teacher, optim.get_optimizer(teacher))
  checkpoint.save(checkpoint.get_manager(str(tmp_path / "teacher" / checkpoint.SNAPSHOT_DIR)), 40, state)
  (tmp_path / "teacher" / "config.json").write_text(teacher.to_json_best_effort())
  student = tiny_toy_config(**{"training.objective": objective, "training.sde": path,
                               "training.teacher_workdir": str(tmp_path / "teacher")})
  start = run_setup.RunSetup(student).init_state()
  for got, want in zip(jax.tree.leaves(start.objective_state["teacher"]["params"]), jax.tree.leaves(state.ema_params)):
    np.testing.assert_array_equal(got, want)
  teacher.training.sde = other_path  # the same weights, another path
  (tmp_path / "teacher" / "config.json").write_text(teacher.to_json_best_effort())
  with pytest.raises(ValueError, match="was trained on another path"):
    run_setup.RunSetup(student).init_state()
  if objective != "scm":  # without a teacher, scm is consistency training
    student.training.teacher_workdir = ""
    with pytest.raises(ValueError, match="needs training.teacher_workdir"):
      run_setup.validate_config(student)
