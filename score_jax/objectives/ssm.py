"""`ssm`: sliced score matching (Song et al. 2019) on noise-perturbed data, in the variance-reduced form
|s|^2 + 2 v^T (ds/dx) v, with lambda(t) = std^2 (`training.ssm_projection`: rademacher | gaussian)."""

import dataclasses

import jax
import jax.numpy as jnp

from score_jax.objectives.base import (Objective, normal_per_example, output, reduce_per_example,
                                       scalar_per_example)
from score_jax.rng import per_example
from score_jax.utils import choice_error

PROJECTIONS = {"rademacher": lambda key, shape: jax.random.rademacher(key, shape, jnp.float32),
               "gaussian": jax.random.normal}


def ssm_loss(score_fn, sde, x0, t, z, v, *, reduce_mean=True):
  """Sliced score matching (Song et al. 2019, variance-reduced) at x_t = m x0 + std z with projections `v`.

  std^2 (|s|^2 + 2 v^T (ds/dx) v) per example: in expectation the DSM loss (lambda = std^2) minus
  the dimension (1 per dimension with `reduce_mean`), whatever the score model (Hyvarinen 2005).
  """
  perturbed, std = sde.perturb(x0, t, z)
  score, jacobian_v = jax.jvp(lambda x: score_fn(x, t), (perturbed,), (v,))
  return output(reduce_per_example(jnp.square(score) + 2.0 * v * jacobian_v, reduce_mean) * std**2)


@dataclasses.dataclass(frozen=True)
class SSM(Objective):
  """t ~ U[eps, T], one projection v per example."""

  projection: str = "rademacher"  # `training.ssm_projection`

  @classmethod
  def options(cls, config):
    return dict(projection=config.training.ssm_projection)

  def check(self):
    if self.projection not in PROJECTIONS:
      raise choice_error("training.ssm_projection", self.projection, PROJECTIONS)

  def draw(self, keys, x):
    projection = PROJECTIONS[self.projection]
    return {"noise": normal_per_example(keys["noise"], x), "time": scalar_per_example(keys["time"], x.shape[0]),
            "projection": per_example(keys["projection"], x.shape[0], lambda k: projection(k, x.shape[1:]))}

  def loss(self, call, x, draws, inputs=None):
    settings, sde = self.settings, call.sde
    t = settings.eps + draws["time"] * (sde.T - settings.eps)
    return ssm_loss(call.score_fn(), sde, x, t, draws["noise"], draws["projection"],
                    reduce_mean=settings.reduce_mean)
