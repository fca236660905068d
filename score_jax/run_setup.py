"""`RunSetup`: everything static about a run, built once from its config.

Training, evaluation, sampling, editing, post-hoc EMA, the benchmarks and the tests share it: the SDE, the
model, the optimizer, the objective (with its teacher), the guide, the samplers, the data, and the jitted train /
eval steps over the device mesh. The config is prepared here, once (`prepare_config`: completed and checked
across keys), and each part checks its own keys as it is built.
"""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from score_jax import (base_config, datasets, ema, latent_data, objectives, optim, parallel, sampling,
                       sde as sde_lib, trained_model)
from score_jax.config_utils import check_config
from score_jax.models import get_data_shape, get_model
from score_jax.objectives import repa
from score_jax.train_state import init_train_state
from score_jax.train_steps import get_eval_step, get_multi_step, get_train_step
from score_jax.utils import choice_error


STEP_LOOPS = ("auto", "scan", "dispatch")


def step_loop(config, data_shape):
  """How the `n_jitted_steps` of one block run: one `lax.scan` program, or one dispatch per step.

  "auto" scans, except for image data on CPU: XLA:CPU runs convolutions inside a
  while loop about 30x slower than the same step jitted alone (0.31 s vs 9.4 s
  per step for the digits DDPM++ on 2 cores), so there each step is dispatched
  on its own (asynchronously: the host does not wait between steps).
  """
  choice = config.training.step_loop
  if choice not in STEP_LOOPS:
    raise choice_error("training.step_loop", choice, STEP_LOOPS)
  if choice != "auto":
    return choice
  images = len(data_shape) == 3
  return "dispatch" if images and jax.default_backend() == "cpu" else "scan"


def _dispatch_steps(single_step, state, batches, frozen):
  block_losses = []
  for i in range(jax.tree_util.tree_leaves(batches)[0].shape[0]):
    state, loss = single_step(state, jax.tree_util.tree_map(lambda x: x[i], batches), frozen)
    block_losses.append(loss)
  return state, jnp.stack(block_losses)


def prepare_config(config):
  """The config of a run, completed with the base's defaults, with the parameterization its objective trains
  (`objectives.trained_parameterization`) and checked across keys (`config_utils.check_config`): what every
  entry point (main.py's modes, the drivers' Python functions) does once before building anything.

  Raises:
    ValueError: one line naming the first bad key.
  """
  config = base_config.complete(config)
  config.model.parameterization = objectives.trained_parameterization(config.training.objective,
                                                                      config.model.parameterization)
  latent_data.resolve_latent_shape(config)  # a latent run's network input follows its autoencoder
  if config.sampling.consistency_grid is None and config.training.objective == "consistency_distillation":
    config.sampling.consistency_grid = config.training.teacher_steps  # multistep times on its training grid
  check_config(config)
  return config


