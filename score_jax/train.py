"""`train_and_evaluate(config, workdir)`: the training loop behind `main.py --mode=train`."""

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from score_jax import checkpoint, datasets, losses, parallel, plotting, sde as sde_lib
from score_jax.config_utils import validate_config
from score_jax.metric_writer import MetricWriter
from score_jax.models import get_data_shape, get_model
from score_jax.utils import choice_error
from score_jax.train_state import get_eval_step, get_multi_step, get_train_step, init_train_state


class NonFiniteLossError(RuntimeError):
  """Training produced a NaN or infinite loss."""


def _snapshot_samples(run, workdir, state, step, reference=None):
  output = run.sampler(run.config.sampling.batch_size)(jax.random.fold_in(jax.random.PRNGKey(run.config.seed + 2), step), state.variables())
  output = parallel.gather(output)  # every process takes part; process 0 writes
  if jax.process_index() != 0:
    return None
  directory = os.path.join(workdir, "samples")
  os.makedirs(directory, exist_ok=True)
  path = plotting.save_samples(os.path.join(directory, f"iter_{step}"), output.samples,
                               reference=reference, title=f"step {step}, {int(output.nfe)} score evaluations")
  logging.info("Wrote %s", path)
  return path


STEP_LOOPS = ("auto", "scan", "dispatch")


def _step_loop(config):
  """How the `n_jitted_steps` of one block run: one `lax.scan` program, or one dispatch per step.

  "auto" scans, except for image data on CPU: XLA:CPU runs convolutions inside a
  while loop about 30x slower than the same step jitted alone (0.31 s vs 9.4 s
  per step for the digits DDPM++ on 2 cores), so there each step is dispatched
  on its own (asynchronously: the host does not wait between steps).
  """
  choice = config.training.get("step_loop", "auto")
  if choice not in STEP_LOOPS:
    raise choice_error("training.step_loop", choice, STEP_LOOPS)
  if choice != "auto":
    return choice
  images = len(get_data_shape(config)) == 3
  return "dispatch" if images and jax.default_backend() == "cpu" else "scan"


def _dispatch_steps(single_step, state, batches):
  block_losses = []
  for i in range(batches.shape[0]):
    state, loss = single_step(state, batches[i])
    block_losses.append(loss)
  return state, jnp.stack(block_losses)


class _Setup:
  """Everything static about a run, built once from the config."""

  def __init__(self, config):
    validate_config(config)
    self.config = config
    self.mesh = parallel.make_mesh()
    self.sde, self.sampling_eps = sde_lib.get_sde(config)
    self.model = get_model(config)
    self.optimizer = losses.get_optimizer(config)
    self.dataset = datasets.get_dataset(config)
    self.scaler = datasets.get_data_scaler(config)
    loss_config = losses.LossConfig.from_config(config)
    base_rng = jax.random.PRNGKey(config.seed)
    train_step = get_train_step(self.sde, self.model, self.optimizer, loss_config,
                                ema_rate=config.model.ema_rate, rng=jax.random.fold_in(base_rng, 0))
    replicated = parallel.replicated(self.mesh)
    self.step_loop = _step_loop(config)
    if self.step_loop == "scan":
      self.multi_step = jax.jit(get_multi_step(train_step), donate_argnums=0,
                                in_shardings=(replicated, parallel.data_sharded(self.mesh, 1)),
                                out_shardings=(replicated, replicated))
    else:
      single_step = jax.jit(train_step, donate_argnums=0,
                            in_shardings=(replicated, parallel.data_sharded(self.mesh, 0)),
                            out_shardings=(replicated, replicated))
      self.multi_step = functools.partial(_dispatch_steps, single_step)
    self.eval_step = jax.jit(get_eval_step(self.sde, self.model, loss_config, rng=jax.random.fold_in(base_rng, 1)),
                             in_shardings=(replicated, parallel.data_sharded(self.mesh, 0)),
                             out_shardings=replicated)

  @functools.cache
  def sampler(self, batch_size):
    """The configured sampler for `batch_size` samples: `sample_fn(rng, variables) -> SampleOutput`.

    The batch is split over every device of every process (the samples come back as a global
    array: `parallel.gather` fetches them); sample i is the same whatever the device count.
    """
    from score_jax import sampling  # imported lazily: only snapshot sampling and eval need it

    shape = (batch_size,) + get_data_shape(self.config)
    return sampling.get_sampling_fn(self.config, self.sde, self.model, shape,
                                    datasets.get_data_inverse_scaler(self.config), self.sampling_eps, mesh=self.mesh)

  def init_state(self):
    init = jax.jit(lambda rng: init_train_state(rng, self.config, self.optimizer),
                   out_shardings=parallel.replicated(self.mesh))
    return init(jax.random.fold_in(jax.random.PRNGKey(self.config.seed), 2))

  def train_batches(self, step):
    local = self.scaler(self.dataset.train_batches(step, self.config.training.n_jitted_steps))
    return parallel.shard_batch(self.mesh, local, batch_axis=1)

  def eval_loss(self, state, num_batches=1):
    """Mean loss (EMA parameters) over the first `num_batches` held-out batches; 0 means all of them."""
    values = []
    for i, batch in enumerate(self.dataset.eval_batches()):
      if num_batches and i >= num_batches:
        break
      values.append(self.eval_step(state, parallel.shard_batch(self.mesh, self.scaler(batch))))
    return float(np.mean(jax.device_get(values)))


