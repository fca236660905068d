"""`train_classifier(config, workdir)`: training the noise-conditional classifier (`--mode=train_classifier`).

The classifier itself (network, loss, loading, the guidance gradient) is `score_jax.classifier`.
"""

import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging

from score_jax import datasets, parallel, sde as sde_lib
from score_jax.classifier import (CLASSIFIER_DIR, checkpoint_manager, get_classifier, get_loss_fn, get_optimizer,
                                  init_state)
from score_jax.config_utils import validate_classifier_config
from score_jax.drivers import loop
from score_jax.rng import per_sample_keys


def get_train_step(loss_fn, optimizer, rng):
  """`train_step(state, images, labels) -> (state, ClassifierOutput)`; its noise is `fold_in(rng, state.step)`."""
  def train_step(state, images, labels):
    def objective(params):
      out = loss_fn(jax.random.fold_in(rng, state.step), {**state.model_state, "params": params}, images, labels)
      return out.loss, out

    grads, out = jax.grad(objective, has_aux=True)(state.params)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    return state.replace(step=state.step + 1, params=optax.apply_updates(state.params, updates),
                         opt_state=opt_state), out
  return train_step


def noise_bins(sde, noise_eps, num_bins):
  """Edges of `num_bins` equal bins of t over [eps, T]: `(num_bins + 1,)` floats."""
  return np.linspace(noise_eps, sde.T, num_bins + 1)


def get_eval_step(loss_fn, edges, rng):
  """`eval_step(variables, images, labels, index) -> ClassifierOutput` of `(num_bins,)` arrays: each
  held-out example at one t drawn in every bin, from `fold_in(fold_in(rng, index), bin)`."""
  low, high = jnp.asarray(edges[:-1], jnp.float32), jnp.asarray(edges[1:], jnp.float32)

  def eval_step(variables, images, labels, index):
    keys = per_sample_keys(jax.random.fold_in(rng, index), len(low))  # one key per bin
    return jax.vmap(lambda key, t_min, t_max: loss_fn(key, variables, images, labels, (t_min, t_max)))(keys, low, high)
  return eval_step


def _eval_metrics(eval_step, variables, batches, edges, num_batches, to_model_space):
  """Held-out loss and accuracy, overall and per noise bin (named by its t range)."""
  outs = [eval_step(variables, to_model_space(images), labels, jnp.asarray(i))
          for i, (images, labels) in enumerate(batches) if not num_batches or i < num_batches]
  outs = jax.device_get(outs)
  loss, accuracy = (np.mean([getattr(o, name) for o in outs], axis=0) for name in ("loss", "accuracy"))
  metrics = {"eval_loss": loss.mean(), "eval_accuracy": accuracy.mean()}
  for b, value in enumerate(accuracy):
    metrics[f"eval_accuracy_t{edges[b]:.2f}-{edges[b + 1]:.2f}"] = value
  return metrics


def train_classifier(config, workdir):
  """Trains `config.classifier` on the labelled data of `config`, perturbed by its SDE; returns the final state.

  The training loop is the score model's (`drivers.loop`): it resumes from the newest readable checkpoint
  of `<workdir>/classifier/checkpoints`, logs training loss and accuracy every `log_freq` steps and
  held-out loss and accuracy, overall and in `num_noise_bins` bins of t, every `eval_freq` steps.
  """
  validate_classifier_config(config)
  c = config.classifier
  sde, noise_eps = sde_lib.get_sde(config)
  model, optimizer = get_classifier(config), get_optimizer(config)
  dataset = datasets.get_dataset(config, labels=True, batch_size=c.batch_size)
  scaler = datasets.get_data_scaler(config)
  mesh = parallel.make_mesh()
  replicated, sharded = parallel.replicated(mesh), parallel.data_sharded(mesh)
  base_rng = jax.random.fold_in(jax.random.PRNGKey(config.seed), 10)  # apart from the score model's streams
  loss_fn = get_loss_fn(sde, model, noise_eps)
  train_step = jax.jit(get_train_step(loss_fn, optimizer, jax.random.fold_in(base_rng, 0)), donate_argnums=0,
                       in_shardings=(replicated, sharded, sharded), out_shardings=replicated)
  edges = noise_bins(sde, noise_eps, c.num_noise_bins)
  eval_step = jax.jit(get_eval_step(loss_fn, edges, jax.random.fold_in(base_rng, 1)), out_shardings=replicated)
  logging.info("Held-out accuracy in t bins %s (noise levels %s)", np.round(edges, 3),
               np.round(np.asarray(sde.noise_level(jnp.asarray(edges))), 3))

  def step_block(state, step):
    images, labels = dataset.train_batches(step, 1)
    state, out = train_step(state, parallel.shard_batch(mesh, scaler(images[0])), parallel.shard_batch(mesh, labels[0]))
    return state, {"loss": out.loss[None], "accuracy": out.accuracy[None]}

  def describe(state):
    return f" ({sum(x.size for x in jax.tree_util.tree_leaves(state.variables())):,} weights)"

  task = loop.TrainingTask(
      name="classifier",
      cadence=loop.Cadence(n_iters=c.n_iters, block=1, log=c.log_freq, eval=c.eval_freq, snapshot=c.checkpoint_freq,
                           eval_at_end=True),
      init_state=lambda: jax.device_put(init_state(jax.random.fold_in(base_rng, 2), config, optimizer), replicated),
      step_block=step_block, snapshots=checkpoint_manager(config, workdir),
      metrics_dir=os.path.join(workdir, CLASSIFIER_DIR), describe=describe,
      evaluate=lambda state: _eval_metrics(eval_step, state.variables(), dataset.eval_batches(), edges,
                                           c.num_eval_batches, scaler))
  return loop.run_training(task, workdir)
