"""Score-matching objectives (Song et al. 2021, Eq. (7)): continuous DSM, and the SMLD / DDPM discrete losses.

Randomness is drawn per example from `fold_in(rng, example_index)`, so a batch's
loss does not depend on how the batch is split over devices.
"""

import dataclasses

import flax
import jax
import jax.numpy as jnp

from score_jax.models import get_model_fn, get_score_fn
from score_jax.rng import per_example
from score_jax.utils import batch_mul


@flax.struct.dataclass
class LossOutput:
  loss: jax.Array          # scalar, the batch mean
  per_example: jax.Array   # (B,)


def _reduce(x, reduce_mean):
  """Per-example reduction: mean over dims, or the reference's 0.5 * sum (B20)."""
  x = x.reshape(x.shape[0], -1)
  return jnp.mean(x, axis=-1) if reduce_mean else 0.5 * jnp.sum(x, axis=-1)


def dsm_loss(score_fn, sde, x0, t, z, *, reduce_mean=True, likelihood_weighting=False):
  """Denoising score matching at given times `t` and noise `z` (Eq. (7); Song et al. 2021b Eq. (9))."""
  mean, std = sde.marginal_prob(x0, t)
  perturbed = mean + batch_mul(std, z)
  score = score_fn(perturbed, t)
  if likelihood_weighting:
    g2 = sde.sde(jnp.zeros_like(x0), t)[1] ** 2
    losses = _reduce(jnp.square(score + batch_mul(1.0 / std, z)), reduce_mean) * g2
  else:  # lambda(t) = std^2
    losses = _reduce(jnp.square(batch_mul(std, score) + z), reduce_mean)
  return LossOutput(jnp.mean(losses), losses)


def smld_loss(model_fn, sde, x0, labels, z, *, reduce_mean=False):
  """NCSN's discrete loss on the descending sigma table; the network gets integer labels."""
  sigmas = sde.discrete_sigmas[::-1][labels]
  noise = batch_mul(sigmas, z)
  score = model_fn(x0 + noise, labels)
  target = -batch_mul(1.0 / sigmas**2, noise)
  losses = _reduce(jnp.square(score - target), reduce_mean) * sigmas**2
  return LossOutput(jnp.mean(losses), losses)


def ddpm_loss(model_fn, sde, x0, labels, z, *, reduce_mean=True):
  """DDPM's epsilon-prediction loss (Ho et al. 2020, Eq. (14)); the network gets integer labels."""
  perturbed = batch_mul(sde.sqrt_alphas_cumprod[labels], x0) + batch_mul(sde.sqrt_1m_alphas_cumprod[labels], z)
  losses = _reduce(jnp.square(model_fn(perturbed, labels) - z), reduce_mean)
  return LossOutput(jnp.mean(losses), losses)


@dataclasses.dataclass(frozen=True)
class LossConfig:
  """The loss settings of `config.training`, as a typed value."""

  continuous: bool = True
  likelihood_weighting: bool = False
  reduce_mean: bool = True
  eps: float = 1e-5

  @classmethod
  def from_config(cls, config):
    t = config.training
    return cls(t.continuous, t.likelihood_weighting, t.reduce_mean, t.get("eps", 1e-5))


def get_loss_fn(sde, model, loss_config, *, train):
  """Returns `loss_fn(rng, variables, batch) -> LossOutput`.

  Continuous training uses the DSM loss for any SDE; discrete training uses the
  SMLD loss for VE and the DDPM loss for VP (the reference's `get_step_fn`).
  """
  if not loss_config.continuous:
    if loss_config.likelihood_weighting:
      raise ValueError("training.likelihood_weighting=True needs training.continuous=True")
    if sde.discrete_loss is None:
      raise ValueError(f"training.continuous=False is defined for vesde (SMLD) and vpsde (DDPM), "
                       f"not {type(sde).__name__}")

  def loss_fn(rng, variables, batch):
    batch_size = batch.shape[0]
    noise_rng, dropout_rng = jax.random.split(rng)
    z = per_example(noise_rng, batch_size, lambda key: jax.random.normal(key, batch.shape[1:]))
    if loss_config.continuous:
      t = per_example(jax.random.fold_in(noise_rng, 1), batch_size,
                       lambda key: jax.random.uniform(key, (), minval=loss_config.eps, maxval=sde.T))
      score_fn = get_score_fn(sde, model, variables, train=train, continuous=True, rng=dropout_rng)
      return dsm_loss(score_fn, sde, batch, t, z, reduce_mean=loss_config.reduce_mean,
                      likelihood_weighting=loss_config.likelihood_weighting)
    labels = per_example(jax.random.fold_in(noise_rng, 1), batch_size,
                          lambda key: jax.random.randint(key, (), 0, sde.N))
    model_fn = get_model_fn(model, variables, train=train, rng=dropout_rng)
    discrete_loss = {"smld": smld_loss, "ddpm": ddpm_loss}[sde.discrete_loss]
    return discrete_loss(model_fn, sde, batch, labels, z, reduce_mean=loss_config.reduce_mean)

  return loss_fn
