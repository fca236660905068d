"""Training objectives (`training.objective`), one module each, behind one registry.

  dsm.py       denoising score matching, its likelihood weighting and the regression on a
               parameterization's target (Song et al. 2021, Eq. (7); Song et al. 2021b)
  edm.py       Karras et al. 2022, Sec. 5
  vdm.py       the continuous-time ELBO of Kingma et al. 2021, fixed or learned schedules
  ssm.py       sliced score matching (Song et al. 2019)
  consistency.py  improved consistency training (Song & Dhariwal 2024) and consistency distillation (Song et al. 2023)
  scm.py       continuous-time consistency training and distillation on TrigFlow's path (Lu & Song 2025)
  meanflow.py  MeanFlow's average-velocity objective for flow maps, and its improved form (Geng et al. 2025)
  reflow.py    rectified flow's reflow: flow matching on a teacher's (noise, sample) pairs (Liu et al. 2023)
  autoencoder.py  a KL-regularised autoencoder (reconstruction + KL; Rombach et al. 2022), for latent diffusion
  uncertainty.py  the learned per-noise-level loss weighting (`training.loss_weighting`, Karras et al. 2024)
  discrete.py  the reference's SMLD and DDPM losses (`training.continuous=False`)
  repa.py      representation alignment, a term added to any objective's loss (`training.repa_weight`, Yu et al. 2025)
  base.py      the shared settings (`LossConfig`), `LossOutput`, `ModelCall`, the `Objective` interface
  loss.py      `get_loss_fn`: a batch, the step's keys and the model call around an objective's loss

A new objective is a module with an `Objective` subclass and one line in `OBJECTIVES` (or, outside the
package, `register_objective(name)(cls)`).
"""

from score_jax import sde as sde_lib
from score_jax.objectives import (autoencoder, consistency, discrete, dsm, edm, meanflow, reflow, scm, ssm,
                                  uncertainty, vdm)
from score_jax.objectives.base import (PURPOSES, LossConfig, LossOutput, ModelCall, Objective, pixel_levels,
                                       purpose_keys)
from score_jax.objectives.loss import drop_labels, get_loss_fn, split_batch
from score_jax.utils import choice_error

OBJECTIVES = {
    "dsm": dsm.DSM,
    "edm": edm.EDM,
    "vdm": vdm.VDM,
    "ssm": ssm.SSM,
    "consistency_training": consistency.ConsistencyTraining,
    "consistency_distillation": consistency.ConsistencyDistillation,
    "scm": scm.SCM,
    "meanflow": meanflow.MeanFlow,
    "reflow": reflow.Reflow,
    "autoencoder": autoencoder.Autoencoder,
    "smld": discrete.SMLD,   # training.continuous=False on the VE SDE
    "ddpm": discrete.DDPM,   # training.continuous=False on the VP SDE
}


def register_objective(name):
  """Decorator registering an `Objective` subclass as `training.objective = name` (e.g. from a user's module)."""
  def register(cls):
    if name in OBJECTIVES:
      raise ValueError(f"training.objective {name!r} is already registered")
    OBJECTIVES[name] = cls
    return cls
  return register


def objective_choices():
  """The values of `training.objective` (the discrete losses follow from `training.continuous=False`)."""
  return tuple(name for name, objective in OBJECTIVES.items() if not objective.discrete_time)


def objective_class(config, sde=None):
  """The registered class of a run's objective: `training.objective`, or with `training.continuous=False` the
  SDE's discrete loss (`sde`: the run's, when built already)."""
  training = config.training
  if training.objective not in objective_choices():
    raise choice_error("training.objective", training.objective, objective_choices())
  if training.continuous:
    return OBJECTIVES[training.objective]
  if training.objective != "dsm":
    raise ValueError(f"training.objective={training.objective!r} needs training.continuous=True")
  sde = sde_lib.get_sde(config)[0] if sde is None else sde
  if sde.discrete_loss is None:
    raise ValueError(f"training.continuous=False is defined for vesde (SMLD) and vpsde (DDPM), "
                     f"not {type(sde).__name__}")
  return OBJECTIVES[sde.discrete_loss]


def trained_parameterization(objective, parameterization):
  """The `model.parameterization` that `training.objective = objective` trains: its own
  (`Objective.parameterization`), or `parameterization` (the config's) for an objective that trains any.
  An unregistered name is returned as it is (`get_objective` refuses it).

  Raises:
    ValueError: `parameterization` is one the objective's own does not refine (one line).
  """
  cls = OBJECTIVES.get(objective)
  own = None if cls is None else cls.parameterization
  if own is None or parameterization == own:
    return parameterization
  if parameterization not in cls.refines:
    raise ValueError(f"training.objective={objective!r} trains model.parameterization={own!r} "
                     f"(its boundary condition), not {parameterization!r}: leave the key at its default")
  return own


def get_objective(config, sde, model, *, teacher=None):
  """The `Objective` of a (completed) `config` for `model` under `sde`, with its frozen `teacher` (a
  `trained_model.TrainedRun`, loaded by the driver) when it learns from one; checked before any compile.

  Raises:
    ValueError: one line naming the first bad key.
  """
  cls = objective_class(config, sde)
  settings = LossConfig.from_config(config)
  if config.training.importance_sampling and "importance_sampling" not in cls.__dataclass_fields__:
    raise ValueError("training.importance_sampling=True samples t for training.likelihood_weighting=True "
                     "with training.objective='dsm'")
  if settings.loss_weighting not in uncertainty.WEIGHTINGS:
    raise choice_error("training.loss_weighting", settings.loss_weighting, uncertainty.WEIGHTINGS)
  if settings.loss_weighting == "uncertainty" and not cls.reports_noise_levels:
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
  extra = {"teacher": teacher} if teacher is not None else {}
  if extra and "teacher" not in cls.__dataclass_fields__:
    raise ValueError(f"a teacher was given, but training.objective={settings.objective!r} learns from none")
  objective = cls(sde=sde, model=model, settings=settings, **cls.options(config), **extra)
  objective.check()
  return objective


__all__ = ["OBJECTIVES", "PURPOSES", "LossConfig", "LossOutput", "ModelCall", "Objective", "drop_labels",
           "get_loss_fn", "get_objective", "objective_choices", "objective_class", "pixel_levels", "purpose_keys",
           "register_objective", "trained_parameterization", "split_batch"]
