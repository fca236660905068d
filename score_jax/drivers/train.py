"""`train_and_evaluate(config, workdir)`: the training loop behind `main.py --mode=train`."""

import datetime
import os
import time

import jax
import numpy as np
from absl import logging

from score_jax import checkpoint, ema, parallel, plotting
from score_jax.metric_writer import MetricWriter
from score_jax.models import get_data_shape
from score_jax.run_setup import RunSetup


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


class Progress:
  """The console's progress line: steps done, speed over the last interval, time left."""

  def __init__(self, step, total):
    self.total, self.last_step, self.last_time = total, step, time.perf_counter()

  def line(self, step):
    now = time.perf_counter()
    rate = (step - self.last_step) / max(now - self.last_time, 1e-9)
    self.last_step, self.last_time = step, now
    eta = datetime.timedelta(seconds=round((self.total - step) / rate)) if rate > 0 else "?"
    return f"{step}/{self.total} ({100 * step / self.total:.0f}%), {rate:.3g} steps/s, ETA {eta}"


def train_and_evaluate(config, workdir):
  """Trains `config` in `workdir`, resuming from its newest readable checkpoint; returns the final state."""
  run = RunSetup(config)
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
  power_ema = config.model.get("ema_type", "fixed") == "power"
  ema_snapshots = ema.snapshot_manager(workdir) if power_ema else None
  reference = None
  if get_data_shape(config) == (2,):
    reference = next(iter(run.dataset.eval_batches()))

  pending, pending_start, log_window = [], step, []
  progress = Progress(step, training.n_iters)
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
        writer.write(step, loss=np.concatenate(log_window).mean(), note=progress.line(step))
        log_window = []
    if step % training.eval_freq == 0:
      writer.write(step, eval_loss=run.eval_loss(state))
    if power_ema and (step % training.ema_snapshot_freq == 0 or done):
      ema.save_snapshot(ema_snapshots, step, state, config.model.ema_sigma_rels)
    if is_preemption and not is_snapshot:
      checkpoint.save(preemption, step, state)
    if is_snapshot:
      checkpoint.save(snapshots, step, state)
      if training.snapshot_sampling:
        _snapshot_samples(run, workdir, state, step, reference)
  writer.close()
  logging.info("Training finished at step %d.", step)
  return state
