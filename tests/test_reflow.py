"""Reflow (`training.objective = "reflow"`, Liu et al. 2023): flow matching on a teacher's (sample, noise) pairs."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from score_jax import models, objectives
from score_jax import sde as sde_lib
from score_jax.objectives import reflow
from tests.helpers import gaussian_denoiser, tiny_toy_config

MU, SCALE = 1.5, 0.5


def test_the_teachers_pairs_are_its_ode_flow_map():
  """On 1-D N(1.5, 0.5^2) with the exact denoiser, the teacher's ODE maps x(T) = std(T) z to mu + s (sigma(T) z -
  mu) / sqrt(s^2 + sigma(T)^2) ((x / m - mu) / sqrt(s^2 + sigma^2) is constant along it): Heun's steps converge to
  it at second order (measured max errors at 18 / 50 / 200 levels: 0.097 / 0.010 / 0.0006), Euler's are further
  off."""
  sde = sde_lib.RectifiedFlow()
  z = jnp.asarray(np.random.default_rng(0).normal(size=(8, 1)), jnp.float32)
  sigma_end = float(sde.noise_level(jnp.float32(sde.T)))
  exact = MU + SCALE * (sigma_end * z - MU) / np.sqrt(SCALE**2 + sigma_end**2)

  def error(solver, levels):
    pairs = reflow.teacher_sample(gaussian_denoiser(sde), sde, z, t_min=1e-3, levels=levels, solver=solver)
    return float(jnp.abs(pairs - exact).max())

  assert error("heun", 200) < 1e-3 and error("heun", 50) < 0.15 * error("heun", 18) < error("euler", 18)


@dataclasses.dataclass
class FieldCall:
  """A stand-in `ModelCall` whose network output is a given velocity field."""
  sde: object
  field: object
  class_labels: object = None

  def output_fn(self):
    return self.field


def test_the_straight_field_of_the_pairs_has_zero_loss():
  """With the exact teacher, the pairs x(z) = a + b z are joined by straight lines whose velocity z - x(z) is a
  function of (x_t, t): that field's reflow loss is 0, the teacher's own (curved) marginal velocity's is not."""
  config = tiny_toy_config(**{"training.objective": "reflow", "training.sde": "rectified_flow", "data.dim": 1,
                              "model.parameterization": "flow", "training.teacher_workdir": "unused",
                              "training.reduce_mean": True, "training.teacher_steps": 200})
  sde, _ = sde_lib.get_sde(config)
  objective = objectives.get_objective(config, sde, models.get_model(config))

  class ExactTeacher:
    variables, sampling_eps = {}, 1e-3

    def denoiser_fn(self, variables, sde, class_labels=None):
      return gaussian_denoiser(sde, MU, SCALE)

  objective = dataclasses.replace(objective, teacher=ExactTeacher())
  sigma_end = float(sde.noise_level(jnp.float32(sde.T)))
  b = SCALE * sigma_end / np.sqrt(SCALE**2 + sigma_end**2)
  a = MU - SCALE * MU / np.sqrt(SCALE**2 + sigma_end**2)

  def straight(x, t):
    t = t[:, None]
    z = (x - (1 - t) * a) / ((1 - t) * b + t)
    return z - a - b * z

  def marginal(x, t):  # v = (x - D) / t on the linear path
    return (x - gaussian_denoiser(sde, MU, SCALE)(x, t)) / t[:, None]

  keys = objectives.purpose_keys(jax.random.key(0))
  draws = objective.draw(keys, jnp.zeros((512, 1)))
  inputs = {"step": 0, **objective.frozen_variables()}
  loss = {name: float(objective.loss(FieldCall(sde, field), jnp.zeros((512, 1)), draws, inputs).loss)
          for name, field in [("straight", straight), ("marginal", marginal)]}
  assert loss["straight"] < 1e-4 and loss["marginal"] > 1e-2, loss
