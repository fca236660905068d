"""Test helpers: tiny configs, the reference's analytic toy network, Gaussian scores, untrained runs."""

import os
import pathlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from configs.toy import default as toy_default
from score_jax import checkpoint, models, objectives, run_setup

# The reference's numbers (score_sde_pytorch@cb1f359, cross-checked against the JAX original):
# tests/fixtures/REFCHECK.md says what each file holds.
FIXTURES = pathlib.Path(__file__).resolve().parent / "fixtures"


def save_untrained_run(config, workdir, step=2):
  """A training workdir of `config`'s untrained model: its config.json and a checkpoint of the initial state
  (key 0) at `step`, as training writes them (nothing trained, nothing jitted); returns the state."""
  run = run_setup.RunSetup(config, companions=())
  state = run.initial_state(jax.random.PRNGKey(0)).replace(step=jnp.asarray(step, jnp.int32))
  checkpoint.save_run_config(run.config, workdir)
  checkpoint.save(checkpoint.get_manager(os.path.join(workdir, checkpoint.SNAPSHOT_DIR)), step, state)
  return state


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


def gaussian_denoiser(sde, mu=1.5, scale=0.5):
  """E[x0 | x(t)] for 1-D data N(mu, scale^2)."""
  def denoise(x, t):
    m, std = sde.marginal_coeffs(t)
    m, std = m[:, None], std[:, None]
    return mu + m * scale**2 * (x - m * mu) / (m**2 * scale**2 + std**2)
  return denoise


def train_on_gaussian(config, objective, steps, ema_decay=None, dim=1):
  """`steps` of Adam (1e-3) on batches of 256 from 1-D N(1.5, 0.5^2) (`dim`-D N(1.5, 0.5^2 I)) with `objective`,
  its state advanced after each step as the train step does; returns the variables (raw parameters), their EMA
  (None without `ema_decay`) and the objective's state."""
  loss_fn = objectives.get_loss_fn(objective, train=True)
  variables = models.init_model(jax.random.key(0), config)
  optimizer = optax.adam(1e-3)
  frozen = objective.frozen_variables()

  @jax.jit
  def step(params, opt_state, state, ema, rng, k):
    data_key, loss_key = jax.random.split(rng)
    batch = 1.5 + 0.5 * jax.random.normal(data_key, (256, dim))
    inputs = {"step": k, **(state or {}), **frozen}
    grads = jax.grad(lambda p: loss_fn(loss_key, {**variables, "params": p}, batch, inputs).loss)(params)
    updates, opt_state = optimizer.update(grads, opt_state)
    params = optax.apply_updates(params, updates)
    if ema_decay is not None:
      ema = jax.tree.map(lambda a, b: ema_decay * a + (1 - ema_decay) * b, ema, params)
    if state is not None:
      state = objective.update_state(state, params)
    return params, opt_state, state, ema

  params = ema = variables["params"]
  opt_state, state = optimizer.init(params), objective.init_state(params)
  for k in range(steps):
    params, opt_state, state, ema = step(params, opt_state, state, ema, jax.random.fold_in(jax.random.key(1), k),
                                         jnp.asarray(k, jnp.int32))
  return {**variables, "params": params}, ema if ema_decay is not None else None, state


def assert_samples_the_gaussian(denoiser, sde, mean_tolerance, steps=(1, 2)):
  """Multistep consistency samples (4096, from key 2) of `denoiser` at each step count have the helpers' data
  mean 1.5 within `mean_tolerance` and std 0.5 within 15%."""
  import numpy as np
  from score_jax import sampling
  for n in steps:
    samples = np.asarray(sampling.consistency_sample(jax.random.key(2), denoiser, sde, (4096, 1), steps=n).samples)
    assert abs(samples.mean() - 1.5) < mean_tolerance and abs(samples.std() / 0.5 - 1) < 0.15, (
        n, samples.mean(), samples.std())
