"""The optimizer of `config.optim`: the reference's Adam with warm-up, clipping and weight decay."""

import jax.numpy as jnp
import optax

from score_jax.utils import choice_error

OPTIMIZERS = ("Adam",)
SCHEDULES = ("constant", "cosine")


def get_learning_rate_fn(config):
  """`count -> learning rate`: the reference's linear warm-up (the first update at lr 0, kept: see
  docs/differences.md#warmup-first-step), then
  `optim.schedule`: constant (the reference), or a cosine decay to 0 at `training.n_iters`."""
  optim = config.optim
  schedule = optim.schedule
  if schedule not in SCHEDULES:
    raise choice_error("optim.schedule", schedule, SCHEDULES)
  warmup = max(optim.warmup, 0)
  total = config.training.n_iters if "training" in config else 0

  def learning_rate_fn(count):
    rate = optim.lr * jnp.minimum(count / warmup, 1.0) if warmup else jnp.full((), optim.lr)
    if schedule == "cosine":
      progress = jnp.clip((count - warmup) / max(total - warmup, 1), 0.0, 1.0)
      rate = rate * 0.5 * (1.0 + jnp.cos(jnp.pi * progress))
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
      optax.scale_by_adam(b1=optim.beta1, b2=0.999, eps=optim.eps),
      optax.add_decayed_weights(optim.weight_decay) if optim.weight_decay else optax.identity(),
      optax.scale_by_learning_rate(schedule),
  )
