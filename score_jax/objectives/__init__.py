"""Training objectives (`training.objective`), one module each, behind one registry.

  dsm.py       denoising score matching, its likelihood weighting and the regression on a
               parameterization's target (Song et al. 2021, Eq. (7); Song et al. 2021b)
  edm.py       Karras et al. 2022, Sec. 5
  vdm.py       the continuous-time ELBO of Kingma et al. 2021, fixed or learned schedules
  ssm.py       sliced score matching (Song et al. 2019)
  consistency.py  improved consistency training (Song & Dhariwal 2024) and consistency distillation (Song et al. 2023)
  scm.py       continuous-time consistency training and distillation on TrigFlow's path (Lu & Song 2025)
  reflow.py    rectified flow's reflow: flow matching on a teacher's (noise, sample) pairs (Liu et al. 2023)
  uncertainty.py  the learned per-noise-level loss weighting (`training.loss_weighting`, Karras et al. 2024)
  discrete.py  the reference's SMLD and DDPM losses (`training.continuous=False`)
  base.py      the settings (`LossConfig`), the per-purpose keys, `LossOutput`, the `Objective` interface

A new objective is a module with an `Objective` subclass and one line in `OBJECTIVES`.
"""

import jax.numpy as jnp

from score_jax.objectives import consistency, discrete, dsm, edm, reflow, scm, ssm, uncertainty, vdm
from score_jax.objectives.base import (PURPOSES, LossConfig, LossOutput, ModelCall, Objective, pixel_levels,
                                       purpose_keys, scalar_per_example)
from score_jax.utils import choice_error

OBJECTIVES = {
    "dsm": dsm.DSM,
    "edm": edm.EDM,
    "vdm": vdm.VDM,
    "ssm": ssm.SSM,
    "consistency_training": consistency.ConsistencyTraining,
    "consistency_distillation": consistency.ConsistencyDistillation,
    "scm": scm.SCM,
    "reflow": reflow.Reflow,
    "smld": discrete.SMLD,   # training.continuous=False on the VE SDE
    "ddpm": discrete.DDPM,   # training.continuous=False on the VP SDE
}


def objective_choices():
  """The values of `training.objective` (the discrete losses follow from `training.continuous=False`)."""
  return tuple(name for name, objective in OBJECTIVES.items() if not objective.discrete_time)


def objective_name(settings, sde):
  """The registry name of a run's objective: `training.objective`, or the SDE's discrete loss."""
  if settings.objective not in objective_choices():
    raise choice_error("training.objective", settings.objective, objective_choices())
  if settings.continuous:
    return settings.objective
  if settings.objective != "dsm":
    raise ValueError(f"training.objective={settings.objective!r} needs training.continuous=True")
  if sde.discrete_loss is None:
    raise ValueError(f"training.continuous=False is defined for vesde (SMLD) and vpsde (DDPM), "
                     f"not {type(sde).__name__}")
  return sde.discrete_loss


def check_loss_config(settings, sde):
  """Raises a `ValueError` for settings no objective defines (before any compile); returns the objective's class."""
  objective = OBJECTIVES[objective_name(settings, sde)]
  if settings.importance_sampling and not (settings.likelihood_weighting and settings.objective == "dsm"):
    raise ValueError("training.importance_sampling=True samples t for training.likelihood_weighting=True "
                     "with training.objective='dsm'")
  objective.check(settings, sde)
  if settings.loss_weighting not in uncertainty.WEIGHTINGS:
    raise choice_error("training.loss_weighting", settings.loss_weighting, uncertainty.WEIGHTINGS)
  if settings.loss_weighting == "uncertainty" and not objective.reports_noise_levels:
    raise ValueError(f"training.loss_weighting='uncertainty' weighs losses by noise level: defined for the "
                     f"objectives {', '.join(n for n, o in OBJECTIVES.items() if o.reports_noise_levels)}, not "
                     f"{settings.objective!r}")
  if not 0.0 <= settings.class_dropout < 1.0:
    raise ValueError(f"training.class_dropout={settings.class_dropout} must lie in [0, 1)")
  if settings.class_dropout and not settings.num_classes:
    raise ValueError(f"training.class_dropout={settings.class_dropout} needs a class-conditional model "
                     "(model.num_classes > 0)")
  if sde.learned_schedule and settings.objective != "vdm":
    raise ValueError("training.sde='learned_vpsde' is trained by training.objective='vdm' (its schedule "
                     "follows the ELBO)")
  return objective


def get_objective(sde, model, settings):
  """The `Objective` of `settings` (a `LossConfig`) for `model` under `sde`, checked."""
  return check_loss_config(settings, sde)(sde=sde, model=model, settings=settings)


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


def get_loss_fn(sde, model, settings, *, train, objective=None):
  """Returns `loss_fn(rng, variables, batch, objective_state=None) -> LossOutput` for `settings.objective`.

  The step's `rng` is split into one key per purpose (`objectives.base.PURPOSES`). A class-conditional
  model (`settings.num_classes`) takes `(x, class labels)` batches; in training each label becomes the
  null class with probability `settings.class_dropout`, so one network learns D(x, t, c) and D(x, t, null).
  `objective_state` is what the objective's step needs beyond the batch (`Objective.needs`); `objective`:
  the one `get_objective(sde, model, settings)` built already.
  """
  objective = get_objective(sde, model, settings) if objective is None else objective

  def loss_fn(rng, variables, batch, objective_state=None):
    x, class_labels = split_batch(batch, settings.num_classes)
    keys = purpose_keys(rng)
    if train and settings.class_dropout:
      class_labels = drop_labels(keys["labels"], class_labels, settings.num_classes, settings.class_dropout)
    call = ModelCall(model, sde.bind(variables), variables, train, keys["dropout"], class_labels)
    loss = objective.loss(call, x, objective.draw(keys, x), objective_state)
    if settings.loss_weighting == "uncertainty":
      loss = uncertainty.weigh_by_uncertainty(loss, call)
    return loss

  return loss_fn


__all__ = ["OBJECTIVES", "PURPOSES", "LossConfig", "LossOutput", "ModelCall", "Objective",
           "check_loss_config", "drop_labels", "get_loss_fn", "get_objective", "objective_choices", "objective_name", "pixel_levels",
           "purpose_keys", "split_batch"]
