"""A trained model from its workdir: the training state that its checkpoints restore into, and `load_model`.

It lives above the train state (it builds one); `score_jax.checkpoint.load_model` stays importable.
"""

import json
import os

import jax
import ml_collections

from score_jax import base_config, checkpoint, optim, train_state
from score_jax.models import get_model


def initial_train_state(config):
  """The state a run of `config` starts from (key 0): the structure, dtypes and optimizer state that its
  checkpoints and EMA snapshots are restored into."""
  return train_state.init_train_state(jax.random.PRNGKey(0), config, optim.get_optimizer(config))


def abstract_train_state(config):
  """`initial_train_state(config)` as shapes, dtypes and replicated shardings, computed without running it."""
  return checkpoint.abstract_state(lambda: initial_train_state(config))


def run_config(workdir):
  """The config a training run wrote as `<workdir>/config.json` (read as data, never executed), completed with
  the base configuration's defaults for keys it predates.

  Raises:
    ValueError: `workdir` has no readable config.json.
  """
  path = os.path.join(workdir, "config.json")
  try:
    with open(path) as f:
      values = json.load(f)
  except (OSError, ValueError) as error:
    raise ValueError(f"cannot read the run's config {path} ({error}); is {workdir!r} a training workdir?") from None
  return base_config.complete(ml_collections.ConfigDict(values))


def load_model(config, workdir, *, ema=True, step=None):
  """The model of a training workdir: `(model, variables, step)` of its newest readable checkpoint
  (snapshot or preemption), or of checkpoint `step`, with the EMA parameters by default (`ema=False`:
  the raw ones).

  A post-hoc EMA (`score_jax.posthoc_ema.write_reconstruction`) is loaded from its own directory likewise.

  Raises:
    ValueError: `workdir` holds no readable checkpoint of this config's model, or none of `step`.
  """
  config = base_config.complete(config)  # e.g. the config.json of a run older than some keys
  managers = [checkpoint.get_manager(os.path.join(workdir, directory))
              for directory in (checkpoint.PREEMPTION_DIR, checkpoint.SNAPSHOT_DIR)]
  if step is not None:
    holding = [m for m in managers if step in m.all_steps()]
    if not holding:
      steps = sorted({s for m in managers for s in m.all_steps()})
      raise ValueError(f"{workdir} has no checkpoint of step {step}; its steps: {', '.join(map(str, steps)) or 'none'}")
    state = checkpoint.restore(holding[0], step, abstract_train_state(config))
    return get_model(config), state.variables(ema=ema), step
  state, step = checkpoint.restore_latest(managers, abstract_train_state(config))
  if step is None:
    raise ValueError(f"no readable score-model checkpoint in {workdir}; train one with `python main.py "
                     "--mode=train` and the same --config and --workdir")
  return get_model(config), state.variables(ema=ema), step
