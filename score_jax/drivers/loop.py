"""The one training loop of every trained network (the score model, the noise-conditional classifier).

`run_training(task, workdir)` restores the newest readable checkpoint (an unreadable newest one falls
back to an older one), truncates the metric log after it, then runs `task.step_block` until
`task.n_iters`, and on its cadences: logs the mean of the step metrics with the progress line, evaluates,
saves preemption checkpoints and snapshot checkpoints (with the task's `on_snapshot`, e.g. samples), and
stops with `NonFiniteLossError` on a NaN or infinite loss without saving that state. What differs
between networks is the `TrainingTask`.
"""

import dataclasses
import datetime
import time
from typing import Any, Callable, Optional

import jax
import numpy as np
from absl import logging

from score_jax import checkpoint
from score_jax.metric_writer import MetricWriter


class NonFiniteLossError(FloatingPointError):
  """Training produced a NaN or infinite loss."""


@dataclasses.dataclass(frozen=True)
class Cadence:
  """Steps between the loop's events; each a multiple of `block` (the steps of one `step_block` call)."""

  n_iters: int
  block: int
  log: int
  eval: int
  snapshot: int
  preemption: Optional[int] = None  # None: snapshots only
  eval_at_end: bool = False         # also evaluate after the last step


@dataclasses.dataclass(frozen=True)
class TrainingTask:
  """What the loop trains.

  `step_block(state, step) -> (state, {name: (block,) array})`: the next `cadence.block` steps from `step`
  (its metrics include `loss`); `evaluate(state) -> {name: value}`; `after_block(state, step, done)`: work
  of the task at every block (e.g. EMA snapshots); `on_snapshot(state, step)`: after a snapshot is saved.
  """

  name: str                         # for the log: "score model", "classifier"
  cadence: Cadence
  init_state: Callable[[], Any]
  step_block: Callable
  snapshots: Any                    # the orbax manager of the kept checkpoints
  preemption: Any = None            # the manager of the preemption checkpoints (None: none)
  metrics_dir: str = ""             # where metrics.jsonl and the TensorBoard events go
  evaluate: Callable = lambda state: {}
  after_block: Callable = lambda state, step, done: None
  on_snapshot: Callable = lambda state, step: None
  describe: Callable = lambda state: ""  # a line about a fresh model (its size)


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


def _finite_metrics(pending, first_step, name):
  """The pending blocks' metrics as numpy `{name: (steps,)}`; raises at the first non-finite loss."""
  pending = jax.device_get(pending)
  metrics = {key: np.concatenate([np.asarray(block[key]).reshape(-1) for block in pending]) for key in pending[0]}
  bad = np.flatnonzero(~np.isfinite(metrics["loss"]))
  if bad.size:
    raise NonFiniteLossError(
        f"{name} loss became {metrics['loss'][bad[0]]} at step {first_step + int(bad[0])}; stopping without "
        "saving this state. Lower the learning rate, check the data, or resume from the last checkpoint.")
  return metrics


def run_training(task, workdir):
  """Trains `task` in `workdir` from its newest readable checkpoint; returns the final state."""
  cadence = task.cadence
  managers = [m for m in (task.preemption, task.snapshots) if m is not None]
  state, restored_step = checkpoint.restore_latest(managers, task.init_state())
  step = int(state.step)
  writer = MetricWriter(task.metrics_dir or workdir)
  if restored_step is None:
    logging.info("Training the %s in %s%s", task.name, workdir, task.describe(state))
  else:
    logging.info("Resuming from the checkpoint of step %d (%s)", step, task.name)
    writer.truncate_after(step)

  pending, pending_start, window = [], step, []
  progress = Progress(step, cadence.n_iters)
  while step < cadence.n_iters:
    state, block_metrics = task.step_block(state, step)
    pending.append(block_metrics)
    step += cadence.block
    done = step >= cadence.n_iters
    is_log = step % cadence.log == 0 or done
    is_snapshot = step % cadence.snapshot == 0 or done
    is_preemption = cadence.preemption is not None and step % cadence.preemption == 0
    if is_log or is_snapshot or is_preemption:  # nothing non-finite is ever saved
      window.append(_finite_metrics(pending, pending_start, task.name))
      pending, pending_start = [], step
      if is_log:
        means = {key: float(np.concatenate([w[key] for w in window]).mean()) for key in window[0]}
        writer.write(step, note=progress.line(step), **means)
        window = []
    if step % cadence.eval == 0 or (done and cadence.eval_at_end):
      writer.write(step, **task.evaluate(state))
    task.after_block(state, step, done)
    if is_preemption and not is_snapshot:
      checkpoint.save(task.preemption, step, state)
    if is_snapshot:
      checkpoint.save(task.snapshots, step, state)
      task.on_snapshot(state, step)
  writer.close()
  logging.info("Training of the %s finished at step %d.", task.name, step)
  return state
