"""`training.objective = "autoencoder"` (`score_jax/objectives/autoencoder.py`): the loss against a numpy hand
computation, training through the driver, `load_autoencoder(workdir)` against the checkpoint's EMA network,
evaluation and the refusals."""

import itertools
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs.latent.digits_autoencoder import get_config as digits_autoencoder
from score_jax import objectives, run_setup
from score_jax.autoencoder import LATENT_SCALE_FILE, Autoencoder, load_autoencoder
from score_jax.drivers import evaluate, generate, train
from score_jax.metric_writer import read_metrics
from score_jax.objectives.base import normal_per_example, purpose_keys


def tiny_config(**overrides):
  """configs/latent/digits_autoencoder.py shrunk to run 40 steps in seconds (8x8x1 digits -> 4x4x2)."""
  config = digits_autoencoder()
  config.training.update(batch_size=32, n_iters=40, n_jitted_steps=5, log_freq=5, eval_freq=20, snapshot_freq=20,
                         snapshot_freq_for_preemption=20)
  config.model.update(ae_channels=(8, 16), ae_norm_groups=4, ema_rate=0.9)
  config.optim.update(lr=3e-3, warmup=0)
  config.eval.update(batch_size=32, num_eval_batches=2, end_ckpt=2)
  config.sampling.batch_size = 8
  for key, value in overrides.items():
    section, name = key.split(".")
    config[section][name] = value
  return config


def hand_loss(network, variables, x, eps, kind, kl_weight):
  """Per-example loss in numpy from the network's own encode / decode: mean |x - decode(z)|^p + w KL / (pixels)."""
  mean, logvar = (np.asarray(a, np.float64) for a in network.apply(variables, x, method="encode"))
  z = mean + np.exp(0.5 * logvar) * np.asarray(eps, np.float64)
  error = np.asarray(network.apply(variables, jnp.asarray(z, jnp.float32), method="decode"), np.float64) - np.asarray(x)
  reconstruction = (error**2 if kind == "mse" else np.abs(error)).reshape(len(x), -1).mean(axis=1)
  kl = 0.5 * (mean**2 + np.exp(logvar) - 1.0 - logvar).reshape(len(x), -1).sum(axis=1)
  return reconstruction + kl_weight * kl / x[0].size


@pytest.mark.parametrize("kind", ["mse", "l1"])
def test_the_loss_is_reconstruction_plus_weighted_kl(kind):
  """Through `get_loss_fn` (the train step's loss: the `posterior` purpose's draws), at fixed parameters."""
  run = run_setup.RunSetup(tiny_config(**{"training.reconstruction_loss": kind, "training.kl_weight": 0.3}),
                           companions=())
  variables = run.initial_state(jax.random.PRNGKey(0)).variables()
  x = jax.random.uniform(jax.random.PRNGKey(1), (4, 8, 8, 1), minval=-1.0, maxval=1.0)
  rng = jax.random.PRNGKey(2)
  out = objectives.get_loss_fn(run.objective, train=True)(rng, variables, x)
  eps = normal_per_example(purpose_keys(rng)["posterior"], jnp.zeros((4, 4, 4, 2)))
  expected = hand_loss(run.model.network, variables, x, eps, kind, 0.3)
  assert float(np.std(np.asarray(out.terms["kl"]))) > 0  # the KL term is not trivially zero at the initial weights
  np.testing.assert_allclose(np.asarray(out.per_example), expected, rtol=1e-5)
  np.testing.assert_allclose(float(out.loss), expected.mean(), rtol=1e-5)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """A 40-step run through the training driver: `(config, workdir, final state)`."""
  workdir = str(tmp_path_factory.mktemp("autoencoder"))
  config = tiny_config()
  return config, workdir, train.train_and_evaluate(config, workdir)


