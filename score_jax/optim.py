"""The optimizer of `config.optim`: the reference's Adam with warm-up, clipping and weight decay."""

import jax.numpy as jnp
import optax

from score_jax.utils import choice_error

OPTIMIZERS = ("Adam",)


def get_optimizer(config):
  """Adam with the reference's linear warm-up (first update at lr 0, B21), global-norm clipping
  and decoupled weight decay (as flax.optim.Adam)."""
  optim = config.optim
  if optim.optimizer.lower() != "adam":
    raise choice_error("optim.optimizer", optim.optimizer, OPTIMIZERS)
  if optim.warmup > 0:
    schedule = lambda count: optim.lr * jnp.minimum(count / optim.warmup, 1.0)
  else:
    schedule = optim.lr
  return optax.chain(
      optax.clip_by_global_norm(optim.grad_clip) if optim.grad_clip >= 0 else optax.identity(),
      optax.scale_by_adam(b1=optim.beta1, b2=0.999, eps=optim.eps),
      optax.add_decayed_weights(optim.weight_decay) if optim.weight_decay else optax.identity(),
      optax.scale_by_learning_rate(schedule),
  )
