"""Data pipelines: batches as functions of the step, so a resumed run sees the same data.

A `Dataset` gives `train_batches(step, n)` -> `(n, global_batch, ...)` for the
`n` optimisation steps starting at `step`, and `eval_batches()` -> an iterable
of held-out batches. Arrays are the process-local part of the global batch.
"""

import dataclasses
import functools
from typing import Callable

import jax
import jax.numpy as jnp

from score_jax.toy_data import IMAGE_TOY_DATASETS, TOY_DATASETS
from score_jax.utils import choice_error


def get_data_scaler(config):
  """Data in [0, 1] -> model space: [-1, 1] when `data.centered` (image data), else identity."""
  if config.data.centered and not config.data.get("dim", None):
    return lambda x: x * 2.0 - 1.0
  return lambda x: x


def get_data_inverse_scaler(config):
  """Inverse of `get_data_scaler`."""
  if config.data.centered and not config.data.get("dim", None):
    return lambda x: (x + 1.0) / 2.0
  return lambda x: x


@dataclasses.dataclass(frozen=True)
class ToyDataset:
  """Fresh samples for every training step, drawn from `fold_in(seed, step)`; a fixed held-out set."""

  sampler: Callable
  seed: int
  batch_size: int
  eval_batch_size: int
  num_eval: int

  def _local(self, x, axis):
    """This process's slice of the global batch (every process draws the same global batch)."""
    per_process = x.shape[axis] // jax.process_count()
    start = jax.process_index() * per_process
    return jax.lax.slice_in_dim(x, start, start + per_process, axis=axis)

  def train_batches(self, step, n):
    keys = jax.vmap(lambda s: jax.random.fold_in(jax.random.PRNGKey(self.seed), s))(step + jnp.arange(n))
    batches = _sample_batches(self.sampler, keys, self.batch_size)
    return self._local(batches, axis=1)

  def eval_batches(self):
    data = self.sampler(jax.random.PRNGKey(self.seed + 1_000_003), self.num_eval)
    for start in range(0, self.num_eval - self.eval_batch_size + 1, self.eval_batch_size):
      yield self._local(data[start:start + self.eval_batch_size], axis=0)


@functools.partial(jax.jit, static_argnums=(0, 2))
def _sample_batches(sampler, keys, batch_size):
  return jax.vmap(lambda key: sampler(key, batch_size))(keys)


DATASETS = {**TOY_DATASETS, **IMAGE_TOY_DATASETS}


def get_dataset(config):
  """Builds the data set named by `config.data.dataset`."""
  name = config.data.dataset
  if name not in DATASETS:
    raise choice_error("data.dataset", name, DATASETS)
  if name in IMAGE_TOY_DATASETS:
    sampler = functools.partial(IMAGE_TOY_DATASETS[name], image_size=config.data.image_size,
                                num_channels=config.data.num_channels)
  else:
    sampler = TOY_DATASETS[name]
  return ToyDataset(sampler=sampler, seed=config.seed, batch_size=config.training.batch_size,
                    eval_batch_size=config.eval.batch_size, num_eval=config.data.get("num_eval", 1024))