def _check_finite(losses_so_far, first_step):
  values = np.concatenate([np.asarray(x) for x in jax.device_get(losses_so_far)])
  bad = np.flatnonzero(~np.isfinite(values))
  if bad.size:
    raise NonFiniteLossError(
        f"loss became {values[bad[0]]} at step {first_step + int(bad[0])}; stopping without saving "
        "this state. Lower optim.lr, check the data, or resume from the last checkpoint.")
  return values


def _save_config(config, workdir):
  """Writes the run's config as `<workdir>/config.json` (process 0, atomically), for people and tools that load
  the run later (the notebooks, `--mode=eval`, `--mode=inpaint`); the file is read as data, never executed."""
  if jax.process_index() != 0:
    return
  path = os.path.join(workdir, "config.json")
  with open(path + ".tmp", "w") as f:
    f.write(config.to_json_best_effort(indent=1, sort_keys=True))
  os.replace(path + ".tmp", path)


def train_and_evaluate(config, workdir):
  """Trains `config` in `workdir`, resuming from its newest readable checkpoint; returns the final state."""
  run = _Setup(config)
  training = config.training
  snapshots = checkpoint.get_manager(os.path.join(workdir, checkpoint.SNAPSHOT_DIR), training.keep_checkpoints)
  preemption = checkpoint.get_manager(os.path.join(workdir, checkpoint.PREEMPTION_DIR), 2)
  state, restored_step = checkpoint.restore_latest([preemption, snapshots], run.init_state())
  step = int(state.step)
  _save_config(config, workdir)
  writer = MetricWriter(workdir)
  if restored_step is None:
    logging.info("Starting training of %s in %s", config.model.name, workdir)
  else:
    logging.info("Resuming from the checkpoint of step %d", step)
    writer.truncate_after(step)
  reference = None
  if get_data_shape(config) == (2,):
    reference = next(iter(run.dataset.eval_batches()))

  pending, pending_start, log_window = [], step, []
  while step < training.n_iters:
    state, block_losses = run.multi_step(state, run.train_batches(step))
    pending.append(block_losses)
    step += training.n_jitted_steps
    done = step >= training.n_iters
    is_snapshot = step % training.snapshot_freq == 0 or done
    is_preemption = step % training.snapshot_freq_for_preemption == 0
    if step % training.log_freq == 0 or is_snapshot or is_preemption:
      log_window.append(_check_finite(pending, pending_start))
      pending, pending_start = [], step
      if step % training.log_freq == 0 or done:
        writer.write(step, loss=np.concatenate(log_window).mean())
        log_window = []
    if step % training.eval_freq == 0:
      writer.write(step, eval_loss=run.eval_loss(state))
    if is_preemption and not is_snapshot:
      checkpoint.save(preemption, step, state)
    if is_snapshot:
      checkpoint.save(snapshots, step, state)
      if training.snapshot_sampling:
        _snapshot_samples(run, workdir, state, step, reference)
  writer.close()
  logging.info("Training finished at step %d.", step)
  return state
