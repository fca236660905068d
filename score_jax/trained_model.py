"""A trained model from its workdir: the training state that its checkpoints restore into, and `load_model`.

It lives above the train state (it builds one); `score_jax.checkpoint.load_model` stays importable.
"""

import dataclasses
import json
import os
import types

import jax
import jax.numpy as jnp
import ml_collections

from score_jax import base_config, checkpoint, objectives, optim, sde as sde_lib, train_state
from score_jax.models import GuidingModel, get_data_shape, get_denoiser_fn, get_model, parameterization_of


def _components(config):
  """The SDE, model and objective (with its teacher attached) that a run of `config` builds its state from."""
  config = base_config.complete(config)
  sde = sde_lib.get_sde(config)[0]
  model = get_model(config)
  objective = attach_teacher(objectives.get_objective(sde, model, objectives.LossConfig.from_config(config)))
  return types.SimpleNamespace(sde=sde, model=model, objective=objective)


def initial_train_state(config, components=None):
  """The state a run of `config` starts from (key 0): the structure, dtypes and optimizer state that its
  checkpoints and EMA snapshots are restored into."""
  components = components or _components(config)
  return train_state.init_train_state(jax.random.PRNGKey(0), config, optim.get_optimizer(config),
                                      components=components)


def abstract_train_state(config):
  """`initial_train_state(config)` as shapes, dtypes and replicated shardings, computed without running it."""
  components = _components(config)  # outside the trace: a teacher is read from disk
  return checkpoint.abstract_state(lambda: initial_train_state(config, components))


class TrainedRun:
  """A trained score_jax model from its workdir: its config (config.json), network with parameterization, SDE and
  EMA variables (of checkpoint `step`, default the newest), loaded once on the host. A distillation teacher
  (`training.teacher_workdir`) and an autoguidance guide (`sampling.guidance_workdir`) are such runs."""

  def __init__(self, workdir, step=None):
    self.workdir = workdir
    self.config = run_config(workdir)
    self.sde, self.sampling_eps = sde_lib.get_sde(self.config)  # its path and its samplers' end time
    self.model, variables, self.step = load_model(self.config, workdir, step=step)
    self.variables = jax.device_get(variables)

  def denoiser_fn(self, variables, sde, class_labels=None):
    """D(x, t) of the run's model with `variables` (e.g. the copy carried by a train state) under `sde`, given
    the `class_labels` when it is class-conditional (an unconditional model ignores them)."""
    return get_denoiser_fn(sde, self.model, variables, continuous=self.config.training.continuous,
                           class_labels=class_labels if self.config.model.num_classes else None)


def check_same_path(run_sde, sde, key, workdir):
  """Raises a `ValueError` naming `key`=`workdir` when the path x(t) = m x0 + std z of `run_sde` is not `sde`'s."""
  times = jnp.linspace(0.01, 0.99, 9)
  same_path = type(run_sde) is type(sde) and all(
      bool(jnp.allclose(a, b, rtol=1e-5)) for a, b in zip(run_sde.marginal_coeffs(times), sde.marginal_coeffs(times)))
  if not same_path:
    raise ValueError(f"{key}={workdir!r} was trained on another path ({type(run_sde).__name__}) than this run's "
                     f"({type(sde).__name__}): both models must follow the same x(t)")


Teacher = TrainedRun  # consistency distillation's, reflow's and sCD's name for it


def attach_teacher(objective):
  """`objective` with the teacher of `training.teacher_workdir` when it needs one (`Objective.needs`).

  Raises:
    ValueError: the teacher's run cannot be read, or its path x(t) = m x0 + std z is not the student's.
  """
  if "teacher" not in objective.needs or objective.teacher is not None:
    return objective
  teacher = TrainedRun(objective.settings.teacher_workdir)
  check_same_path(teacher.sde, objective.sde, "training.teacher_workdir", teacher.workdir)
  return dataclasses.replace(objective, teacher=teacher)


def guiding_model(config, sde, model):
  """The autoguidance guide of `config.sampling.guidance_workdir` (checkpoint `sampling.guidance_step`, 0 the
  newest) for `model` under `sde`, as a `models.GuidingModel`; None when the key is empty.

  The guide may differ in width, depth and training length, but not in the data, the path or the
  parameterization.

  Raises:
    ValueError: the run cannot be read, or its data shape, path or parameterization differs (one line).
  """
  workdir = config.sampling.get("guidance_workdir", "")  # a partial config (the reference's own) has none
  if not workdir:
    return None
  guide_config = run_config(workdir)  # checked before its weights are read
  check_same_path(sde_lib.get_sde(guide_config)[0], sde, "sampling.guidance_workdir", workdir)
  if get_data_shape(guide_config) != get_data_shape(config):
    raise ValueError(f"sampling.guidance_workdir={workdir!r} models data of shape {get_data_shape(guide_config)}, "
                     f"this model {get_data_shape(config)}: the guide must share the data")
  own, theirs = (type(parameterization_of(m)).__name__ for m in (model, get_model(guide_config)))
  if own != theirs:
    raise ValueError(f"sampling.guidance_workdir={workdir!r} has the {theirs} parameterization, this model {own}: "
                     "the guide must share the parameterization")
  guide = TrainedRun(workdir, step=config.sampling.get("guidance_step", 0) or None)
  return GuidingModel(guide.model, guide.variables, continuous=guide.config.training.continuous)


def run_config(workdir):
  """The config a training run wrote as `<workdir>/config.json` (read as data, never executed), completed with
  the base configuration's defaults for keys it predates.

  Raises:
    ValueError: `workdir` has no readable config.json.
  """
  path = os.path.join(workdir, "config.json")
  try:
    with open(path) as f:
      values = json.load(f)
  except (OSError, ValueError) as error:
    raise ValueError(f"cannot read the run's config {path} ({error}); is {workdir!r} a training workdir?") from None
  return base_config.complete(ml_collections.ConfigDict(values))


def _managers(workdir):
  return [checkpoint.get_manager(os.path.join(workdir, directory))
          for directory in (checkpoint.PREEMPTION_DIR, checkpoint.SNAPSHOT_DIR)]


def checkpoint_steps(workdir):
  """The sorted steps of a training workdir's checkpoints (snapshots and preemption checkpoints)."""
  return sorted({step for manager in _managers(workdir) for step in manager.all_steps()})


def load_model(config, workdir, *, ema=True, step=None):
  """The model of a training workdir: `(model, variables, step)` of its newest readable checkpoint
  (snapshot or preemption), or of checkpoint `step`, with the EMA parameters by default (`ema=False`:
  the raw ones).

  A post-hoc EMA (`score_jax.posthoc_ema.write_reconstruction`) is loaded from its own directory likewise.

  Raises:
    ValueError: `workdir` holds no readable checkpoint of this config's model, or none of `step`.
  """
  config = base_config.complete(config)  # e.g. the config.json of a run older than some keys
  managers = _managers(workdir)
  if step is not None:
    holding = [m for m in managers if step in m.all_steps()]
    if not holding:
      steps = checkpoint_steps(workdir)
      raise ValueError(f"{workdir} has no checkpoint of step {step}; its steps: {', '.join(map(str, steps)) or 'none'}")
    state = checkpoint.restore(holding[0], step, abstract_train_state(config))
    return get_model(config), state.variables(ema=ema), step
  state, step = checkpoint.restore_latest(managers, abstract_train_state(config))
  if step is None:
    raise ValueError(f"no readable score-model checkpoint in {workdir}; train one with `python main.py "
                     "--mode=train` and the same --config and --workdir")
  return get_model(config), state.variables(ema=ema), step
