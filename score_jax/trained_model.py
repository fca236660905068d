"""A trained model from its workdir, read as its network alone, and the frozen companions built on it.

`load_model(workdir)` reads the run's own `config.json` and the `model` item of a checkpoint (step,
parameters, EMA, power EMAs): the SDE, the network and its parameterization, never an objective, an
optimizer, a teacher or a guide. A frozen companion (a distillation's teacher, an autoguidance guide) is a
`TrainedRun`, read once by a driver through `load_companion`, which checks in one place that it fits the
model it serves.
"""

import json
import os

import jax
import jax.numpy as jnp
import ml_collections
from absl import logging

from score_jax import base_config, checkpoint, feature_encoders, sde as sde_lib
from score_jax.models import GuidingModel, get_data_shape, get_denoiser_fn, get_model, init_network, parameterization_of
from score_jax.train_state import MODEL_ITEM, model_item, profile_names

# Runs written before config.json recorded the parameterization that an objective implies: their
# `training.objective` -> the `model.parameterization` they trained (a closed list: newer runs record it).
_RECORDED_LATER = {"consistency_training": "consistency", "consistency_distillation": "consistency",
                   "scm": "trigflow"}


def run_config(workdir):
  """The config a training run wrote as `<workdir>/config.json` (read as data, never executed), completed with
  the base configuration's defaults for keys it predates.

  Raises:
    ValueError: `workdir` has no readable config.json.
  """
  path = os.path.join(workdir, checkpoint.CONFIG_FILE)
  try:
    with open(path) as f:
      values = json.load(f)
  except (OSError, ValueError) as error:
    raise ValueError(f"cannot read the run's config {path} ({error}); is {workdir!r} a training workdir?") from None
  config = base_config.complete(ml_collections.ConfigDict(values))
  implied = _RECORDED_LATER.get(config.training.objective)
  if implied and config.model.parameterization in ("reference", "edm", "flow"):
    config.model.parameterization = implied
  return config


def init_variables(rng, sde, model, shape):
  """The initial variables of `model` for examples of `shape` under `sde`: the network's, with a learned
  schedule's parameters among the params (`params["noise_schedule"]`)."""
  variables = init_network(rng, model, shape)
  variables["params"] = {**variables["params"], **sde.init_params(jax.random.fold_in(rng, 1))}
  return variables


def abstract_model_item(config, sde, model):
  """The structure, dtypes and (replicated) shardings of a checkpoint's `model` item for this network."""
  def item():
    variables = dict(init_variables(jax.random.PRNGKey(0), sde, model, get_data_shape(config)))
    params = variables.pop("params")
    power = config.model.ema_type == "power"
    power_ema = {name: params for name in profile_names(config.model.ema_sigma_rels)} if power else None
    return model_item(jnp.zeros((), jnp.int32), params, params, variables, power_ema)
  return checkpoint.abstract_state(item)


def _managers(workdir):
  return [checkpoint.get_manager(os.path.join(workdir, directory))
          for directory in (checkpoint.PREEMPTION_DIR, checkpoint.SNAPSHOT_DIR)]


def checkpoint_steps(workdir):
  """The sorted steps of a training workdir's checkpoints (snapshots and preemption checkpoints)."""
  return sorted({step for manager in _managers(workdir) for step in manager.all_steps()})


def restore_model_item(manager, step, target):
  """The `model` item of checkpoint `step`; from a checkpoint of the one-item layout (before the parts), the
  same fields of its whole state (read as stored, then checked against `target`)."""
  if MODEL_ITEM in checkpoint.item_names(manager, step):
    return checkpoint.restore_item(manager, step, {MODEL_ITEM: target})[MODEL_ITEM]
  state = checkpoint.restore_item(manager, step, {checkpoint.LEGACY_ITEM: None})[checkpoint.LEGACY_ITEM]
  item = {name: state[name] for name in target}
  shapes = lambda tree: jax.tree_util.tree_map(lambda a: (tuple(a.shape), jnp.dtype(a.dtype)), tree)  # noqa: E731
  if shapes(item) != shapes(target):
    raise ValueError("its arrays differ from the network's (shapes or dtypes)")
  return jax.tree_util.tree_map(lambda a, like: jax.device_put(jnp.asarray(a), like.sharding), item, target)


