"""Noise-conditional classifier training: learning, accuracy by noise level, exact resumption, errors, gradients."""

import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs.classifier import digits as digits_classifier
from score_jax import classifier, datasets, sde as sde_lib
from score_jax.drivers import train_classifier
from score_jax.config_utils import validate_classifier_config
from score_jax.metric_writer import read_metrics


def tiny_config(n_iters=20):
  """A WRN-10-1 with a 16-d noise embedding on 8 px digits: compiles and runs 20 steps in seconds."""
  config = digits_classifier.get_config()
  config.data.image_size = 8
  config.eval.batch_size = 64
  c = config.classifier
  c.blocks_per_group, c.channel_multiplier, c.embedding_size, c.temb_dim = 1, 1, 8, 16
  c.batch_size, c.n_iters, c.log_freq, c.eval_freq, c.checkpoint_freq = 32, n_iters, 10, 20, 10
  c.num_eval_batches = 2
  c.optim.lr, c.optim.warmup = 5e-3, 0
  return config


def params_of(state):
  return jax.device_get(state.params)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """The workdir and final state of an uninterrupted 20-step run."""
  workdir = str(tmp_path_factory.mktemp("uninterrupted"))
  return workdir, train_classifier.train_classifier(tiny_config(), workdir)


def low_noise_loss(config, variables_list):
  """Held-out cross-entropy at t in [eps, 0.2] with fixed noise, for each of `variables_list`."""
  sde, eps = sde_lib.get_sde(config)
  model = classifier.get_classifier(config)
  images, labels = next(iter(datasets.get_dataset(config, labels=True).eval_batches()))
  scaled = datasets.get_data_scaler(config)(images)
  loss_fn = jax.jit(lambda v: classifier.get_loss_fn(sde, model, eps)(jax.random.PRNGKey(0), v, scaled, labels,
                                                                      (eps, 0.2)).loss)
  return [float(loss_fn(variables)) for variables in variables_list]


def test_training_lowers_the_loss_and_logs_accuracy_by_noise_bin(trained):
  workdir, state = trained
  config = tiny_config()
  initial = classifier.init_state(jax.random.PRNGKey(0), config, classifier.get_optimizer(config))  # untrained
  before, after = low_noise_loss(config, [initial.variables(), state.variables()])
  assert before > 2.0 and after < before - 0.3, (before, after)  # ln 10 = 2.30: chance level
  records = read_metrics(os.path.join(workdir, "classifier", "metrics.jsonl"))
  assert [r["step"] for r in records if "loss" in r] == [10, 20]
  evaluation = [r for r in records if "eval_accuracy" in r]
  assert [r["step"] for r in evaluation] == [20]
  bins = sorted(k for k in evaluation[0] if k.startswith("eval_accuracy_t"))
  assert bins == ["eval_accuracy_t0.00-0.20", "eval_accuracy_t0.20-0.40", "eval_accuracy_t0.40-0.60",
                  "eval_accuracy_t0.60-0.80", "eval_accuracy_t0.80-1.00"]
  accuracies = np.array([evaluation[0][k] for k in bins])
  assert np.all((0 <= accuracies) & (accuracies <= 1))
  np.testing.assert_allclose(accuracies.mean(), evaluation[0]["eval_accuracy"], rtol=1e-5)


def test_resume_after_a_stop_equals_the_uninterrupted_run(trained, tmp_path):
  workdir, uninterrupted = trained
  stopped = str(tmp_path / "stopped")
  shutil.copytree(workdir, stopped)  # the same run stopped after the checkpoint of step 10:
  shutil.rmtree(os.path.join(stopped, "classifier", "checkpoints", "20"))
  resumed = train_classifier.train_classifier(tiny_config(n_iters=20), stopped)
  assert int(resumed.step) == 20
  jax.tree_util.tree_map(np.testing.assert_array_equal, params_of(resumed), params_of(uninterrupted))
  model, variables = classifier.load_classifier(tiny_config(), workdir)
  jax.tree_util.tree_map(np.testing.assert_array_equal, jax.device_get(variables["params"]),
                         params_of(uninterrupted))
  records = read_metrics(os.path.join(stopped, "classifier", "metrics.jsonl"))
  assert [r["step"] for r in records if "loss" in r] == [10, 20]  # nothing logged twice