class RunSetup:
  """Everything static about a run, each part built once from its prepared config: the SDE, the model, the
  optimizer, the objective with its frozen teacher, the autoguidance guide and the samplers (built here, nothing
  compiled); the data and the jitted train / eval steps (built on first use, so that sampling, editing and
  post-hoc EMA load no data).

  `companions`: the frozen companions it reads (`trained_model.load_companions`): "teacher" (the objective's,
  when it learns from one), "guide" (`sampling.guidance_workdir`) and "repa_encoder" (REPA's, when
  `training.repa_weight` > 0); () reads none and checks the config alone
  (`validate_config`). Sampling a trained run needs its guide, never its teacher.
  """

  def __init__(self, config, *, companions=("teacher", "guide", "repa_encoder")):
    self.config = config = prepare_config(config)
    self.mesh = parallel.make_mesh(fsdp=config.training.fsdp)  # (data, fsdp); checks training.fsdp
    self.data_shape = get_data_shape(config)  # one example in model space
    self.sde, self.sampling_eps = sde_lib.get_sde(config)
    self.model = get_model(config)
    self.optimizer = optim.get_optimizer(config)
    self.objective = objectives.get_objective(config, self.sde, self.model)
    self.ema_gammas = ema.power_gammas(config)  # the power EMA's exponents (None for the fixed EMA), checked
    self.class_conditional = config.model.num_classes > 0
    learns_from_teacher = "teacher" in self.objective.__dataclass_fields__
    loaded = trained_model.load_companions(
        config, [role for role in companions if role != "teacher" or learns_from_teacher])
    if loaded.get("teacher") is not None:
      self.objective = dataclasses.replace(self.objective, teacher=loaded["teacher"])
    if config.data.autoencoder:  # latent data: its frozen autoencoder (read by any run that reads companions)
      autoencoder = latent_data.data_autoencoder(config) if companions else None
      self.data = latent_data.get_latent_data(config, autoencoder)
    else:
      self.data = datasets.get_data(config)
    self.repa_encoder = loaded.get("repa_encoder")  # REPA's frozen encoder's variables (None without REPA)
    self.repa_decoder = None  # a latent REPA run's autoencoder variables: its encoder reads decoded clean images
    if self.repa_encoder is not None and config.data.autoencoder:
      decode, self.repa_decoder = self.data.pixel_decoder()
      self.objective = repa.with_decoder(self.objective, decode)
    self.guide = loaded.get("guide")
    if not self.objective.generative:  # an autoencoder has no sampler (`sampler` refuses)
      return
    if self.guide is not None or not config.sampling.guidance_workdir:
      self.sampler(config.sampling.batch_size)  # the sampler's options are checked before anything compiles
    else:
      sampling.config_options(config.sampling.method.lower(), config.sampling, self.sampling_eps)

  @functools.cache
  def sampler(self, batch_size):
    """The configured sampler for `batch_size` samples: `sample_fn(rng, variables, class_labels=None) ->
    SampleOutput` (with the run's guide, if any).

    The batch is split over every device of every process (the samples come back as a global
    array: `parallel.gather` fetches them); sample i is the same whatever the device count.

    Raises:
      ValueError: the run trains an autoencoder, which has no sampler (one line).
    """
    self.check_samples()
    return sampling.get_sampling_fn(self.config, self.sde, self.model, (batch_size,) + self.data_shape,
                                    self.data.inverse_scaler, self.sampling_eps, mesh=self.mesh, guide=self.guide)

  def check_samples(self):
    """Raises a one-line `ValueError` when the run trains an autoencoder, which draws no samples."""
    if not self.objective.generative:
      raise ValueError(f"training.objective={self.config.training.objective!r} trains an autoencoder, which draws "
                       "no samples: load it with score_jax.autoencoder.load_autoencoder(workdir)")

  @property
  def dataset(self):
    """The data alone (evaluation's statistics and likelihoods)."""
    return self.data.dataset()

  @property
  def train_dataset(self):
    """What the loss trains on: `(data, labels)` batches for a class-conditional model."""
    return self.data.dataset(labels=self.class_conditional)

  @property
  def scaler(self):
    return self.data.scaler

  @functools.cached_property
  def _read_train_batches(self):
    read = functools.partial(self.train_dataset.train_batches, n=self.config.training.n_jitted_steps)
    if isinstance(self.train_dataset, (datasets.ImageDataset, latent_data.LatentDataset)):  # made on the host:
      # read the next block ahead (images decoded, latents drawn)
      read = datasets.ReadAhead(read, self.config.training.n_jitted_steps)
    return read

  @functools.cached_property
  def _frozen(self):
    """The frozen companions' variables that the steps receive (a teacher's, REPA's encoder's), on every device
    once."""
    frozen = dict(self.objective.frozen_variables())
    if self.repa_encoder is not None:
      frozen[repa.ROLE] = self.repa_encoder
    if self.repa_decoder is not None:
      frozen[repa.DECODER_ROLE] = self.repa_decoder
    return jax.device_put(frozen, parallel.fsdp_shardings(self.mesh, frozen))  # sharded like the state

  @functools.cached_property
  def _jitted_steps(self):
    base_rng = jax.random.PRNGKey(self.config.seed)
    train_step = get_train_step(self.objective, self.optimizer, ema_rate=self.config.model.ema_rate,
                                rng=jax.random.fold_in(base_rng, 0), ema_gammas=self.ema_gammas)
    replicated, state, frozen = parallel.replicated(self.mesh), self.state_shardings, self._frozen_shardings
    if step_loop(self.config, self.data_shape) == "scan":
      multi_step = jax.jit(get_multi_step(train_step), donate_argnums=0,
                           in_shardings=(state, parallel.data_sharded(self.mesh, 1), frozen),
                           out_shardings=(state, replicated))
    else:
      single_step = jax.jit(train_step, donate_argnums=0,
                            in_shardings=(state, parallel.data_sharded(self.mesh, 0), frozen),
                            out_shardings=(state, replicated))
      multi_step = functools.partial(_dispatch_steps, single_step)
    eval_step = jax.jit(get_eval_step(self.objective, rng=jax.random.fold_in(base_rng, 1)),
                        in_shardings=(state, parallel.data_sharded(self.mesh, 0), frozen),
                        out_shardings=replicated)
    return multi_step, eval_step

  @functools.cached_property
  def state_shardings(self):
    """The sharding of each array of the train state on the run's mesh: `parallel.fsdp_shardings` of its
    shapes (`training.fsdp` = 1: all replicated)."""
    return parallel.fsdp_shardings(self.mesh, jax.eval_shape(lambda: self.initial_state(jax.random.PRNGKey(0))))

  @functools.cached_property
  def _frozen_shardings(self):
    return jax.tree_util.tree_map(lambda x: x.sharding, self._frozen)

  def multi_step(self, state, batches):
    """`training.n_jitted_steps` train steps on `batches` (a leading axis of steps): `(state, losses)`."""
    return self._jitted_steps[0](state, batches, self._frozen)

  def eval_step(self, state, batch):
    """The held-out loss of one batch with the EMA parameters."""
    return self._jitted_steps[1](state, batch, self._frozen)

  def initial_state(self, rng, params=None):
    """The train state from `rng`'s random weights, or from `params` of the same structure."""
    variables = trained_model.init_variables(rng, self.sde, self.model, self.data_shape)
    if params is not None:
      variables["params"] = params
    power = self.config.model.ema_type == "power"
    return init_train_state(variables, self.optimizer,
                            sigma_rels=tuple(self.config.model.ema_sigma_rels) if power else None,
                            objective_state=self.objective.init_state(variables["params"]))

  def init_state(self):
    """The state the run starts from: random weights, or those of `training.init_workdir`."""
    rng = jax.random.fold_in(jax.random.PRNGKey(self.config.seed), 2)
    init = jax.jit(self.initial_state, out_shardings=self.state_shardings)  # made sharded, never whole
    return init(rng, self.initial_params())

  def initial_params(self):
    """The EMA parameters of the newest checkpoint of `training.init_workdir` (ECT's consistency tuning starts
    from a trained diffusion model), or of the run the objective starts from (`Objective.start_from`: consistency
    distillation's teacher), checked against this config's network; None without one.

    Raises:
      ValueError: the workdir has no config.json or checkpoint, or its network differs from this one (a teacher
        chosen by default is then passed over, in one log line).
    """
    workdir, key = self.objective.start_from() or (self.config.training.init_workdir, "training.init_workdir")
    if not workdir:
      return None
    _, variables, step = trained_model.load_model(workdir)
    params = variables["params"]
    expected = jax.eval_shape(lambda: self.initial_state(jax.random.PRNGKey(0)).params)
    shapes = lambda tree: jax.tree_util.tree_map(lambda a: tuple(a.shape), tree)  # noqa: E731
    if jax.tree_util.tree_structure(params) != jax.tree_util.tree_structure(expected) or \
        shapes(params) != shapes(expected):
      message = (f"{key}={workdir!r}: its network's parameters differ from this config's "
                 "(model.name, nf, ch_mult, num_res_blocks, ... and a learned schedule must match)")
      if key != "training.init_workdir":
        logging.info("Starting from random weights: %s", message)
        return None
      raise ValueError(message)
    logging.info("Starting from the EMA parameters of step %d of %s (%s)", step, workdir, key)
    return params

  def scale_batch(self, batch):
    """A batch of the training data in model space (the data scaled, class labels as they are)."""
    if self.class_conditional:
      data, labels = batch
      return self.scaler(data), labels
    return self.scaler(batch)

  def train_batches(self, step):
    local = self.scale_batch(self._read_train_batches(step))
    return parallel.shard_batch(self.mesh, local, batch_axis=1)

  def eval_loss(self, state, num_batches=1):
    """Mean loss (EMA parameters) over the first `num_batches` held-out batches; 0 means all of them."""
    values = []
    for i, batch in enumerate(self.train_dataset.eval_batches()):
      if num_batches and i >= num_batches:
        break
      values.append(self.eval_step(state, parallel.shard_batch(self.mesh, self.scale_batch(batch))))
    return float(np.mean(jax.device_get(values)))


