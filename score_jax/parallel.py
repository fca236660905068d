"""Data parallelism at the edges: a 1-D device mesh, a sharded batch, a replicated state.

Training, sampling and likelihood functions are single-device and pure; these helpers place
their batch axis over every device of every process (`data_sharded`) and everything else on
all of them (`replicated`), and `jit` splits the work. With per-sample keys the results do not
depend on the device or process count.
"""

import jax
import numpy as np
from jax.experimental import multihost_utils
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


def check_batch(key, batch_size, mesh):
  """Raises `ValueError` naming `key` unless `batch_size` splits evenly over the devices of `mesh`."""
  devices = mesh.devices.size
  if batch_size <= 0 or batch_size % devices:
    raise ValueError(f"{key}={batch_size} must be a positive multiple of the device count ({devices})")


def data_parallel(fn, mesh, in_batch, out_batch):
  """`jit(fn)` over `mesh`, each device computing its slice of the batch.

  Args:
    fn: a pure function of positional arguments.
    mesh: the device mesh (`make_mesh()`).
    in_batch: one bool per argument (or a pytree prefix of the arguments): True splits the
      leading (batch) axis over the data axis, False replicates.
    out_batch: the same for the outputs, e.g. `SampleOutput(samples=True, nfe=False)`.

  Returns:
    `fn` jitted with these shardings. In a single process the arguments are first placed where
    they belong (a no-op for arrays already there); with several processes, pass global arrays
    (`shard_batch`, a replicated state) or values that are the same on every process.
  """
  as_sharding = lambda is_batch: data_sharded(mesh) if is_batch else replicated(mesh)
  in_shardings = jax.tree_util.tree_map(as_sharding, tuple(in_batch))
  jitted = jax.jit(fn, in_shardings=in_shardings, out_shardings=jax.tree_util.tree_map(as_sharding, out_batch))

  def call(*args):
    if jax.process_count() == 1:
      args = jax.device_put(args, in_shardings)
    return jitted(*args)

  call.jitted = jitted  # for `.lower(...)` and trace counts
  return call


def gather(tree):
  """Numpy copies of the whole of every array, on every process (arrays split over processes are all-gathered)."""
  def one(x):
    if isinstance(x, jax.Array) and not x.is_fully_addressable and not x.is_fully_replicated:
      return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(jax.device_get(x))

  return jax.tree_util.tree_map(one, tree)


def from_process_0(tree):
  """Process 0's values of `tree` (numpy arrays of equal shapes everywhere) on every process."""
  return multihost_utils.broadcast_one_to_all(tree)