def load_model(workdir, *, step=None, ema=True):
  """The model of a training workdir: `(model, variables, step)` of its newest readable checkpoint (snapshot
  or preemption), or of checkpoint `step`, with the EMA parameters by default (`ema=False`: the raw ones).

  The model is built from the run's own `config.json`; only the checkpoint's `model` item is read. A post-hoc
  EMA (`score_jax.posthoc_ema.write_reconstruction`) and a converted checkpoint load from their own
  directories likewise.

  Raises:
    ValueError: `workdir` has no config.json, no checkpoint (of `step`), or checkpoints that its network cannot
      read (the first error named).
  """
  return _load_model(run_config(workdir), workdir, step=step, ema=ema)


def _load_model(config, workdir, *, step, ema):
  """`load_model` of the run whose config.json reads as `config` (read once by the caller)."""
  sde = sde_lib.get_sde(config)[0]
  model = get_model(config)
  target = abstract_model_item(config, sde, model)
  candidates = sorted(((s, m) for m in _managers(workdir) for s in m.all_steps()), key=lambda c: c[0], reverse=True)
  if step is not None:
    candidates = [(s, m) for s, m in candidates if s == step][:1]
    if not candidates:
      steps = ", ".join(map(str, checkpoint_steps(workdir))) or "none"
      raise ValueError(f"{workdir} has no checkpoint of step {step}; its steps: {steps}")
  if not candidates:
    raise ValueError(f"no score-model checkpoint in {workdir}; train one with `python main.py --mode=train` and "
                     "the same --config and --workdir")
  errors = []
  for found, manager in candidates:
    try:
      item = restore_model_item(manager, found, target)
    except Exception as error:  # noqa: BLE001 -- an unreadable checkpoint is skipped, the first error reported
      errors.append(f"step {found}: {type(error).__name__}: {str(error).splitlines()[0][:200]}")
      logging.warning("Checkpoint %s/%d is unreadable (%s); trying an older one.", manager.directory, found,
                      errors[-1])
      continue
    variables = {**item["model_state"], "params": item["ema_params"] if ema else item["params"]}
    return model, variables, found
  raise ValueError(f"{workdir} has checkpoints (steps {', '.join(str(s) for s, _ in reversed(candidates))}) but "
                   f"none is readable as the network of its config.json; the newest: {errors[0]}")


class TrainedRun:
  """A trained score_jax model from its workdir, frozen: its config (config.json), network with
  parameterization, SDE and EMA variables (of checkpoint `step`, default the newest), loaded once on the host.
  A distillation teacher and an autoguidance guide are such runs (`load_companion`)."""

  def __init__(self, workdir, step=None, config=None):
    self.workdir = workdir
    self.config = run_config(workdir) if config is None else config  # `config`: its config.json, read already
    self.sde, self.sampling_eps = sde_lib.get_sde(self.config)  # its path and its samplers' end time
    self.model, variables, self.step = _load_model(self.config, workdir, step=step, ema=True)
    self.variables = jax.device_get(variables)

  def denoiser_fn(self, variables, sde, class_labels=None):
    """D(x, t) of the run's model with `variables` (e.g. the copy a train step receives) under `sde`, given
    the `class_labels` when it is class-conditional (an unconditional model ignores them)."""
    return get_denoiser_fn(sde, self.model, variables, continuous=self.config.training.continuous,
                           class_labels=class_labels if self.config.model.num_classes else None)


# What a companion may have to share with the model it serves, each checked by `load_companion`.
SHARED = ("data", "path", "classes", "parameterization")


def check_same_path(run_sde, sde, key, workdir):
  """Raises a `ValueError` naming `key`=`workdir` when the path x(t) = m x0 + std z of `run_sde` is not `sde`'s."""
  times = jnp.linspace(0.01, 0.99, 9)
  same_path = type(run_sde) is type(sde) and all(
      bool(jnp.allclose(a, b, rtol=1e-5)) for a, b in zip(run_sde.marginal_coeffs(times), sde.marginal_coeffs(times)))
  if not same_path:
    raise ValueError(f"{key}={workdir!r} was trained on another path ({type(run_sde).__name__}) than this run's "
                     f"({type(sde).__name__}): both models must follow the same x(t)")


