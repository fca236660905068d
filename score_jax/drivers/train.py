"""`train_and_evaluate(config, workdir)`: the training loop behind `main.py --mode=train`."""

import itertools
import os

import jax
import jax.numpy as jnp
from absl import logging

from score_jax import autoencoder, checkpoint, parallel, plotting, posthoc_ema
from score_jax.drivers import loop
from score_jax.drivers.loop import NonFiniteLossError  # noqa: F401 -- raised by the loop, named here too
from score_jax.objectives.autoencoder import latent_std
from score_jax.run_setup import RunSetup

LATENT_SCALE_BATCHES = 8  # an autoencoder's latent scale: at most this many eval.batch_size batches of training data


def _snapshot_samples(run, workdir, state, step, reference=None):
  variables = state.variables()
  if parallel.fsdp_size(run.mesh) > 1:  # the sampler is data parallel: the EMA parameters gathered on each device
    variables = parallel.gather_to_replicated(run.mesh, variables)
  output = run.sampler(run.config.sampling.batch_size)(jax.random.fold_in(jax.random.PRNGKey(run.config.seed + 2), step), variables)
  output = parallel.gather(output)  # every process takes part; process 0 writes
  if jax.process_index() != 0:
    return None
  directory = os.path.join(workdir, "samples")
  os.makedirs(directory, exist_ok=True)
  path = plotting.save_samples(os.path.join(directory, f"iter_{step}"), output.samples,
                               reference=reference, title=f"step {step}, {int(output.nfe)} score evaluations")
  logging.info("Wrote %s", path)
  return path


def _autoencoder_snapshot(run, workdir, state, step):
  """An autoencoder's snapshot (`training.objective = "autoencoder"`, which draws no samples): its scaling factor,
  1 / std of the posterior means of the first training examples (`eval_batches(split="train")`, at most
  `LATENT_SCALE_BATCHES` batches: the same examples at every snapshot), recorded for `load_autoencoder(workdir)`;
  with `training.snapshot_sampling`, held-out images (top half of the grid) over their reconstructions."""
  trained = autoencoder.Autoencoder(run.model.network, parallel.gather(state.variables()), 1.0)
  batches = itertools.islice(run.dataset.eval_batches(split="train"), LATENT_SCALE_BATCHES)
  scaling_factor = 1.0 / latent_std(trained.encode, [run.scaler(batch) for batch in batches])
  if jax.process_index() != 0:
    return
  autoencoder.record_latent_scale(workdir, step, scaling_factor)
  logging.info("Latent scale of step %d: scaling_factor %.4f", step, scaling_factor)
  if run.config.training.snapshot_sampling:
    x = run.scaler(next(iter(run.dataset.eval_batches())))[:run.config.sampling.batch_size // 2]
    images = run.data.inverse_scaler(jnp.concatenate([x, trained.decode(trained.encode(x)[0])]))
    directory = os.path.join(workdir, "samples")
    os.makedirs(directory, exist_ok=True)
    logging.info("Wrote %s", plotting.save_samples(os.path.join(directory, f"iter_{step}_reconstructions"), images))


def train_and_evaluate(config, workdir):
  """Trains `config` in `workdir`, resuming from its newest readable checkpoint; returns the final state."""
  run = RunSetup(config)
  config, training = run.config, run.config.training
  checkpoint.save_run_config(config, workdir)  # what loading the trained model reads
  power_ema = config.model.ema_type == "power"
  ema_snapshots = posthoc_ema.snapshot_manager(workdir) if power_ema else None
  reference = next(iter(run.dataset.eval_batches())) if run.data_shape == (2,) else None

  def step_block(state, step):
    state, losses = run.multi_step(state, run.train_batches(step))
    return state, {"loss": losses}

  def after_block(state, step, done):
    if power_ema and (step % training.ema_snapshot_freq == 0 or done):
      posthoc_ema.save_snapshot(ema_snapshots, step, state, config.model.ema_sigma_rels)

  def on_snapshot(state, step):
    if not run.objective.generative:
      _autoencoder_snapshot(run, workdir, state, step)
    elif training.snapshot_sampling:
      _snapshot_samples(run, workdir, state, step, reference)

  managers = [checkpoint.get_manager(os.path.join(workdir, directory), keep, training.async_checkpoint)
              for directory, keep in ((checkpoint.SNAPSHOT_DIR, training.keep_checkpoints),
                                      (checkpoint.PREEMPTION_DIR, 2))]
  task = loop.TrainingTask(
      name=f"score model ({config.model.name})",
      cadence=loop.Cadence(n_iters=training.n_iters, block=training.n_jitted_steps, log=training.log_freq,
                           eval=training.eval_freq, snapshot=training.snapshot_freq,
                           preemption=training.snapshot_freq_for_preemption),
      init_state=run.init_state, step_block=step_block,
      snapshots=managers[0], preemption=managers[1],
      evaluate=lambda state: {"eval_loss": run.eval_loss(state)}, after_block=after_block, on_snapshot=on_snapshot)
  try:
    return loop.run_training(task, workdir)
  finally:  # asynchronous saves (training.async_checkpoint) are on disk before the run returns or raises
    for manager in managers:
      checkpoint.wait(manager)
