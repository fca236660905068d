"""`get_loss_fn`: one training or evaluation loss around an objective: the batch split into data and class
labels, the step's keys (one per purpose), class-label dropout, the model call, the learned weighting and REPA."""

import jax.numpy as jnp

from score_jax.objectives import repa, uncertainty
from score_jax.objectives.base import ModelCall, output, purpose_keys, scalar_per_example


def split_batch(batch, num_classes):
  """`(x, class_labels)` of a training batch: `x` alone for an unconditional model (labels None), the pair
  `(x, int labels)` for a class-conditional one (`model.num_classes > 0`)."""
  if not num_classes:
    return batch, None
  if not isinstance(batch, (tuple, list)) or len(batch) != 2:
    raise ValueError("a class-conditional model (model.num_classes > 0) trains on (x, class labels) batches")
  return batch[0], jnp.asarray(batch[1], jnp.int32)


def drop_labels(key, class_labels, num_classes, rate):
  """Each label replaced by the null class `num_classes` with probability `rate`, one draw per example."""
  dropped = scalar_per_example(key, class_labels.shape[0]) < rate
  return jnp.where(dropped, num_classes, class_labels)


def add_repa(loss, settings, model, variables, tokens, x, encoder_variables, decoder_variables=None):
  """`loss` plus REPA's term (`repa.repa_term`) per example; the term's batch mean kept in `terms["repa"]`."""
  if tokens is None:
    raise ValueError("training.repa_weight > 0: the objective made no network call that sows tokens")
  term = repa.repa_term(settings, model, variables, tokens, x, encoder_variables, decoder_variables)
  return output(loss.per_example + term, dict(loss.terms or {}, repa=jnp.mean(term)), loss.noise_levels)


def get_loss_fn(objective, *, train):
  """Returns `loss_fn(rng, variables, batch, inputs=None) -> LossOutput` of `objective` (`objectives.get_objective`).

  The step's `rng` is split into one key per purpose (`objectives.base.PURPOSES`). A class-conditional model
  (`settings.num_classes`) takes `(x, class labels)` batches; in training each label becomes the null class with
  probability `settings.class_dropout`, so one network learns D(x, t, c) and D(x, t, null). `inputs`: what the
  objective's loss receives beyond the batch (`Objective.loss`: the step, its own state, its companions' variables).
  """
  settings, model, sde = objective.settings, objective.model, objective.sde
  align = train and settings.repa is not None  # REPA's term, in training only

  def loss_fn(rng, variables, batch, inputs=None):
    x, class_labels = split_batch(batch, settings.num_classes)
    keys = purpose_keys(rng)
    if train and settings.class_dropout:
      class_labels = drop_labels(keys["labels"], class_labels, settings.num_classes, settings.class_dropout)
    recorder = repa.TokenRecorder(model) if align else None  # the objective's own forward pass, its tokens kept
    call = ModelCall(recorder or model, sde.bind(variables), variables, train, keys["dropout"], class_labels)
    loss = objective.loss(call, x, objective.draw(keys, x), inputs)
    if settings.loss_weighting == "uncertainty":
      loss = uncertainty.weigh_by_uncertainty(loss, call)
    if align:
      loss = add_repa(loss, settings.repa, model, variables, recorder.tokens, x, inputs[repa.ROLE],
                      inputs.get(repa.DECODER_ROLE))
    return loss

  return loss_fn