def check_companion(companion_config, config, key, *, shares=SHARED):
  """Raises one `ValueError` naming `key` at the first thing in `shares` that the run of `companion_config` (at
  `config[key]`) does not share with the model of `config`: "data" (the shape of an example and
  `data.centered`), "path" (x(t)), "classes" (`model.num_classes`, when the companion takes class labels) and
  "parameterization"."""
  workdir = config[key.split(".")[0]][key.split(".")[1]]
  prefix = f"{key}={workdir!r}"
  if "data" in shares:
    theirs, own = get_data_shape(companion_config), get_data_shape(config)
    if theirs != own:
      raise ValueError(f"{prefix} models data of shape {theirs}, this run {own} (data.image_size, "
                       "data.num_channels, data.dim): both must model the same data")
    if companion_config.data.centered != config.data.centered:
      raise ValueError(f"{prefix} has data.centered={companion_config.data.centered}, this run "
                       f"{config.data.centered}: both must scale the data alike")
    theirs, own = (c.data.get("latent_norm", "") if c.data.get("autoencoder", "") else "pixels"
                   for c in (companion_config, config))
    if theirs != own:
      raise ValueError(f"{prefix} models {theirs} data, this run {own} (data.autoencoder, data.latent_norm): "
                       "both must model the same data")
  if "path" in shares:
    check_same_path(sde_lib.get_sde(companion_config)[0], sde_lib.get_sde(config)[0], key, workdir)
  theirs, own = companion_config.model.num_classes, config.model.num_classes
  if "classes" in shares and theirs and own and theirs != own:  # this run's labels are passed to it
    raise ValueError(f"{prefix} is conditioned on model.num_classes={theirs} classes, this run on {own}: the class "
                     "labels passed to it would mean other classes")
  if "parameterization" in shares:
    theirs, own = (type(parameterization_of(get_model(c))).__name__ for c in (companion_config, config))
    if theirs != own:
      raise ValueError(f"{prefix} has the {theirs} parameterization, this run {own}: both must share it")


def load_companion(config, key, *, shares=SHARED, step=None):
  """The frozen run of workdir `config[key]` (e.g. "training.teacher_workdir") as a `TrainedRun`, checked
  against the model of `config` (`check_companion`) before its weights are read; None when the key is empty.

  Raises:
    ValueError: the run cannot be read, or does not fit (one line naming `key`).
  """
  section, name = key.split(".")
  workdir = config[section].get(name, "")  # a partial config (the reference's own) has none
  if not workdir:
    return None
  try:
    companion_config = run_config(workdir)
  except ValueError as error:
    raise ValueError(f"{key}={workdir!r}: {error}") from None
  check_companion(companion_config, config, key, shares=shares)
  return TrainedRun(workdir, step=step, config=companion_config)


def load_teacher(config):
  """The teacher of `training.teacher_workdir` (None without one): data, path and classes shared."""
  return load_companion(config, "training.teacher_workdir", shares=("data", "path", "classes"))


def guiding_model(config):
  """The autoguidance guide of `sampling.guidance_workdir` (checkpoint `sampling.guidance_step`, 0 the newest)
  for the model of `config`, as a `models.GuidingModel`; None when the key is empty. The guide may differ in
  width, depth and training length, but not in the data, the path, the classes or the parameterization."""
  guide = load_companion(config, "sampling.guidance_workdir", step=config.sampling.get("guidance_step", 0) or None)
  if guide is None:
    return None
  return GuidingModel(guide.model, guide.variables, continuous=guide.config.training.continuous)


# The frozen companions a driver may read for a run (`load_companions`), each from its own config key (REPA's
# encoder: from `training.repa_weight` and `training.repa_encoder`).
COMPANIONS = {"teacher": load_teacher, "guide": guiding_model, "repa_encoder": feature_encoders.load_repa_encoder}


def load_companions(config, roles):
  """`{role: companion}` for each of `roles` (names in `COMPANIONS`), each read once and checked against the
  model of `config`; None for a role whose key is empty."""
  return {role: COMPANIONS[role](config) for role in roles}