def validate_config(config):
  """Raises one `ValueError` naming the first bad key and its valid values: the config's own checks and those
  of every component of a run, built (once) without data, companions or compiling; returns the prepared config."""
  return RunSetup(config, companions=()).config


# What defines a trained model, compared between a --config and the run's config.json by the modes that read a
# trained run; the rest (sampling, evaluation, the EMA's and the optimizer's settings) stays the user's to choose.
TRAINING_ONLY_MODEL_KEYS = ("ema_rate", "ema_type", "ema_sigma_rels", "dropout", "dtype", "remat")
MODEL_DATA_KEYS = ("image_size", "num_channels", "dim", "centered", "latent_channels", "latent_factor", "latent_norm",
                   "latent_mean", "latent_std", "latent_target_std")
# Latent data's keys that stay the user's when reading a trained run (the autoencoder may have moved).
LATENT_RUN_KEYS = ("autoencoder", "latent_cache", "autoencoder_batch_size")
MODEL_TRAINING_KEYS = ("sde", "continuous", "loss_weighting", "repa_weight", "repa_hidden", "repa_encoder")


def _model_defining(config):
  """`{dotted key: value}` of what defines the model of a prepared config (its path and the path's settings, the
  parameterization, the network, the data's shape and scaling, the classes)."""
  values = {f"training.{key}": config.training[key] for key in MODEL_TRAINING_KEYS}
  values.update({f"data.{key}": config.data.get(key) for key in MODEL_DATA_KEYS})
  for key, value in config.model.items():
    if key not in TRAINING_ONLY_MODEL_KEYS and not (key == "num_scales" and config.training.continuous):
      values[f"model.{key}"] = value.to_dict() if hasattr(value, "to_dict") else value
  return values


