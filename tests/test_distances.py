"""Metric formulas against independent float64 computations."""

import numpy as np
import pytest
from scipy import linalg

from score_jax.metrics import distances


def _scipy_fid(mu1, s1, mu2, s2):
  covmean = linalg.sqrtm(s1 @ s2).real
  return np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * covmean)


def _random_cov(rng, d, rank=None):
  a = rng.normal(size=(d, rank or d))
  return a @ a.T / d


@pytest.mark.parametrize("d", [1, 5, 64])
def test_frechet_distance_matches_scipy_sqrtm(d):
  rng = np.random.default_rng(d)
  mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
  s1, s2 = _random_cov(rng, d), _random_cov(rng, d)
  np.testing.assert_allclose(distances.frechet_distance(mu1, s1, mu2, s2), _scipy_fid(mu1, s1, mu2, s2),
                             rtol=1e-8, atol=1e-9)


def test_frechet_distance_nearly_singular_covariances():
  rng = np.random.default_rng(0)
  d = 48
  s1 = _random_cov(rng, d, rank=6) + 1e-12 * np.eye(d)
  s2 = _random_cov(rng, d, rank=9)
  mu = rng.normal(size=d)
  got = distances.frechet_distance(mu, s1, mu, s2)
  assert np.isfinite(got) and got > 0
  np.testing.assert_allclose(got, _scipy_fid(mu, s1, mu, s2), rtol=1e-5)
  # Identical statistics: distance 0, up to sqrt of rounding-level eigenvalues (~1e-8 each).
  assert abs(distances.frechet_distance(mu, s1, mu, s1)) < 1e-5 * np.trace(s1)
  assert abs(_scipy_fid(mu, s1, mu, s1)) < 1e-5 * np.trace(s1)


def test_frechet_distance_of_gaussians_closed_form():
  """For commuting diagonal covariances, FID = |dmu|^2 + sum (sqrt(a) - sqrt(b))^2."""
  a, b = np.array([1.0, 4.0, 0.25]), np.array([9.0, 1.0, 0.25])
  expected = 3.0 + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
  got = distances.frechet_distance(np.zeros(3), np.diag(a), np.ones(3), np.diag(b))
  np.testing.assert_allclose(got, expected, rtol=1e-12)


def test_kernel_inception_distance_is_unbiased_mmd():
  rng = np.random.default_rng(1)
  x, y = rng.normal(size=(300, 8)), rng.normal(size=(300, 8)) + 0.5
  d = 8
  k = lambda a, b: (a @ b.T / d + 1) ** 3
  m = len(x)
  expected = ((k(x, x).sum() - np.trace(k(x, x))) / (m * (m - 1))
              + (k(y, y).sum() - np.trace(k(y, y))) / (m * (m - 1)) - 2 * k(x, y).mean())
  np.testing.assert_allclose(distances.kernel_inception_distance(x, y), expected, rtol=1e-10)
  same = [distances.kernel_inception_distance(rng.normal(size=(200, 8)), rng.normal(size=(200, 8)))
          for _ in range(20)]
  assert abs(np.mean(same)) < 3 * np.std(same) / np.sqrt(20) + 1e-3  # unbiased: zero mean
  blocks = distances.kernel_inception_distance(x, y, block_size=100)
  assert abs(blocks - expected) < 0.5 * expected


def test_inception_score_limits():
  confident = np.eye(10) * 50.0  # one sure prediction per class: IS = number of classes
  np.testing.assert_allclose(distances.inception_score(confident), 10.0, rtol=1e-6)
  uniform = np.zeros((7, 10))
  np.testing.assert_allclose(distances.inception_score(uniform), 1.0, rtol=1e-12)
  logits = np.random.default_rng(0).normal(size=(50, 4))
  p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
  expected = np.exp(np.mean(np.sum(p * (np.log(p) - np.log(p.mean(0))), axis=1)))
  np.testing.assert_allclose(distances.inception_score(logits), expected, rtol=1e-10)


def test_sliced_wasserstein_detects_shift():
  rng = np.random.default_rng(2)
  x = rng.normal(size=(4000, 2))
  near = distances.sliced_wasserstein(x, rng.normal(size=(3000, 2)))
  shifted = distances.sliced_wasserstein(x, rng.normal(size=(4000, 2)) + np.array([1.0, 0.0]))
  # Shift by 1 along x: projected shift |cos|, RMS over directions sqrt(1/2).
  np.testing.assert_allclose(shifted, np.sqrt(0.5), rtol=0.1)
  assert near < 0.1
