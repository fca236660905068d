"""The noise-conditional classifier of class-conditional sampling (Section 5 and Appendix I.1 of Song et al. 2021).

Class-conditional sampling adds grad_x log p(y | x(t)) to the score (Eq. (14)); p(y | x(t)) is a
classifier of *perturbed* data. Here it is the WideResNet of `score_jax.models.wideresnet`, trained by
cross-entropy on `x(t) = m(t) x(0) + std(t) z` with `t ~ U(eps, T)` per example and `(m, std)` the
config's SDE marginal (`sde.marginal_prob`), in the score model's data space (`datasets.get_data_scaler`).

The network's noise input is `sde.noise_level(t) = std(t) / m(t)`: for a VE SDE the reference's
sigma(t) = `marginal_prob(x, t)[1]`; for VP / sub-VP the noise level of `x / m(t)`, the same image up to
a scale that the network's per-image standardisation removes.

  train_classifier(config, workdir)                 # main.py --mode=train_classifier
  model, variables = load_classifier(config, workdir)
  log_prob_grad_fn = get_log_prob_grad_fn(config, model, variables)   # for controllable.pc_conditional_sample

Checkpoints, metrics (`metrics.jsonl`, TensorBoard) and logs live in `<workdir>/classifier/`, beside the
score model's. The batch of step s and the noise of step s depend on (seed, s) only, so a resumed run
is the uninterrupted one.
"""

import os

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging

from score_jax import checkpoint, controllable, datasets, optim, parallel, sde as sde_lib
from score_jax.rng import per_example
from score_jax.config_utils import validate_classifier_config
from score_jax.metric_writer import MetricWriter
from score_jax.models.wideresnet import WideResnet

CLASSIFIER_DIR = "classifier"  # under the workdir


@flax.struct.dataclass
class ClassifierState:
  """Everything a resumed run needs; no RNG (it is derived from the step)."""

  step: jax.Array
  params: dict
  opt_state: optax.OptState
  model_state: dict  # the Fourier frequencies ("constants")

  def variables(self):
    return {**self.model_state, "params": self.params}


@flax.struct.dataclass
class ClassifierOutput:
  loss: jax.Array      # mean cross-entropy (nats)
  accuracy: jax.Array  # fraction of correct argmax predictions


def get_classifier(config):
  """The WideResnet of `config.classifier`: `apply(variables, x, noise_level) -> (B, num_classes)` logits."""
  c = config.classifier
  return WideResnet(blocks_per_group=c.blocks_per_group, channel_multiplier=c.channel_multiplier,
                    num_outputs=c.num_classes, embedding_size=c.embedding_size, fourier_scale=c.fourier_scale,
                    temb_dim=c.temb_dim)


def get_logit_fn(sde, model, variables):
  """`logit_fn(x, t) -> (B, num_classes)`: the classifier at SDE time `t`, fed `sde.noise_level(t)`."""
  return lambda x, t: model.apply(variables, x, sde.noise_level(t))


def get_log_prob_grad_fn(config, model, variables):
  """`log_prob_grad_fn(x, t, labels)` = grad_x log p(labels | x(t)), for `controllable.pc_conditional_sample`.

  `x` is in the score model's space and `t` the sampler's time; `labels` are `(B,)` ints.
  """
  sde, _ = sde_lib.get_sde(config)
  return controllable.classifier_log_prob_grad_fn(get_logit_fn(sde, model, variables))


def get_loss_fn(sde, model, noise_eps):
  """`loss_fn(rng, variables, images, labels, t_range=(eps, T)) -> ClassifierOutput` on perturbed images.

  Example i draws its time `t ~ U(t_range)` and noise `z` from `fold_in(rng, i)`.
  """
  def loss_fn(rng, variables, images, labels, t_range=(noise_eps, sde.T)):
    draw = lambda key: (jax.random.uniform(jax.random.fold_in(key, 0), (), minval=t_range[0], maxval=t_range[1]),
                        jax.random.normal(jax.random.fold_in(key, 1), images.shape[1:]))
    t, z = per_example(rng, images.shape[0], draw)
    mean, std = sde.marginal_prob(images, t)
    logits = get_logit_fn(sde, model, variables)(mean + std.reshape((-1,) + (1,) * (images.ndim - 1)) * z, t)
    log_probs = jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], axis=-1)[:, 0]
    return ClassifierOutput(loss=-jnp.mean(log_probs), accuracy=jnp.mean(jnp.argmax(logits, -1) == labels))
  return loss_fn


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
    keys = jax.vmap(jax.random.fold_in, (None, 0))(jax.random.fold_in(rng, index), jnp.arange(len(low)))
    return jax.vmap(lambda key, t_min, t_max: loss_fn(key, variables, images, labels, (t_min, t_max)))(keys, low, high)
  return eval_step