def trained_run_config(workdir, config=None):
  """The prepared config of the trained run in `workdir` (its config.json), with the `sampling` and `eval`
  sections (and, for continuous-time runs, `model.num_scales`: a sampler's step count) of `config` when given:
  what `--mode=sample|eval|edit` and their Python entry points run.

  Raises:
    ValueError: no readable config.json, or `config` disagrees with it on what defines the model (one line
      naming the keys and both values).
  """
  run = prepare_config(trained_model.run_config(workdir))
  if config is None:
    return run
  config = prepare_config(config)
  own, theirs = _model_defining(config), _model_defining(run)
  differing = [key for key in theirs if own.get(key) != theirs[key]]
  if differing:
    shown = ", ".join(f"{key}={own.get(key)!r} (the run: {theirs[key]!r})" for key in differing[:3])
    raise ValueError(f"--config disagrees with {workdir}/config.json on what defines the trained model: {shown}"
                     f"{' and more' if len(differing) > 3 else ''}; pass the config the run was trained with "
                     "(its overrides included) or leave --config out")
  merged = base_config.complete(ml_collections.ConfigDict(run.to_dict()))
  merged.sampling = ml_collections.ConfigDict(config.sampling.to_dict())
  merged.eval = ml_collections.ConfigDict(config.eval.to_dict())
  if "classifier" in config:  # trained beside it, by its own mode
    merged.classifier = ml_collections.ConfigDict(config.classifier.to_dict())
  merged.seed = config.seed
  if run.data.autoencoder and config.data.autoencoder:  # the same geometry (compared above), maybe moved
    for key in LATENT_RUN_KEYS:
      merged.data[key] = config.data[key]
  if run.training.continuous:
    merged.model.num_scales = config.model.num_scales
  return prepare_config(merged)
