"""Sample-quality metrics: FID, KID, Inception score, precision / recall, and a sliced Wasserstein distance for toys.

The formulas run on the host in float64 (feature statistics are small; the
features themselves are computed in jitted batches elsewhere).
"""

import numpy as np


def _symmetric_sqrt(matrix):
  eigenvalues, eigenvectors = np.linalg.eigh((matrix + matrix.T) / 2)
  return (eigenvectors * np.sqrt(np.clip(eigenvalues, 0.0, None))) @ eigenvectors.T


def frechet_distance(mu1, sigma1, mu2, sigma2):
  """||mu1 - mu2||^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2)) (Heusel et al. 2017).

  tr (S1 S2)^(1/2) is computed as the trace of (S1^(1/2) S2 S1^(1/2))^(1/2), a
  symmetric positive semi-definite matrix, so nearly singular covariances give
  no complex parts or NaNs.
  """
  mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
  sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
  if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
    raise ValueError(f"mismatched statistics: mu {mu1.shape} vs {mu2.shape}, sigma {sigma1.shape} vs {sigma2.shape}")
  root1 = _symmetric_sqrt(sigma1)
  inner = root1 @ sigma2 @ root1
  trace_sqrt = np.sum(np.sqrt(np.clip(np.linalg.eigvalsh((inner + inner.T) / 2), 0.0, None)))
  return float(np.sum((mu1 - mu2) ** 2) + np.trace(sigma1) + np.trace(sigma2) - 2.0 * trace_sqrt)


def feature_statistics(features):
  """Mean and (unbiased) covariance of `(n, d)` features."""
  features = np.asarray(features, np.float64)
  return features.mean(axis=0), np.cov(features, rowvar=False)


def frechet_distance_from_features(features1, features2):
  return frechet_distance(*feature_statistics(features1), *feature_statistics(features2))


def _unbiased_mmd2(x, y):
  """Unbiased MMD^2 with the cubic polynomial kernel k(a, b) = (a.b / d + 1)^3."""
  d = x.shape[1]
  kxx, kyy, kxy = ((x @ x.T) / d + 1) ** 3, ((y @ y.T) / d + 1) ** 3, ((x @ y.T) / d + 1) ** 3
  m, n = len(x), len(y)
  return ((kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
          - 2.0 * kxy.mean())


def kernel_inception_distance(features1, features2, block_size=1024):
  """KID (Binkowski et al. 2018): unbiased MMD^2, averaged over blocks of at most `block_size`
  as tensorflow-gan (the reference's metric library) does."""
  x, y = np.asarray(features1, np.float64), np.asarray(features2, np.float64)
  num_blocks = max(1, int(np.ceil(max(len(x), len(y)) / block_size)))
  x_blocks, y_blocks = np.array_split(x, num_blocks), np.array_split(y, num_blocks)
  return float(np.mean([_unbiased_mmd2(a, b) for a, b in zip(x_blocks, y_blocks)]))


def inception_score(logits):
  """exp(E_x KL(p(y | x) || p(y))) (Salimans et al. 2016) from classifier logits, one split."""
  logits = np.asarray(logits, np.float64)
  log_p = logits - np.logaddexp.reduce(logits, axis=1, keepdims=True)
  p = np.exp(log_p)
  log_marginal = np.log(p.mean(axis=0))
  return float(np.exp(np.mean(np.sum(p * (log_p - log_marginal), axis=1))))


def _squared_distances(a, b):
  return np.maximum((a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T, 0.0)


def _kth_neighbour_radii(features, k, block_size):
  """Squared distance from each point to its k-th nearest other point of the same set."""
  radii = np.empty(len(features))
  for start in range(0, len(features), block_size):
    d = _squared_distances(features[start:start + block_size], features)
    radii[start:start + block_size] = np.partition(d, k, axis=1)[:, k]  # column 0 is the point itself
  return radii


def _covered(points, centres, radii, block_size):
  """Whether each point lies within some centre's hypersphere of (squared) radius `radii`."""
  inside = np.zeros(len(points), bool)
  for start in range(0, len(points), block_size):
    inside[start:start + block_size] = (_squared_distances(points[start:start + block_size], centres)
                                        <= radii[None, :]).any(axis=1)
  return inside


def precision_recall(real_features, fake_features, k=3, block_size=2048):
  """Improved precision and recall (Kynkäänniemi et al. 2019): the manifold of a set is the union of
  hyperspheres around its points, each reaching the point's k-th nearest neighbour in the set.
  Precision: the fraction of generated points inside the real manifold; recall: the fraction of real
  points inside the generated one. Returns `(precision, recall)`."""
  real, fake = np.asarray(real_features, np.float64), np.asarray(fake_features, np.float64)
  if min(len(real), len(fake)) <= k:
    raise ValueError(f"precision / recall with k={k} need more than {k} points in each set; "
                     f"got {len(real)} and {len(fake)}")
  real_radii, fake_radii = _kth_neighbour_radii(real, k, block_size), _kth_neighbour_radii(fake, k, block_size)
  precision = float(_covered(fake, real, real_radii, block_size).mean())
  recall = float(_covered(real, fake, fake_radii, block_size).mean())
  return precision, recall


def sliced_wasserstein(x, y, *, num_projections=256, seed=0):
  """Sliced 2-Wasserstein distance between two point clouds (mean over random directions).

  Projections are compared through their quantiles, so the two sets may differ in size.
  """
  x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
  directions = np.random.default_rng(seed).normal(size=(x.shape[1], num_projections))
  directions /= np.linalg.norm(directions, axis=0, keepdims=True)
  levels = (np.arange(min(len(x), len(y))) + 0.5) / min(len(x), len(y))
  return float(np.sqrt(np.mean((_quantiles(x @ directions, levels) - _quantiles(y @ directions, levels)) ** 2)))


def _quantiles(projections, levels):
  """Empirical quantiles of each column at `levels`, by sorting (O(n log n) per direction)."""
  ordered = np.sort(projections, axis=0)
  positions = (np.arange(len(ordered)) + 0.5) / len(ordered)
  return np.stack([np.interp(levels, positions, column) for column in ordered.T], axis=1)
