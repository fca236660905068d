"""The reference's discrete-time losses (`training.continuous=False`): NCSN's on the VE SDE's sigma table
(`smld`) and DDPM's epsilon prediction on the VP SDE's betas (`ddpm`); the network gets integer labels."""

import dataclasses

import jax
import jax.numpy as jnp

from score_jax.objectives.base import (Objective, normal_per_example, output, reduce_per_example,
                                       scalar_per_example)
from score_jax.utils import batch_mul


def smld_loss(model_fn, sde, x0, labels, z, *, reduce_mean=False):
  """NCSN's discrete loss on the descending sigma table; the network gets integer labels."""
  sigmas = sde.discrete_sigmas[::-1][labels]
  noise = batch_mul(sigmas, z)
  score = model_fn(x0 + noise, labels)
  target = -batch_mul(1.0 / sigmas**2, noise)
  return output(reduce_per_example(jnp.square(score - target), reduce_mean) * sigmas**2)


def ddpm_loss(model_fn, sde, x0, labels, z, *, reduce_mean=True):
  """DDPM's epsilon-prediction loss (Ho et al. 2020, Eq. (14)); the network gets integer labels."""
  perturbed = batch_mul(sde.sqrt_alphas_cumprod[labels], x0) + batch_mul(sde.sqrt_1m_alphas_cumprod[labels], z)
  return output(reduce_per_example(jnp.square(model_fn(perturbed, labels) - z), reduce_mean))


@dataclasses.dataclass(frozen=True)
class _Discrete(Objective):
  """A label i ~ U{0, ..., N - 1} per example."""

  likelihood_weighting: bool = False  # refused: a continuous-time weighting

  loss_function = None
  discrete_time = True

  @classmethod
  def options(cls, config):
    return dict(likelihood_weighting=config.training.likelihood_weighting)

  def check(self):
    if self.likelihood_weighting:
      raise ValueError("training.likelihood_weighting=True needs training.continuous=True")

  def draw(self, keys, x):
    return {"noise": normal_per_example(keys["noise"], x),
            "time": scalar_per_example(keys["time"], x.shape[0],
                                       lambda k, shape: jax.random.randint(k, shape, 0, self.sde.N))}

  def loss(self, call, x, draws, inputs=None):
    return self.loss_function(call.model_fn(), self.sde, x, draws["time"], draws["noise"],
                              reduce_mean=self.settings.reduce_mean)


@dataclasses.dataclass(frozen=True)
class SMLD(_Discrete):
  loss_function = staticmethod(smld_loss)


@dataclasses.dataclass(frozen=True)
class DDPM(_Discrete):
  loss_function = staticmethod(ddpm_loss)
