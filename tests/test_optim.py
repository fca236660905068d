"""The learning-rate schedules of `optim` against their closed forms."""

import math

import numpy as np
import pytest

from score_jax import optim
from tests.helpers import tiny_toy_config


def test_constant_schedule_is_the_reference_warmup():
  config = tiny_toy_config(**{"optim.lr": 0.1, "optim.warmup": 4, "optim.schedule": "constant"})
  rate = optim.get_learning_rate_fn(config)
  np.testing.assert_allclose([float(rate(c)) for c in (0, 2, 4, 40)], [0.0, 0.05, 0.1, 0.1], rtol=1e-6)


def test_cosine_schedule_decays_to_zero_at_n_iters():
  config = tiny_toy_config(**{"optim.lr": 0.1, "optim.warmup": 10, "optim.schedule": "cosine",
                              "training.n_iters": 110})
  rate = optim.get_learning_rate_fn(config)
  for count in (0, 5, 10, 35, 60, 110, 200):
    progress = min(max((count - 10) / 100, 0.0), 1.0)
    expected = 0.1 * min(count / 10, 1.0) * 0.5 * (1 + math.cos(math.pi * progress))
    np.testing.assert_allclose(float(rate(count)), expected, rtol=1e-5, atol=1e-8)


def test_inverse_sqrt_schedule_is_edm2s_decay():
  """EDM2's Eq. (15) after the warm-up: lr / sqrt(max(count / ref_steps, 1)); Adam's beta2 from the config."""
  config = tiny_toy_config(**{"optim.lr": 0.1, "optim.warmup": 10, "optim.schedule": "inverse_sqrt",
                              "optim.ref_steps": 100})
  rate = optim.get_learning_rate_fn(config)
  for count in (0, 5, 10, 100, 400, 10_000):
    expected = 0.1 * min(count / 10, 1.0) / math.sqrt(max(count / 100, 1.0))
    np.testing.assert_allclose(float(rate(count)), expected, rtol=1e-5, atol=1e-8)
  config.optim.ref_steps = 0
  with pytest.raises(ValueError, match="optim.ref_steps=0"):
    optim.get_learning_rate_fn(config)


def test_unknown_schedule_names_the_key():
  with pytest.raises(ValueError, match="optim.schedule='linear' is not valid; choose one of: constant, cosine"):
    optim.get_learning_rate_fn(tiny_toy_config(**{"optim.schedule": "linear"}))
