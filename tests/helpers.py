"""Test helpers: tiny configs, the reference's analytic toy network, Gaussian scores."""

import pathlib

import flax.linen as nn
import jax.numpy as jnp

from configs.toy import default as toy_default

# The reference's numbers (score_sde_pytorch@cb1f359, cross-checked against the JAX original):
# tests/fixtures/REFCHECK.md says what each file holds.
FIXTURES = pathlib.Path(__file__).resolve().parent / "fixtures"


def tiny_toy_config(**overrides):
  """The checkerboard config shrunk to run a few steps in seconds."""
  config = toy_default.get_default_configs()
  config.training.batch_size = 64
  config.training.n_iters = 40
  config.training.n_jitted_steps = 5
  config.training.log_freq = 10
  config.training.eval_freq = 20
  config.training.snapshot_freq = 20
  config.training.snapshot_freq_for_preemption = 10
  config.training.snapshot_sampling = False
  config.sampling.batch_size = 64
  config.eval.batch_size = 64
  config.eval.num_samples = 64
  config.eval.num_eval_batches = 2
  config.data.num_eval = 256
  config.model.nf = 16
  config.model.num_res_blocks = 1
  config.model.embedding_dim = 16
  config.model.num_scales = 20
  # The plain MLP: input Fourier features of the far-off samples of a 40-step model turn float rounding
  # (reduction order across devices) into visible differences. tests/test_models.py tests the features.
  config.model.input_frequencies = 0
  for key, value in overrides.items():
    section, name = key.split(".")
    config[section][name] = value
  return config


class ReferenceToyModel(nn.Module):
  """The fixtures' analytic network: tanh(x / 2) + 0.001 * float(labels)."""

  @nn.compact
  def __call__(self, x, labels, train=False):
    return jnp.tanh(0.5 * x) + 0.001 * labels.astype(jnp.float32).reshape((-1,) + (1,) * (x.ndim - 1))


def nhwc(a):
  return jnp.asarray(a).transpose(0, 2, 3, 1)
