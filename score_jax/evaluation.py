"""The sample-quality formulas under their public name (`score_jax.metrics.distances`)."""

from score_jax.metrics.distances import (feature_statistics, frechet_distance, frechet_distance_from_features,
                                         inception_score, kernel_inception_distance, sliced_wasserstein)

__all__ = ["feature_statistics", "frechet_distance", "frechet_distance_from_features", "inception_score",
           "kernel_inception_distance", "sliced_wasserstein"]
