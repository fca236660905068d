"""Orbax checkpoints: atomic saves, keep-N, and restore that falls back past a corrupt step.

Two directories live in a workdir: `checkpoints/` (snapshots every
`snapshot_freq`, the ones evaluation reads) and `checkpoints-meta/` (frequent
preemption checkpoints, keep 2). Orbax writes each step to a temporary
directory and renames it when complete, so a killed save leaves no half step.
Arrays are saved sharded as they lie (each process writes its own shards) and restored into the
shardings of the target, so a checkpoint written on one mesh restores onto another (another device
count, another `training.fsdp`). An asynchronous manager (`get_manager(..., asynchronous=True)`,
`training.async_checkpoint`) copies the arrays to host memory when `save` is called and writes them in
a background thread; the next save, `wait` and the end of training wait for it.
A state that names its parts (`checkpoint_items()`, e.g. the train state's model, optimizer and
objective) is stored as one orbax item per part, so that a part can be read alone (`restore_item`: a
trained model is its `model` item); anything else is stored as one item, `default` (the layout of every
checkpoint before the parts, which still restores). Loading a trained model (`load_model`) is in
`score_jax.trained_model`.
"""

import os

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging

from score_jax import parallel

SNAPSHOT_DIR = "checkpoints"
PREEMPTION_DIR = "checkpoints-meta"


def get_manager(directory, max_to_keep=None, asynchronous=False):
  """An orbax CheckpointManager over `directory` (created on first save); `asynchronous`: `save` returns once
  the arrays are on the host and the files are written in the background (the step is committed, by a
  rename, when all are written)."""
  options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep or None, create=True,
                                         enable_async_checkpointing=asynchronous)
  return ocp.CheckpointManager(os.path.abspath(directory), options=options)


def is_asynchronous(manager):
  return manager._options.enable_async_checkpointing  # noqa: SLF001 -- orbax keeps its options private


def wait(manager):
  """Waits until `manager`'s pending save (if any) is on disk and committed."""
  manager.wait_until_finished()


class LayoutError(ValueError):
  """A checkpoint that is readable but holds other items than the state restored into (never skipped)."""


CONFIG_FILE = "config.json"  # a run's config, beside its checkpoints: what loading its model reads

LEGACY_ITEM = "default"  # the one item of a state that names no parts (and of every checkpoint before the parts)


def _items(state):
  return state.checkpoint_items() if hasattr(state, "checkpoint_items") else {LEGACY_ITEM: state}


def save(manager, step, state):
  """Saves `state` at `step` (a no-op if that step exists) and, unless `manager` is asynchronous, waits until it
  is on disk (an asynchronous save returns once the arrays are copied to the host: `state` may then change)."""
  if step in manager.all_steps():
    return
  items = _items(state)
  if list(items) == [LEGACY_ITEM]:  # orbax's one unnamed item
    manager.save(step, args=ocp.args.StandardSave(items[LEGACY_ITEM]))
  else:
    manager.save(step, args=ocp.args.Composite(**{name: ocp.args.StandardSave(item) for name, item in items.items()}))
  if is_asynchronous(manager):
    logging.info("Saving checkpoint %s/%d in the background", manager.directory, step)
    return
  manager.wait_until_finished()
  logging.info("Saved checkpoint %s/%d", manager.directory, step)


def latest_step(manager):
  return manager.latest_step()


def item_names(manager, step):
  """The orbax items stored at `step` (e.g. `model`, `optimizer`; `default` for a one-item checkpoint)."""
  directory = os.path.join(str(manager.directory), str(step))
  return sorted(name for name in os.listdir(directory) if os.path.isdir(os.path.join(directory, name))
                and not name.startswith(("_", ".")))


def restore(manager, step, target):
  """Restores `step` into the structure, dtypes and shardings of `target`."""
  items = _items(target)
  stored = item_names(manager, step)
  if set(items) - set(stored):
    raise LayoutError(f"checkpoint {manager.directory}/{step} holds the items {stored}, not {sorted(items)}: it was "
                     "written by another kind of run or another version of score_jax (an older one can resume it)")
  restored = restore_item(manager, step, items)
  return target.from_checkpoint_items(restored) if hasattr(target, "checkpoint_items") else restored[LEGACY_ITEM]


def restore_item(manager, step, targets):
  """Restores only the items named in `targets` (`{item name: pytree of arrays or abstract arrays, or None
  for the stored structure as numpy}`) of `step`; returns `{item name: pytree}`."""
  args = {name: ocp.args.StandardRestore(None if target is None else jax.tree_util.tree_map(_abstract, target))
          for name, target in targets.items()}
  if list(args) == [LEGACY_ITEM]:  # orbax's one unnamed item
    return {LEGACY_ITEM: manager.restore(step, args=args[LEGACY_ITEM])}
  return dict(manager.restore(step, args=ocp.args.Composite(**args)))


def _abstract(x):
  if isinstance(x, jax.Array):
    return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding)
  return np.asarray(x) if np.isscalar(x) else x


def abstract_state(init_fn, mesh=None):
  """The shapes, dtypes and (replicated) shardings of `init_fn()`'s output, computed without running it."""
  sharding = parallel.replicated(mesh or parallel.make_mesh())
  return jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding),
                                jax.eval_shape(init_fn))


def restore_latest(managers, target, restore_fn=None):
  """Restores the newest readable step over `managers` (by `restore_fn(manager, step, target)`, default
  `restore`); returns `(state, step)` or `(target, None)`.

  A step that fails to restore (corrupt or half-copied files) is skipped with a warning and the next older
  one is tried; one of another layout (`LayoutError`) stops the search.
  """
  restore_fn = restore_fn or restore
  candidates = sorted(((step, manager) for manager in managers for step in manager.all_steps()),
                      key=lambda item: item[0], reverse=True)
  for step, manager in candidates:
    try:
      return restore_fn(manager, step, target), step
    except LayoutError:
      raise
    except Exception as error:  # noqa: BLE001 -- any unreadable checkpoint is skipped
      logging.warning("Checkpoint step %d in %s is unreadable (%s: %s); trying an older one.",
                      step, manager.directory, type(error).__name__, str(error).splitlines()[0][:200])
  return target, None


def save_run_config(config, workdir):
  """Writes `config` as `<workdir>/config.json` (process 0, atomically): what `trained_model.run_config` and
  `trained_model.load_model` read; the file is read as data, never executed."""
  if jax.process_index() != 0:
    return
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, CONFIG_FILE)
  with open(path + ".tmp", "w") as f:
    f.write(config.to_json_best_effort(indent=1, sort_keys=True))
  os.replace(path + ".tmp", path)

