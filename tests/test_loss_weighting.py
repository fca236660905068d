"""The learned loss weighting (`training.loss_weighting = "uncertainty"`, EDM2's Sec. 5): its optimum u(sigma) is
the log of the loss expected at sigma."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from score_jax import models, objectives
from score_jax import sde as sde_lib
from score_jax.objectives import edm
from tests.helpers import tiny_toy_config, train_on_gaussian

MU, SCALE, SIGMA_DATA = 1.5, 0.5, 1.0  # tests/helpers' data; sigma_data off its std, so the ideal u varies


def test_the_learned_log_variance_is_the_log_of_the_expected_loss():
  """1-D N(1.5, 0.5^2), the edm objective with sigma_data = 1: after 2000 steps u(sigma) matches ln of
  lambda(sigma) s^2 sigma^2 / (s^2 + sigma^2) (the exact denoiser's expected loss, a closed form) within 0.2,
  and ln of the trained denoiser's own expected loss (Monte Carlo) within 0.1, for sigma from 0.05 to 5."""
  config = tiny_toy_config(**{"training.objective": "edm", "model.parameterization": "edm",
                              "training.loss_weighting": "uncertainty", "model.sigma_data": SIGMA_DATA,
                              "training.sde": "vesde", "data.dim": 1, "model.nf": 64, "model.num_res_blocks": 2,
                              "model.embedding_dim": 32, "training.edm_p_mean": -0.5, "training.edm_p_std": 1.5})
  sde, _ = sde_lib.get_sde(config)
  model = models.get_model(config)
  objective = objectives.get_objective(config, sde, model)
  variables, _, _ = train_on_gaussian(config, objective, 2000)
  sigma = jnp.asarray([0.05, 0.2, 0.5, 1.0, 2.0, 5.0])
  learned = np.asarray(model.apply(variables, sigma, method="log_variance"))
  weight = np.asarray(edm.edm_weight(sigma, SIGMA_DATA))
  closed_form = np.log(weight * SCALE**2 * sigma**2 / (SCALE**2 + sigma**2))
  np.testing.assert_allclose(learned, closed_form, atol=0.2)
  denoiser = models.get_denoiser_fn(sde, model, variables)
  x0 = MU + SCALE * jax.random.normal(jax.random.key(5), (8192, 1))
  z = jax.random.normal(jax.random.key(6), (8192, 1))
  expected = [float(edm.edm_loss(denoiser, sde, x0, jnp.full((8192,), s), z, sigma_data=SIGMA_DATA).loss)
              for s in np.asarray(sigma)]
  np.testing.assert_allclose(learned, np.log(expected), atol=0.1)


def test_only_objectives_that_know_the_noise_level_take_it():
  config = tiny_toy_config(**{"training.objective": "ssm", "training.loss_weighting": "uncertainty"})
  sde, _ = sde_lib.get_sde(config)
  with pytest.raises(ValueError, match="training.loss_weighting='uncertainty' weighs losses by noise level"):
    objectives.get_objective(config, sde, models.get_model(config))
  config.training.loss_weighting = "learned"
  with pytest.raises(ValueError, match="training.loss_weighting='learned' is not valid"):
    objectives.get_objective(config, sde, models.get_model(config))
  with pytest.raises(ValueError, match="no learned loss weighting"):
    model = models.get_model(tiny_toy_config())
    variables = models.init_model(jax.random.key(0), tiny_toy_config())
    model.apply(variables, jnp.ones(2), method="log_variance")
