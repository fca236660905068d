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
from score_jax.models import get_denoiser_fn, get_model


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


class Teacher:
  """A trained score_jax model from its workdir (consistency distillation's `training.teacher_workdir`): its
  config (config.json), network with parameterization, SDE and EMA variables, loaded once on the host."""

  def __init__(self, workdir):
    self.workdir = workdir
    self.config = run_config(workdir)
    self.sde, self.sampling_eps = sde_lib.get_sde(self.config)  # its path and its samplers' end time
    self.model, variables, self.step = load_model(self.config, workdir)
    self.variables = jax.device_get(variables)

  def denoiser_fn(self, variables, sde, class_labels=None):
    """D(x, t) of the teacher with `variables` (the copy carried by the train state) under `sde`, given the
    student's `class_labels` when it is class-conditional (an unconditional teacher ignores them)."""
    return get_denoiser_fn(sde, self.model, variables, continuous=self.config.training.continuous,
                           class_labels=class_labels if self.config.model.num_classes else None)


def attach_teacher(objective):
  """`objective` with the teacher of `training.teacher_workdir` when it needs one (`Objective.needs`).

  Raises:
    ValueError: the teacher's run cannot be read, or its path x(t) = m x0 + std z is not the student's.
  """
  if "teacher" not in objective.needs or objective.teacher is not None:
    return objective
  workdir = objective.settings.teacher_workdir
  teacher = Teacher(workdir)
  times = jnp.linspace(0.01, 0.99, 9)
  same_path = type(teacher.sde) is type(objective.sde) and all(
      bool(jnp.allclose(a, b, rtol=1e-5)) for a, b in zip(teacher.sde.marginal_coeffs(times),
                                                          objective.sde.marginal_coeffs(times)))
  if not same_path:
    raise ValueError(f"training.teacher_workdir={workdir!r} was trained on another path ({type(teacher.sde).__name__}) "
                     f"than this run's ({type(objective.sde).__name__}): the teacher's ODE steps must follow the "
                     "student's x(t)")
  return dataclasses.replace(objective, teacher=teacher)


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


def load_model(config, workdir, *, ema=True, step=None):
  """The model of a training workdir: `(model, variables, step)` of its newest readable checkpoint
  (snapshot or preemption), or of checkpoint `step`, with the EMA parameters by default (`ema=False`:
  the raw ones).

  A post-hoc EMA (`score_jax.posthoc_ema.write_reconstruction`) is loaded from its own directory likewise.

  Raises:
    ValueError: `workdir` holds no readable checkpoint of this config's model, or none of `step`.
  """
  config = base_config.complete(config)  # e.g. the config.json of a run older than some keys
  managers = [checkpoint.get_manager(os.path.join(workdir, directory))
              for directory in (checkpoint.PREEMPTION_DIR, checkpoint.SNAPSHOT_DIR)]
  if step is not None:
    holding = [m for m in managers if step in m.all_steps()]
    if not holding:
      steps = sorted({s for m in managers for s in m.all_steps()})
      raise ValueError(f"{workdir} has no checkpoint of step {step}; its steps: {', '.join(map(str, steps)) or 'none'}")
    state = checkpoint.restore(holding[0], step, abstract_train_state(config))
    return get_model(config), state.variables(ema=ema), step
  state, step = checkpoint.restore_latest(managers, abstract_train_state(config))
  if step is None:
    raise ValueError(f"no readable score-model checkpoint in {workdir}; train one with `python main.py "
                     "--mode=train` and the same --config and --workdir")
  return get_model(config), state.variables(ema=ema), step
