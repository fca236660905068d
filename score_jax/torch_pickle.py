"""Reads `torch.save` files into numpy without torch and without running pickle code.

A `.pth` file is a pickle whose tensors point ("persistent ids") at raw storage
bytes kept beside it: in a zip archive (`<name>/data.pkl` + `<name>/data/<key>`,
torch >= 1.6) or, in the legacy format, after the pickle in the same stream.
Unpickling calls whatever globals the file names, so a hostile file can run
code; this reader resolves only the few globals a state dict needs (tensor
rebuilders, storage types, `OrderedDict`) to its own numpy code and refuses
every other one before anything is called.
"""

import collections
import pickle
import zipfile

import numpy as np

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001


_STORAGE_DTYPES = {
    "DoubleStorage": "float64", "FloatStorage": "float32", "HalfStorage": "float16", "BFloat16Storage": "bfloat16",
    "LongStorage": "int64", "IntStorage": "int32", "ShortStorage": "int16", "CharStorage": "int8",
    "ByteStorage": "uint8", "BoolStorage": "bool", "UntypedStorage": "uint8",
}


class _StorageType:
  """Stands in for `torch.FloatStorage` & co.: only carries the numpy dtype."""

  def __init__(self, name):
    if name == "BFloat16Storage":
      import ml_dtypes  # a jax dependency; only needed for bfloat16 tensors
      self.dtype = np.dtype(ml_dtypes.bfloat16)
    else:
      self.dtype = np.dtype(_STORAGE_DTYPES[name])


class _Storage:
  """A flat typed buffer; its bytes may arrive after the pickle (legacy format)."""

  def __init__(self, dtype):
    self.dtype, self.array = dtype, None


class _PendingTensor:
  def __init__(self, storage, offset, size, stride):
    self.storage, self.offset, self.size, self.stride = storage, int(offset), tuple(size), tuple(stride)

  def materialize(self):
    flat = self.storage.array
    if flat is None:
      raise ValueError("corrupt checkpoint: a tensor refers to a storage whose data is missing")
    if any(n == 0 for n in self.size):
      return np.zeros(self.size, flat.dtype)
    if self.offset < 0 or any(s < 0 for s in self.stride) or len(self.stride) != len(self.size):
      raise ValueError(f"corrupt checkpoint: tensor offset {self.offset} / strides {self.stride}")
    last = self.offset + sum((n - 1) * s for n, s in zip(self.size, self.stride))
    if last >= flat.size:  # never let crafted strides read past the buffer
      raise ValueError(f"corrupt checkpoint: tensor reaches element {last} of a storage of {flat.size}")
    item = flat.dtype.itemsize
    return np.lib.stride_tricks.as_strided(flat[self.offset:], self.size, [s * item for s in self.stride]).copy()


def _rebuild_tensor(storage, storage_offset, size, stride, *unused):  # torch._utils._rebuild_tensor_v2
  if not isinstance(storage, _Storage):
    raise ValueError("corrupt checkpoint: a tensor without a storage")
  return _PendingTensor(storage, storage_offset, size, stride)


def _rebuild_parameter(data, *unused):  # torch._utils._rebuild_parameter(_with_state)
  return data


_ALLOWED = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
}


class _RestrictedUnpickler(pickle.Unpickler):
  """Resolves only `_ALLOWED` globals; `load_storage(type, key, numel)` serves persistent ids."""

  def __init__(self, file, load_storage):
    super().__init__(file)
    self._load_storage, self._storages = load_storage, {}

  def find_class(self, module, name):
    if module == "torch" and name in _STORAGE_DTYPES:
      return _StorageType(name)
    if (module, name) not in _ALLOWED:
      raise ValueError(f"refusing to load this checkpoint: unpickling it would execute code: {module}.{name} "
                       "(only tensors, storages and OrderedDicts are allowed)")
    return _ALLOWED[module, name]

  def persistent_load(self, pid):
    if not (isinstance(pid, tuple) and len(pid) in (5, 6) and pid[0] == "storage"
            and isinstance(pid[1], _StorageType)):
      raise ValueError(f"corrupt checkpoint: unexpected persistent id {pid!r:.100}")
    _, storage_type, key, _, numel, *view = pid
    if view and view[0] is not None:
      raise ValueError("storage views (torch < 0.4 checkpoints) are not supported")
    if key not in self._storages:
      self._storages[key] = self._load_storage(storage_type, str(key), int(numel))
    return self._storages[key]


