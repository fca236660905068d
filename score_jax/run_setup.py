"""`RunSetup`: everything static about a training run, built once from its config.

Training (`drivers.train.train_and_evaluate`), evaluation, the benchmarks and the tests share it: the SDE,
the model, the optimizer, the objective, the sampler, the data, and the jitted train / eval steps over
the device mesh. The config is read here, once: `build_components` turns it into the objects that run
it, each checking its own keys as it is built, after the checks that span keys (`config_utils`).
"""

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from score_jax import (base_config, datasets, ema, objectives, optim, parallel, sampling, sde as sde_lib,
                       trained_model)
from score_jax.config_utils import check_config
from score_jax.models import get_data_shape, get_model
from score_jax.train_state import init_train_state
from score_jax.train_steps import get_eval_step, get_multi_step, get_train_step
from score_jax.utils import choice_error


STEP_LOOPS = ("auto", "scan", "dispatch")


def step_loop(config):
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
  images = len(get_data_shape(config)) == 3
  return "dispatch" if images and jax.default_backend() == "cpu" else "scan"


def _dispatch_steps(single_step, state, batches):
  block_losses = []
  for i in range(jax.tree_util.tree_leaves(batches)[0].shape[0]):
    state, loss = single_step(state, jax.tree_util.tree_map(lambda x: x[i], batches))
    block_losses.append(loss)
  return state, jnp.stack(block_losses)


@dataclasses.dataclass(frozen=True)
class RunComponents:
  """The objects a run's config describes, each built once (no data loaded, nothing compiled)."""

  config: Any             # the config, completed with the base's defaults (`base_config.complete`)
  mesh: Any
  sde: Any
  sampling_eps: float
  model: Any
  optimizer: Any
  loss_config: objectives.LossConfig
  objective: objectives.Objective
  ema_gammas: Any         # the power EMA's exponents, or None for the fixed EMA
  sampler: Any            # `sample_fn(rng, variables, class_labels=None)` for `sampling.batch_size` samples


def build_components(config):
  """`RunComponents` of `config`; raises one `ValueError` naming the first bad key (before any compile)."""
  config = base_config.complete(config)
  check_config(config)
  mesh = parallel.make_mesh()
  sde, sampling_eps = sde_lib.get_sde(config)
  model = get_model(config)
  optimizer = optim.get_optimizer(config)
  loss_config = objectives.LossConfig.from_config(config)
  objective = objectives.get_objective(sde, model, loss_config)
  ema.check_ema_config(config)
  shape = (config.sampling.batch_size,) + get_data_shape(config)
  sampler = sampling.get_sampling_fn(config, sde, model, shape, datasets.get_data_inverse_scaler(config),
                                     sampling_eps, mesh=mesh)
  return RunComponents(config, mesh, sde, sampling_eps, model, optimizer, loss_config, objective,
                       ema.power_gammas(config), sampler)


def validate_config(config):
  """Raises one `ValueError` naming the first bad key and its valid values: the config's own checks and
  those of every component of a run, built (once) without data or compiling."""
  build_components(config)


