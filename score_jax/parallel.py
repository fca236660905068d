"""Data parallelism at the edges: a 1-D device mesh, a sharded batch, a replicated state."""

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = "data"


def make_mesh(devices=None):
  """A mesh with every device (of every process) on the data axis."""
  return Mesh(np.asarray(devices if devices is not None else jax.devices()), (DATA_AXIS,))


def replicated(mesh):
  return NamedSharding(mesh, P())


def data_sharded(mesh, batch_axis=0):
  """Sharding that splits axis `batch_axis` over the data axis."""
  return NamedSharding(mesh, P(*([None] * batch_axis), DATA_AXIS))


def shard_batch(mesh, local_batch, batch_axis=0):
  """Assembles the global batch from each process's local part (the leading axes up to the batch)."""
  sharding = data_sharded(mesh, batch_axis)
  return jax.tree_util.tree_map(lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)),
                                local_batch)


def replicate(mesh, tree):
  """Places `tree` on every device of `mesh`."""
  return jax.device_put(tree, replicated(mesh))