def _optimizer(config):
  return optim.get_optimizer(ml_collections.ConfigDict({"optim": config.classifier.optim}))


def _init_state(rng, config, optimizer):
  size, channels = config.data.image_size, config.data.num_channels
  variables = get_classifier(config).init(rng, jnp.zeros((1, size, size, channels)), jnp.ones((1,)))
  params = variables.pop("params")
  return ClassifierState(step=jnp.zeros((), jnp.int32), params=params, opt_state=optimizer.init(params),
                         model_state=variables)


def _manager(config, workdir):
  directory = os.path.join(workdir, CLASSIFIER_DIR, checkpoint.SNAPSHOT_DIR)
  return checkpoint.get_manager(directory, config.classifier.keep_checkpoints)


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

  Resumes from the newest readable checkpoint of `<workdir>/classifier/checkpoints` (an unreadable
  newest one is skipped for an older one). Logs training loss and accuracy every `log_freq` steps and
  held-out loss and accuracy, overall and in `num_noise_bins` bins of t, every `eval_freq` steps.
  """
  validate_classifier_config(config)
  c = config.classifier
  sde, noise_eps = sde_lib.get_sde(config)
  model, optimizer = get_classifier(config), _optimizer(config)
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

  initial = jax.device_put(_init_state(jax.random.fold_in(base_rng, 2), config, optimizer), replicated)
  manager = _manager(config, workdir)
  state, restored_step = checkpoint.restore_latest([manager], initial)
  writer = MetricWriter(os.path.join(workdir, CLASSIFIER_DIR))
  step = int(state.step)
  if restored_step is None:
    num_weights = sum(x.size for x in jax.tree_util.tree_leaves(state.variables()))
    logging.info("Training a %s-weight classifier in %s", f"{num_weights:,}", workdir)
  else:
    logging.info("Resuming the classifier from its checkpoint of step %d", step)
    writer.truncate_after(step)

  window = []
  while step < c.n_iters:
    images, labels = dataset.train_batches(step, 1)
    state, out = train_step(state, parallel.shard_batch(mesh, scaler(images[0])),
                            parallel.shard_batch(mesh, labels[0]))
    window.append(out)
    step += 1
    done = step >= c.n_iters
    if step % c.log_freq == 0 or done:
      loss, accuracy = np.mean(jax.device_get([(o.loss, o.accuracy) for o in window]), axis=0)
      if not np.isfinite(loss):
        raise FloatingPointError(f"classifier loss became {loss} before step {step}; stopping without saving "
                                 "this state. Lower classifier.optim.lr or resume from the last checkpoint.")
      writer.write(step, loss=loss, accuracy=accuracy)
      window = []
    if step % c.eval_freq == 0 or done:
      writer.write(step, **_eval_metrics(eval_step, state.variables(), dataset.eval_batches(), edges,
                                         c.num_eval_batches, scaler))
    if step % c.checkpoint_freq == 0 or done:
      checkpoint.save(manager, step, state)
  writer.close()
  return state


def abstract_state(init_fn, mesh=None):
  """The shapes, dtypes and (replicated) shardings of `init_fn()`'s output, computed without running it."""
  sharding = parallel.replicated(mesh or parallel.make_mesh())
  return jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding),
                                jax.eval_shape(init_fn))


def load_classifier(config, workdir):
  """The newest readable classifier checkpoint of `workdir`: returns `(model, variables)`.

  Raises:
    ValueError: `config.classifier` is invalid, or `workdir` holds no readable classifier checkpoint.
  """
  validate_classifier_config(config)
  target = abstract_state(lambda: _init_state(jax.random.PRNGKey(0), config, _optimizer(config)))
  state, step = checkpoint.restore_latest([_manager(config, workdir)], target)
  if step is None:
    raise ValueError(f"no readable classifier checkpoint in {os.path.join(workdir, CLASSIFIER_DIR)}; train one "
                     "with `python main.py --mode=train_classifier` and the same --config and --workdir")
  logging.info("Loaded the classifier of step %d", step)
  return get_classifier(config), state.variables()
