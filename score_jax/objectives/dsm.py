"""`dsm`: denoising score matching (Song et al. 2021, Eq. (7)) at uniform times.

lambda(t) = std^2, or g(t)^2 with `training.likelihood_weighting` (Song et al. 2021b, Eq. (9)), its times
optionally importance-sampled (`training.importance_sampling`). A model of a non-reference
parameterization regresses its own target instead (`regression_loss`: noise, data, v or EDM's F-target).
"""

import dataclasses
from typing import ClassVar

import jax.numpy as jnp

from score_jax import elbo
from score_jax.objectives.base import (Objective, normal_per_example, output, reduce_per_example,
                                       scalar_per_example)
from score_jax.models import parameterization_of
from score_jax.parameterization import Reference
from score_jax.utils import batch_mul


def dsm_loss(score_fn, sde, x0, t, z, *, reduce_mean=True, likelihood_weighting=False, time_weight=None):
  """Denoising score matching at given times `t` and noise `z` (Eq. (7); Song et al. 2021b Eq. (9)).

  `time_weight` (`(B,)`) multiplies each example's loss: the importance weight of its time.
  """
  perturbed, std = sde.perturb(x0, t, z)
  score = score_fn(perturbed, t)
  if likelihood_weighting:
    g2 = sde.sde(jnp.zeros_like(x0), t)[1] ** 2
    losses = reduce_per_example(jnp.square(score + batch_mul(1.0 / std, z)), reduce_mean) * g2
  else:  # lambda(t) = std^2
    losses = reduce_per_example(jnp.square(batch_mul(std, score) + z), reduce_mean)
  if time_weight is not None:
    losses = losses * time_weight
  return output(losses, noise_levels=sde.noise_level(t))


def regression_loss(output_fn, parameterization, sde, x0, t, z, *, reduce_mean=True):
  """|F(x_t, t) - target|^2: the network output against its parameterization's target (noise, data, v, ...)."""
  perturbed, _ = sde.perturb(x0, t, z)
  target = parameterization.target(sde, x0, z, t)
  return output(reduce_per_example(jnp.square(output_fn(perturbed, t) - target), reduce_mean),
                noise_levels=sde.noise_level(t))


@dataclasses.dataclass(frozen=True)
class DSM(Objective):
  """Score matching at t ~ U[eps, T] (or importance-sampled for the likelihood weighting)."""

  likelihood_weighting: bool = False  # lambda(t) = g(t)^2 (`training.likelihood_weighting`)
  importance_sampling: bool = False   # its times importance-sampled (`training.importance_sampling`)

  reports_noise_levels: ClassVar[bool] = True

  @classmethod
  def options(cls, config):
    return dict(likelihood_weighting=config.training.likelihood_weighting,
                importance_sampling=config.training.importance_sampling)

  def check(self):
    if self.importance_sampling and not self.likelihood_weighting:
      raise ValueError("training.importance_sampling=True samples t for training.likelihood_weighting=True")

  def draw(self, keys, x):
    return {"noise": normal_per_example(keys["noise"], x), "time": scalar_per_example(keys["time"], x.shape[0])}

  def loss(self, call, x, draws, inputs=None):
    settings, sde = self.settings, call.sde
    t = settings.eps + draws["time"] * (sde.T - settings.eps)
    if self.likelihood_weighting:
      time_weight = None
      if self.importance_sampling:
        t, inverse_density = elbo.importance_times(draws["time"], sde, settings.eps)
        time_weight = inverse_density / (sde.T - settings.eps)  # the plain weighting's expectation
      return dsm_loss(call.score_fn(), sde, x, t, draws["noise"], reduce_mean=settings.reduce_mean,
                      likelihood_weighting=True, time_weight=time_weight)
    parameterization = parameterization_of(self.model)
    if isinstance(parameterization, Reference):
      return dsm_loss(call.score_fn(), sde, x, t, draws["noise"], reduce_mean=settings.reduce_mean)
    return regression_loss(call.output_fn(), parameterization, sde, x, t, draws["noise"],
                           reduce_mean=settings.reduce_mean)
