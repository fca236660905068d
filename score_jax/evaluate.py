"""`evaluate(config, workdir)`: held-out loss and samples for each snapshot checkpoint.

Checkpoint k is the snapshot of step `k * training.snapshot_freq`, as in the
reference. Each finished checkpoint leaves `report_<k>.json` in the eval folder
and is skipped when evaluation is run again.
"""

import json
import os
import time

import jax
import numpy as np
from absl import logging

from score_jax import checkpoint, datasets, plotting
from score_jax.models import get_data_shape
from score_jax.train import _Setup


def _wait_for_step(manager, step, timeout):
  deadline = time.time() + timeout
  while True:
    manager.reload()
    if step in manager.all_steps():
      return True
    if time.time() >= deadline:
      return False
    logging.info("Waiting for the checkpoint of step %d ...", step)
    time.sleep(min(60.0, max(1.0, deadline - time.time())))


def _sample(config, run, state, rng):
  from score_jax import sampling

  batches = -(-config.eval.num_samples // config.eval.batch_size)
  shape = (config.eval.batch_size,) + get_data_shape(config)
  sample_fn = sampling.get_sampling_fn(config, run.sde, run.model, shape,
                                       datasets.get_data_inverse_scaler(config), run.sampling_eps)
  outputs = [sample_fn(jax.random.fold_in(rng, i), state.variables(ema=True)) for i in range(batches)]
  samples = np.concatenate([jax.device_get(o.samples) for o in outputs])[:config.eval.num_samples]
  return samples, int(sum(o.nfe for o in outputs))


def evaluate(config, workdir, eval_folder="eval"):
  """Evaluates checkpoints `eval.begin_ckpt .. eval.end_ckpt`; returns their reports."""
  run = _Setup(config)
  eval_dir = os.path.join(workdir, eval_folder)
  os.makedirs(eval_dir, exist_ok=True)
  manager = checkpoint.get_manager(os.path.join(workdir, checkpoint.SNAPSHOT_DIR))
  target = run.init_state()
  timeout = config.eval.get("checkpoint_timeout", 0)
  reports = {}
  for ckpt in range(config.eval.begin_ckpt, config.eval.end_ckpt + 1):
    report_path = os.path.join(eval_dir, f"report_{ckpt}.json")
    if os.path.exists(report_path):
      with open(report_path) as f:
        reports[ckpt] = json.load(f)
      logging.info("Checkpoint %d already evaluated: %s", ckpt, reports[ckpt])
      continue
    step = ckpt * config.training.snapshot_freq
    if not _wait_for_step(manager, step, timeout):
      logging.warning("No checkpoint for step %d (checkpoint %d) in %s; stopping.", step, ckpt, manager.directory)
      break
    state = checkpoint.restore(manager, step, target)
    report = {"ckpt": ckpt, "step": step}
    if config.eval.enable_loss:
      report["eval_loss"] = run.eval_loss(state, config.eval.num_eval_batches)
    if config.eval.enable_sampling:
      samples, nfe = _sample(config, run, state, jax.random.fold_in(jax.random.PRNGKey(config.seed + 1), ckpt))
      reference = next(iter(run.dataset.eval_batches())) if samples.ndim == 2 else None
      report["samples_png"] = plotting.save_samples(os.path.join(eval_dir, f"ckpt_{ckpt}_samples"), samples,
                                                    reference=reference, title=f"checkpoint {ckpt}")
      report["nfe_per_batch"] = nfe // max(1, -(-config.eval.num_samples // config.eval.batch_size))
    if jax.process_index() == 0:
      with open(report_path + ".tmp", "w") as f:
        json.dump(report, f, indent=1)
      os.replace(report_path + ".tmp", report_path)  # atomic: a report exists only when complete
    logging.info("Checkpoint %d: %s", ckpt, report)
    reports[ckpt] = report
  return reports