def _materialize(obj):
  """Replaces pending tensors by numpy arrays inside dicts, lists and tuples."""
  if isinstance(obj, _PendingTensor):
    return obj.materialize()
  if isinstance(obj, dict):
    for key in obj:
      obj[key] = _materialize(obj[key])
    return obj
  if isinstance(obj, list):
    obj[:] = [_materialize(v) for v in obj]
    return obj
  if isinstance(obj, tuple):
    return tuple(_materialize(v) for v in obj)
  return obj


def _load_zip(path):
  with zipfile.ZipFile(path) as archive:
    names = archive.namelist()
    pickles = [n for n in names if n.endswith("/data.pkl") and n.count("/") == 1]
    if len(pickles) != 1:
      raise ValueError(f"{path}: a zip archive without one `<name>/data.pkl`: not a torch.save file")
    prefix = pickles[0][:-len("data.pkl")]
    byteorder = "little"
    if prefix + "byteorder" in names:
      byteorder = archive.read(prefix + "byteorder").decode().strip()

    def load_storage(storage_type, key, numel):
      dtype = storage_type.dtype.newbyteorder("<" if byteorder == "little" else ">")
      try:
        raw = archive.read(f"{prefix}data/{key}")
      except KeyError:
        raise ValueError(f"{path}: storage {key!r} is missing from the archive") from None
      storage = _Storage(dtype)
      storage.array = np.frombuffer(raw, dtype, count=len(raw) // dtype.itemsize).astype(dtype.newbyteorder("="))
      return storage

    with archive.open(pickles[0]) as f:
      return _materialize(_RestrictedUnpickler(f, load_storage).load())


def _load_legacy(path):
  with open(path, "rb") as f:
    def header():
      return _RestrictedUnpickler(f, None).load()
    try:
      magic = header()
    except ValueError:
      raise
    except Exception:  # noqa: BLE001 -- any other unreadable start means "not a torch file"
      magic = None
    if magic != _LEGACY_MAGIC:
      raise ValueError(f"{path}: neither a zip nor a legacy torch.save file")
    if header() != _LEGACY_PROTOCOL:
      raise ValueError(f"{path}: unsupported legacy torch.save protocol")
    little = header().get("little_endian", True)
    storages = {}

    def load_storage(storage_type, key, numel):
      storages[key] = _Storage(storage_type.dtype.newbyteorder("<" if little else ">"))
      return storages[key]

    obj = _RestrictedUnpickler(f, load_storage).load()
    keys = header()  # the storage keys, in the order their bytes follow
    for key in keys:
      storage = storages.get(str(key))
      if storage is None:
        raise ValueError(f"{path}: unknown storage {key!r}")
      numel = int(np.frombuffer(f.read(8), "<i8" if little else ">i8")[0])
      raw = f.read(numel * storage.dtype.itemsize)
      if len(raw) != numel * storage.dtype.itemsize:
        raise ValueError(f"{path}: truncated file")
      storage.array = np.frombuffer(raw, storage.dtype).astype(storage.dtype.newbyteorder("="))
    return _materialize(obj)


def load(path):
  """Reads a `torch.save` file (zip or legacy format) into dicts, lists and numpy arrays.

  Args:
    path: the `.pth` file.

  Returns:
    The saved object, with every tensor (and `nn.Parameter`) as a numpy array.

  Raises:
    ValueError: the file names any global beyond tensors, storages and
      `OrderedDict` (it would run code), or is not a readable torch file.
  """
  path = str(path)
  return _load_zip(path) if zipfile.is_zipfile(path) else _load_legacy(path)
