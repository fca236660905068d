"""`training.loss_weighting = "uncertainty"`: the learned per-noise-level weighting of EDM2 (Karras et al. 2024,
Sec. 5, Eq. (8)), also sCM's adaptive weighting (Lu & Song 2025, Sec. 4.3).

A small head of the model (`models.score_model.LogVariance`) predicts u(sigma), the log of the loss expected at
noise level sigma, and each example's loss L becomes L / exp(u(sigma)) + u(sigma). Minimising over u gives
u = ln E[L | sigma] (the derivative 1 - E[L] e^-u vanishes there), so every noise level contributes about
equally to the network's gradient, whatever imbalance the fixed weighting left.
"""

import jax.numpy as jnp

from score_jax.objectives.base import output

WEIGHTINGS = ("none", "uncertainty")


def weigh_by_uncertainty(loss, call):
  """`loss` (a `LossOutput` with its `noise_levels`) weighted by the model `call`'s u(sigma); the unweighted batch
  mean is kept in `terms["unweighted"]`."""
  log_variance = call.log_variance(loss.noise_levels).astype(loss.per_example.dtype)
  weighted = loss.per_example * jnp.exp(-log_variance) + log_variance
  return output(weighted, dict(loss.terms or {}, unweighted=loss.loss), loss.noise_levels)