def test_log_prob_grad_matches_finite_differences_and_ve_noise_input(trained):
  workdir, _ = trained
  config = tiny_config()
  config.training.sde = "vesde"  # the classifier sees sigma(t) = marginal std, as the reference's
  model, variables = classifier.load_classifier(config, workdir)
  sde, _ = sde_lib.get_sde(config)
  x = jax.random.normal(jax.random.PRNGKey(1), (3, 8, 8, 1))
  t, labels = jnp.array([0.05, 0.3, 0.6]), jnp.array([0, 4, 7])
  std = sde.marginal_prob(x, t)[1]
  np.testing.assert_allclose(classifier.get_logit_fn(sde, model, variables)(x, t), model.apply(variables, x, std),
                             rtol=1e-6)

  # Central differences in float64 (h = 1e-5: truncation ~1e-10, rounding ~1e-11) against the gradient.
  with jax.enable_x64(True):
    variables64 = jax.tree_util.tree_map(lambda v: jnp.asarray(v, jnp.float64), variables)
    x64, t64 = jnp.asarray(x, jnp.float64), jnp.asarray(t, jnp.float64)
    grad = jax.jit(classifier.get_log_prob_grad_fn(config, model, variables64))(x64, t64, labels)
    assert grad.shape == x.shape and grad.dtype == jnp.float64

    @jax.jit
    def log_prob(x):
      logits = model.apply(variables64, x, sde.marginal_prob(x, t64)[1])
      return jnp.sum(jax.nn.log_softmax(logits)[jnp.arange(3), labels])

    for seed in range(3):
      direction = jax.random.normal(jax.random.PRNGKey(10 + seed), x.shape, jnp.float64)
      h = 1e-5
      finite_difference = (log_prob(x64 + h * direction) - log_prob(x64 - h * direction)) / (2 * h)
      np.testing.assert_allclose(float(jnp.vdot(grad, direction)), float(finite_difference), rtol=1e-5)


def test_bad_config_keys_raise_value_errors(tmp_path):
  config = tiny_config()
  config.classifier.num_noise_bins = 0
  with pytest.raises(ValueError, match="classifier.num_noise_bins=0"):
    train_classifier.train_classifier(config, str(tmp_path))
  config = tiny_config()
  config.data.dataset = "checkerboard"
  with pytest.raises(ValueError, match="data.dataset='checkerboard' is not valid; choose one of: CIFAR10, MNIST"):
    validate_classifier_config(config)
  config = tiny_config()
  config.classifier.optim.optimizer = "SGD"
  with pytest.raises(ValueError, match="classifier.optim.optimizer='SGD' is not valid; choose one of: Adam"):
    validate_classifier_config(config)
  with pytest.raises(ValueError, match="no readable classifier checkpoint"):
    classifier.load_classifier(tiny_config(), str(tmp_path))
  with pytest.raises(ValueError, match="has no class labels"):
    config = tiny_config()
    config.data.dataset = "FFHQ"
    datasets.get_dataset(config, labels=True)


def test_full_size_classifier_is_the_reference_wrn_28_10():
  from configs.classifier import cifar10_wrn

  config = cifar10_wrn.get_config()
  validate_classifier_config(config)
  shapes = jax.eval_shape(lambda: classifier.init_state(jax.random.PRNGKey(0), config,
                                                         classifier.get_optimizer(config)).variables())
  assert sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(shapes)) == 38_913_242
  assert config.training.sde == "vesde" and config.data.dataset == "CIFAR10"