class RunSetup:
  """Everything static about a run, built once from the config."""

  def __init__(self, config):
    components = build_components(config)
    # A distillation's teacher is read from its workdir here, not when a config is only validated.
    components = dataclasses.replace(components, objective=trained_model.attach_teacher(components.objective))
    self.components = components
    self.config = config = components.config
    self.mesh, self.sde, self.sampling_eps = components.mesh, components.sde, components.sampling_eps
    self.model, self.optimizer = components.model, components.optimizer
    self.dataset = datasets.get_dataset(config)  # the data alone (evaluation's statistics and likelihoods)
    self.class_conditional = config.model.num_classes > 0
    # What the loss trains on: `(data, labels)` batches for a class-conditional model.
    self.train_dataset = datasets.get_dataset(config, labels=True) if self.class_conditional else self.dataset
    self.scaler = datasets.get_data_scaler(config)
    read = functools.partial(self.train_dataset.train_batches, n=config.training.n_jitted_steps)
    if isinstance(self.train_dataset, datasets.ImageDataset):  # decoded on the host: read the next block ahead
      read = datasets.ReadAhead(read, config.training.n_jitted_steps)
    self._read_train_batches = read
    base_rng = jax.random.PRNGKey(config.seed)
    train_step = get_train_step(self.sde, self.model, self.optimizer, components.loss_config,
                                ema_rate=config.model.ema_rate, rng=jax.random.fold_in(base_rng, 0),
                                ema_gammas=components.ema_gammas, objective=components.objective)
    replicated = parallel.replicated(self.mesh)
    self.step_loop = step_loop(config)
    if self.step_loop == "scan":
      self.multi_step = jax.jit(get_multi_step(train_step), donate_argnums=0,
                                in_shardings=(replicated, parallel.data_sharded(self.mesh, 1)),
                                out_shardings=(replicated, replicated))
    else:
      single_step = jax.jit(train_step, donate_argnums=0,
                            in_shardings=(replicated, parallel.data_sharded(self.mesh, 0)),
                            out_shardings=(replicated, replicated))
      self.multi_step = functools.partial(_dispatch_steps, single_step)
    self.eval_step = jax.jit(get_eval_step(self.sde, self.model, components.loss_config,
                                           rng=jax.random.fold_in(base_rng, 1), objective=components.objective),
                             in_shardings=(replicated, parallel.data_sharded(self.mesh, 0)),
                             out_shardings=replicated)

  @functools.cache
  def sampler(self, batch_size):
    """The configured sampler for `batch_size` samples: `sample_fn(rng, variables) -> SampleOutput`.

    The batch is split over every device of every process (the samples come back as a global
    array: `parallel.gather` fetches them); sample i is the same whatever the device count.
    """
    if batch_size == self.config.sampling.batch_size:
      return self.components.sampler
    shape = (batch_size,) + get_data_shape(self.config)
    return sampling.get_sampling_fn(self.config, self.sde, self.model, shape,
                                    datasets.get_data_inverse_scaler(self.config), self.sampling_eps, mesh=self.mesh)

  def init_state(self):
    """The state the run starts from: random weights, or those of `training.init_workdir`."""
    rng = jax.random.fold_in(jax.random.PRNGKey(self.config.seed), 2)
    initial = self.initial_params()
    init = jax.jit(lambda rng, params: init_train_state(rng, self.config, self.optimizer, components=self.components,
                                                        initial_params=params),
                   out_shardings=parallel.replicated(self.mesh))
    return init(rng, initial)

  def initial_params(self):
    """The EMA parameters of the newest checkpoint of `training.init_workdir` (ECT's consistency tuning starts
    from a trained diffusion model), checked against this config's network; None without one.

    Raises:
      ValueError: the workdir has no config.json or checkpoint, or its network differs from this one.
    """
    workdir = self.config.training.init_workdir
    if not workdir:
      return None
    _, variables, step = trained_model.load_model(trained_model.run_config(workdir), workdir)
    params = variables["params"]
    expected = jax.eval_shape(lambda: init_train_state(jax.random.PRNGKey(0), self.config, self.optimizer,
                                                       components=self.components).params)
    shapes = lambda tree: jax.tree_util.tree_map(lambda a: tuple(a.shape), tree)  # noqa: E731
    if jax.tree_util.tree_structure(params) != jax.tree_util.tree_structure(expected) or \
        shapes(params) != shapes(expected):
      raise ValueError(f"training.init_workdir={workdir!r}: its network's parameters differ from this config's "
                       "(model.name, nf, ch_mult, num_res_blocks, ... and a learned schedule must match)")
    logging.info("Starting from the EMA parameters of step %d of %s (training.init_workdir)", step, workdir)
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