def test_training_through_the_driver_reduces_the_loss(trained):
  config, workdir, final = trained
  losses = [row["loss"] for row in read_metrics(os.path.join(workdir, "metrics.jsonl")) if "loss" in row]
  assert int(final.step) == 40 and len(losses) == 8
  assert losses[-1] < 0.5 * losses[0], losses  # measured: 1.03 -> 0.19
  with open(os.path.join(workdir, LATENT_SCALE_FILE)) as f:
    assert set(json.load(f)) == {"20", "40"}  # recorded at each snapshot
  assert os.path.exists(os.path.join(workdir, "samples", "iter_40_reconstructions.png"))  # no samples: reconstructions


def test_load_autoencoder_reads_the_workdir(trained):
  """The network of config.json with the final EMA parameters, scaled by 1 / std of the training latents."""
  config, workdir, final = trained
  loaded = load_autoencoder(workdir)
  assert isinstance(loaded, Autoencoder) and loaded.shift_factor == 0.0
  assert (loaded.latent_channels, loaded.downsample_factor) == (2, 2)
  run = run_setup.RunSetup(config, companions=())
  network, variables = run.model.network, {"params": jax.device_get(final.ema_params)}
  x = run.scaler(next(iter(run.dataset.eval_batches())))
  for got, want in zip(loaded.encode(x), network.apply(variables, x, method="encode")):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
  z = jax.random.normal(jax.random.PRNGKey(3), (5, 4, 4, 2))
  np.testing.assert_allclose(loaded.decode(z), network.apply(variables, z, method="decode"), rtol=1e-5, atol=1e-6)
  # scaling_factor: 1 / std of the posterior means of the first training examples (train.LATENT_SCALE_BATCHES).
  batches = itertools.islice(run.dataset.eval_batches(split="train"), train.LATENT_SCALE_BATCHES)
  means = np.concatenate([np.asarray(network.apply(variables, run.scaler(b), method="encode")[0]).ravel()
                          for b in batches])
  np.testing.assert_allclose(loaded.scaling_factor, 1.0 / np.std(means), rtol=1e-4)


def test_eval_reports_the_held_out_loss_and_sampling_refuses(trained):
  config, workdir, final = trained
  config = tiny_config(**{"eval.enable_sampling": True})  # switched off, with a warning: an autoencoder draws none
  reports = evaluate.evaluate(config, workdir)
  assert set(reports) == {1, 2} and set(reports[2]) == {"ckpt", "step", "eval_loss"}
  assert 0.0 < reports[2]["eval_loss"] < 0.5
  with pytest.raises(ValueError, match="trains an autoencoder, which draws no samples") as error:
    run_setup.RunSetup(run_setup.trained_run_config(workdir), companions=()).sampler(4)
  assert "\n" not in str(error.value)
  with pytest.raises(ValueError, match="trains an autoencoder, which draws no samples"):  # --mode=sample
    generate.generate(config, workdir, [0, 1], os.path.join(workdir, "png"))


@pytest.mark.parametrize("overrides, message", [
    ({"training.reconstruction_loss": "lpips"}, "training.reconstruction_loss='lpips' is not valid"),
    ({"training.kl_weight": -1.0}, "training.kl_weight=-1.0 must be >= 0"),
    ({"model.name": "ncsnpp"}, "trains model.name='autoencoder_kl', not a NCSNpp"),
    ({"training.objective": "dsm"}, "model.name='autoencoder_kl' is trained by training.objective='autoencoder'"),
    ({"model.ae_channels": (8, 10)}, r"model.ae_channels=\(8, 10\) must be positive multiples of"),
    ({"model.num_classes": 10}, "model.num_classes=10: class-conditional networks are"),
    ({"model.parameterization": "eps"}, "trains model.parameterization='autoencoder'"),
])
def test_bad_keys_are_refused_in_one_line(overrides, message):
  with pytest.raises(ValueError, match=message) as error:
    run_setup.validate_config(tiny_config(**overrides))
  assert "\n" not in str(error.value)
