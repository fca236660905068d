"""Continuous-time consistency models (`training.objective = "scm"`, Lu & Song 2025) on the cosine path."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from score_jax import models, objectives, parameterization as param_lib, run_setup
from score_jax import sde as sde_lib
from score_jax.objectives import scm
from tests.helpers import assert_samples_the_gaussian, gaussian_denoiser, tiny_toy_config, train_on_gaussian


def scm_config(**overrides):
  """The tiny toy config trained by sCM, prepared as every entry point prepares it (the objective's
  parameterization set)."""
  config = tiny_toy_config(**{"training.objective": "scm", "training.sde": "cosine",
                              "training.loss_weighting": "uncertainty", **overrides})
  return run_setup.prepare_config(config)


def exact_consistency_fn(sde, mu=1.5, scale=0.5):
  """The flow map to t = 0 of 1-D data N(mu, scale^2): (x / m - mu) / sqrt(scale^2 + sigma^2) is constant
  along the probability-flow ODE."""
  def f(x, t):
    m, std = (c[:, None] for c in sde.marginal_coeffs(t))
    return mu + scale * (x / m - mu) / jnp.sqrt(scale**2 + (std / m) ** 2)
  return f


def test_scm_trains_the_flow_parameterization_on_the_cosine_path_only():
  model = models.get_model(scm_config())
  assert isinstance(models.parameterization_of(model), param_lib.TrigFlow)
  config = scm_config(**{"training.sde": "vpsde"})
  with pytest.raises(ValueError, match="set training.sde='cosine'"):
    objectives.get_objective(config, sde_lib.get_sde(config)[0], model)


def test_the_jvp_tangent_equals_a_finite_difference():
  """dv/dt along a direction through the network by `jax.jvp` against a central difference (step 1e-3 in t: the
  toy network reads 999 t, so a tenth of a label unit)."""
  config = scm_config(**{"model.nf": 32})
  model = models.get_model(config)
  variables = models.init_model(jax.random.key(0), config)
  sde = sde_lib.CosinePath()
  velocity = models.get_output_fn(sde, model, variables)
  rng = np.random.default_rng(0)
  x, direction = (jnp.asarray(rng.normal(size=(5, 2)), jnp.float32) for _ in range(2))
  t = jnp.asarray([0.1, 0.3, 0.5, 0.7, 0.9], jnp.float32)
  _, rate = scm.velocity_tangent(velocity, x, t, direction)
  h = 1e-4
  difference = (velocity(x + h * direction, t + h) - velocity(x - h * direction, t - h)) / (2 * h)
  np.testing.assert_allclose(rate, difference, rtol=2e-2, atol=2e-3)
  assert float(jnp.abs(rate).max()) > 0.01  # not trivially zero


def test_the_consistency_tangent_vanishes_at_the_exact_consistency_function():
  """g = cos(theta) df/dtheta along the exact ODE of Gaussian data is 0 for the exact flow map f = cos x - sin F,
  and not for a wrong one; the ODE velocity from the exact denoiser."""
  sde = sde_lib.CosinePath()
  denoise = gaussian_denoiser(sde)

  def velocity_of(f):
    def velocity(x, t):  # v = (pi / 2) F with f = cos x - sin F
      cos, sin = (c[:, None] for c in sde.marginal_coeffs(t))
      return scm.ANGLE_RATE * (cos * x - f(x, t)) / sin
    return velocity

  x = jnp.asarray(np.random.default_rng(1).normal(size=(6, 1)) + 1.0, jnp.float32)
  t = jnp.linspace(0.15, 0.9, 6)
  m, std, = (c[:, None] for c in sde.marginal_coeffs(t))
  d = denoise(x, t)
  dx_dt = scm.ANGLE_RATE * (m * (x - m * d) / std - std * d)
  for f, zero in [(exact_consistency_fn(sde), True), (exact_consistency_fn(sde, scale=0.6), False)]:
    v, rate = scm.velocity_tangent(velocity_of(f), x, t, dx_dt)
    g = scm.consistency_tangent(v, rate, x, t, dx_dt)
    assert (float(jnp.abs(g).max()) < 1e-4) == zero, float(jnp.abs(g).max())


@pytest.mark.parametrize("distillation", [False, True], ids=["sct", "scd"])
def test_scm_learns_the_flow_map_of_a_gaussian(distillation):
  """1-D N(1.5, 0.5^2): after 800 steps of sCT (the path's own velocity) or sCD (the exact denoiser's ODE
  velocity) with the adaptive weighting, one- and two-step samples have the data's mean and std (measured,
  mean / std at 1 and 2 steps: sCT 1.472 / 0.538, 1.483 / 0.539; sCD 1.499 / 0.473, 1.508 / 0.480)."""
  config = scm_config(**{"training.scm_warmup_steps": 200, "training.edm_p_mean": -0.4, "training.edm_p_std": 1.4,
                         "training.teacher_workdir": "unused" if distillation else "", "data.dim": 1,
                         "model.nf": 64, "model.num_res_blocks": 2, "model.embedding_dim": 32})
  sde, _ = sde_lib.get_sde(config)
  model = models.get_model(config)
  objective = objectives.get_objective(config, sde, model)
  if distillation:
    class ExactTeacher:
      variables = {}

      def denoiser_fn(self, variables, sde, class_labels=None):
        return gaussian_denoiser(sde)

    objective = dataclasses.replace(objective, teacher=ExactTeacher())
  variables, ema, state = train_on_gaussian(config, objective, 800, ema_decay=0.99)
  assert state is None  # no state of its own: the warm-up reads the train step's counter
  assert_samples_the_gaussian(models.get_denoiser_fn(sde, model, {**variables, "params": ema}), sde, 0.1)
