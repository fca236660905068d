"""The optimizer of `config.optim`: the reference's Adam with warm-up, clipping and weight decay."""

import jax.numpy as jnp
import optax

from score_jax.utils import choice_error

OPTIMIZERS = ("Adam",)
SCHEDULES = ("constant", "cosine", "inverse_sqrt")


def get_learning_rate_fn(config):
  """`count -> learning rate`: the reference's linear warm-up (the first update at lr 0, kept: see
  docs/differences.md#warmup-first-step), then
  `optim.schedule`: constant (the reference), a cosine decay to 0 at `training.n_iters`, or EDM2's inverse
  square root (Karras et al. 2024, Eq. (15)): lr / sqrt(max(count / `optim.ref_steps`, 1))."""
  optim = config.optim
  schedule = optim.schedule
  if schedule not in SCHEDULES:
    raise choice_error("optim.schedule", schedule, SCHEDULES)
  warmup = max(optim.warmup, 0)
  if schedule == "inverse_sqrt" and optim.ref_steps <= 0:
    raise ValueError(f"optim.ref_steps={optim.ref_steps} must be > 0 for optim.schedule='inverse_sqrt'")
  total = config.training.n_iters if "training" in config else 0

  def learning_rate_fn(count):
    rate = optim.lr * jnp.minimum(count / warmup, 1.0) if warmup else jnp.full((), optim.lr)
    if schedule == "cosine":
      progress = jnp.clip((count - warmup) / max(total - warmup, 1), 0.0, 1.0)
      rate = rate * 0.5 * (1.0 + jnp.cos(jnp.pi * progress))
    elif schedule == "inverse_sqrt":
      rate = rate / jnp.sqrt(jnp.maximum(count / optim.ref_steps, 1.0))
    return rate

  return learning_rate_fn


def get_optimizer(config):
  """Adam with the learning rate of `get_learning_rate_fn`, global-norm clipping and decoupled weight
  decay (as flax.optim.Adam)."""
  optim = config.optim
  if optim.optimizer.lower() != "adam":
    raise choice_error("optim.optimizer", optim.optimizer, OPTIMIZERS)
  schedule = get_learning_rate_fn(config)
  return optax.chain(
      optax.clip_by_global_norm(optim.grad_clip) if optim.grad_clip >= 0 else optax.identity(),
      optax.scale_by_adam(b1=optim.beta1, b2=optim.beta2, eps=optim.eps),
      optax.add_decayed_weights(optim.weight_decay) if optim.weight_decay else optax.identity(),
      optax.scale_by_learning_rate(schedule),
  )
