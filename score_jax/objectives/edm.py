"""`edm`: Karras et al. 2022, Sec. 5: log-normal noise levels and lambda(sigma) = (sigma^2 + sigma_data^2) /
(sigma sigma_data)^2 on the denoiser, for any SDE through its noise level."""

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp

from score_jax.objectives.base import Objective, normal_per_example, output, reduce_per_example, scalar_per_example


def edm_weight(sigma, sigma_data):
  """lambda(sigma) = (sigma^2 + sigma_data^2) / (sigma sigma_data)^2 (Karras et al. 2022, Table 1)."""
  return (sigma**2 + sigma_data**2) / (sigma * sigma_data) ** 2


def edm_loss(denoiser_fn, sde, x0, sigma, z, *, sigma_data=0.5, reduce_mean=True):
  """lambda(sigma) |D(x, t) - x0|^2 at the noise levels `sigma`, x = m(t) (x0 + sigma z), t = t(sigma).

  With the `edm` parameterization this is |F - F_target|^2 exactly (lambda c_out^2 = 1).
  """
  t = sde.noise_level_to_t(sigma)
  x, _ = sde.perturb(x0, t, z)
  return output(reduce_per_example(jnp.square(denoiser_fn(x, t) - x0), reduce_mean) * edm_weight(sigma, sigma_data),
                noise_levels=sigma)


@dataclasses.dataclass(frozen=True)
class EDM(Objective):
  """ln sigma ~ N(P_mean, P_std^2) (`training.edm_p_mean`, `training.edm_p_std`)."""

  p_mean: float = -1.2      # `training.edm_p_mean` (Karras et al. 2022, Table 1)
  p_std: float = 1.2        # `training.edm_p_std`
  sigma_data: float = 0.5   # `model.sigma_data`

  reports_noise_levels: ClassVar[bool] = True

  @classmethod
  def options(cls, config):
    return dict(p_mean=config.training.edm_p_mean, p_std=config.training.edm_p_std,
                sigma_data=config.model.sigma_data)

  def draw(self, keys, x):
    return {"noise": normal_per_example(keys["noise"], x),
            "time": scalar_per_example(keys["time"], x.shape[0], jax.random.normal)}

  def loss(self, call, x, draws, inputs=None):
    sigma = jnp.exp(self.p_mean + self.p_std * draws["time"])
    return edm_loss(call.denoiser_fn(), call.sde, x, sigma, draws["noise"], sigma_data=self.sigma_data,
                    reduce_mean=self.settings.reduce_mean)
