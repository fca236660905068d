"""The shipped digits classifier: accuracy, the ordering of its Fréchet distances, retraining, safe loading."""

import jax
import numpy as np
import pytest

from score_jax.metrics import digits as digits_metrics
from score_jax.toy_data import DIGITS_TRAIN_SIZE, load_digits


@pytest.fixture(scope="module")
def digits():
  images, labels = load_digits(16)
  images = images.astype(np.float32) / 255.0
  return images[:DIGITS_TRAIN_SIZE], images[DIGITS_TRAIN_SIZE:], labels[DIGITS_TRAIN_SIZE:]


@pytest.fixture(scope="module")
def features_fn():
  return digits_metrics.digits_features_fn()


def test_shipped_weights_classify_held_out_digits(digits, features_fn):
  _, test, test_labels = digits
  out = features_fn(test)
  assert out.features.shape == (297, 64) and out.logits.shape == (297, 10)
  assert np.mean(np.argmax(out.logits, -1) == test_labels) > 0.95


def test_other_image_sizes_are_resized(features_fn):
  images, labels = load_digits(32)
  logits = features_fn(images[DIGITS_TRAIN_SIZE:]).logits  # uint8 at 32 px
  assert np.mean(np.argmax(logits, -1) == labels[DIGITS_TRAIN_SIZE:]) > 0.9


def test_frechet_distance_ranks_real_digits_first(digits, features_fn):
  train, test, _ = digits
  rng = np.random.default_rng(0)
  noise = np.clip(rng.normal(train.mean(), train.std(), test.shape), 0.0, 1.0).astype(np.float32)
  blurred = np.asarray(jax.image.resize(jax.image.resize(test, (297, 4, 4, 1), "linear"), test.shape, "linear"))
  shuffled = rng.permuted(test.reshape(297, -1), axis=1).reshape(test.shape)
  fd = lambda images: digits_metrics.digits_frechet_distance(images, train, features_fn)
  real = fd(test)
  for name, fake in [("noise", noise), ("blurred", blurred), ("shuffled", shuffled)]:
    assert fd(fake) > 10 * real, (name, fd(fake), real)


def test_retraining_reproduces_the_shipped_accuracy(features_fn):
  shipped = digits_metrics.held_out_accuracy()
  retrained = digits_metrics.held_out_accuracy(digits_metrics.train_digits_classifier(seed=0))
  assert abs(retrained - shipped) <= 0.01


def test_save_load_round_trip_and_pickles_are_refused(tmp_path):
  variables = digits_metrics.load_variables()
  digits_metrics.save_variables(tmp_path / "weights.npz", variables)
  reloaded = digits_metrics.load_variables(tmp_path / "weights.npz")
  jax.tree.map(np.testing.assert_array_equal, variables, reloaded)
  np.savez(tmp_path / "pickled.npz", **{"params/Dense_0/bias": np.array([{"evil": 1}], dtype=object)})
  with pytest.raises(ValueError, match="allow_pickle"):
    digits_metrics.load_variables(tmp_path / "pickled.npz")
