"""Parallelism at the edges: a device mesh, a sharded batch, a replicated or FSDP-sharded state.

Training, sampling and likelihood functions are single-device and pure; these helpers place
their batch axis over every device of every process (`data_sharded`) and everything else on
all of them (`replicated`), and `jit` splits the work. With per-sample keys the results do not
depend on the device or process count.

Training runs on a 2-D mesh (`make_mesh(fsdp=training.fsdp)`: axes `data` x `fsdp`). The batch is split
over both axes; with `fsdp` > 1 each array of the train state (parameters, optimizer moments, EMA and
power-EMA copies) is split over the `fsdp` axis along its largest axis that `fsdp` divides
(`fsdp_partition_specs`: the rule per array), and `jit` (GSPMD) gathers the parameters where the step
needs them and reduce-scatters the gradients (fully sharded data parallelism, ZeRO-3).
"""

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS, FSDP_AXIS = "data", "fsdp"
FSDP_MIN_ELEMENTS = 1024  # arrays with fewer elements stay replicated under fsdp (biases, gains, scalars)


def make_mesh(devices=None, fsdp=None):
  """A mesh of `devices` (default: every device of every process).

  `fsdp=None`: one `data` axis. `fsdp=k`: the 2-D mesh `(data, fsdp)` of shape `(devices / k, k)`, where
  the `k` devices of one `fsdp` row are neighbours in `jax.devices()`' order (the devices of one host
  first), so that the gathers of FSDP stay within a host when `k` divides its device count.

  Raises:
    ValueError: `fsdp` is not a positive divisor of the device count (naming `training.fsdp`).
  """
  devices = np.asarray(devices if devices is not None else jax.devices())
  if fsdp is None:
    return Mesh(devices, (DATA_AXIS,))
  if not isinstance(fsdp, int) or isinstance(fsdp, bool) or fsdp <= 0 or devices.size % fsdp:
    raise ValueError(f"training.fsdp={fsdp!r} must be a positive divisor of the device count ({devices.size}); "
                     "1 is data parallelism")
  return Mesh(devices.reshape(devices.size // fsdp, fsdp), (DATA_AXIS, FSDP_AXIS))


def fsdp_size(mesh):
  """The size of the `fsdp` axis of `mesh` (1 without one)."""
  return dict(mesh.shape).get(FSDP_AXIS, 1)


def fsdp_spec(shape, fsdp, min_elements=FSDP_MIN_ELEMENTS):
  """The `PartitionSpec` of one array of `shape` under `fsdp`: its largest axis that `fsdp` divides (the first
  of equal ones) split over the `fsdp` axis; `P()` (replicated) for fsdp 1, scalars, arrays under
  `min_elements` elements, and arrays with no axis that `fsdp` divides."""
  if fsdp == 1 or int(np.prod(shape, dtype=np.int64)) < min_elements:
    return P()
  divisible = [axis for axis, size in enumerate(shape) if size % fsdp == 0]
  if not divisible:
    return P()
  axis = max(divisible, key=lambda a: (shape[a], -a))
  return P(*([None] * axis), FSDP_AXIS)


def fsdp_partition_specs(tree, fsdp, min_elements=FSDP_MIN_ELEMENTS):
  """The `PartitionSpec` of every leaf of `tree` (arrays or `jax.ShapeDtypeStruct`s, e.g. `jax.eval_shape` of
  the train state) under `fsdp` (`fsdp_spec`): the rule of `training.fsdp`, a tree of the same structure."""
  return jax.tree_util.tree_map(lambda x: fsdp_spec(np.shape(x), fsdp, min_elements), tree)


def fsdp_shardings(mesh, tree):
  """The `NamedSharding` of every leaf of `tree` on `mesh` under its `fsdp` axis (`fsdp_partition_specs`; all
  replicated on a mesh without one)."""
  specs = fsdp_partition_specs(tree, fsdp_size(mesh))
  return jax.tree_util.tree_map(lambda spec: NamedSharding(mesh, spec), specs,
                                is_leaf=lambda x: isinstance(x, P))


def replicated(mesh):
  return NamedSharding(mesh, P())


def data_sharded(mesh, batch_axis=0):
  """Sharding that splits axis `batch_axis` over every axis of `mesh` (data, and fsdp when there is one)."""
  return NamedSharding(mesh, P(*([None] * batch_axis), mesh.axis_names))


def shard_batch(mesh, local_batch, batch_axis=0):
  """Assembles the global batch from each process's local part (the leading axes up to the batch)."""
  sharding = data_sharded(mesh, batch_axis)
  return jax.tree_util.tree_map(lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)),
                                local_batch)


def replicate(mesh, tree):
  """Places `tree` on every device of `mesh`."""
  return jax.device_put(tree, replicated(mesh))


def gather_to_replicated(mesh, tree):
  """A copy of `tree` (global arrays, possibly FSDP-sharded) replicated on every device of `mesh`, gathered
  inside `jit` (so that it works across processes): what a data-parallel sampler receives."""
  return jax.jit(lambda x: x, out_shardings=replicated(mesh))(tree)


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
