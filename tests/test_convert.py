"""Released `.pth` checkpoints: the torch-free safe reader, EMA mapping, and the orbax conversion command."""

import collections
import json
import os
import pathlib
import pickle
import struct
import subprocess
import sys
import zipfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from score_jax import checkpoint, convert, run_setup, torch_pickle
from score_jax.models import get_model
from tests.helpers import FIXTURES
from tests.test_models import fixture_config

ROOT = pathlib.Path(__file__).resolve().parents[1]


# --- A test-only torch.save writer: protocol-2 pickle opcodes naming torch's globals ------------------------

class Global:
  def __init__(self, module, name):
    self.module, self.name = module, name


class View:
  """A tensor over `storage` (a flat array) with an element offset and strides, as torch stores it."""

  def __init__(self, storage, offset, shape, strides):
    self.storage, self.offset, self.shape, self.strides = storage, offset, shape, strides


_STORAGE_NAMES = {"float32": "FloatStorage", "float64": "DoubleStorage", "float16": "HalfStorage",
                  "int64": "LongStorage", "int32": "IntStorage", "uint8": "ByteStorage", "bool": "BoolStorage"}


class _Writer:
  def __init__(self, legacy):
    self.legacy, self.storages, self.out = legacy, [], bytearray()

  def emit(self, obj):
    out = self.out
    if obj is None:
      out += b"N"
    elif isinstance(obj, bool):
      out += b"\x88" if obj else b"\x89"
    elif isinstance(obj, int):
      out += b"J" + struct.pack("<i", obj) if -2**31 <= obj < 2**31 else b"\x8a\x08" + struct.pack("<q", obj)
    elif isinstance(obj, float):
      out += b"G" + struct.pack(">d", obj)
    elif isinstance(obj, str):
      data = obj.encode()
      out += b"X" + struct.pack("<I", len(data)) + data
    elif isinstance(obj, Global):
      out += f"c{obj.module}\n{obj.name}\n".encode()
    elif isinstance(obj, tuple):
      out += b"("
      for item in obj:
        self.emit(item)
      out += b"t"
    elif isinstance(obj, list):
      out += b"]("
      for item in obj:
        self.emit(item)
      out += b"e"
    elif isinstance(obj, collections.OrderedDict):
      self.emit(Global("collections", "OrderedDict"))
      out += b")R"
      self._items(obj)
    elif isinstance(obj, dict):
      out += b"}"
      self._items(obj)
    elif isinstance(obj, np.ndarray):
      flat = obj.reshape(-1).copy()
      strides = tuple(int(np.prod(obj.shape[i + 1:])) for i in range(obj.ndim))  # C order, in elements
      self.emit(View(flat, 0, obj.shape, strides))
    elif isinstance(obj, View):
      key = str(len(self.storages))
      self.storages.append((key, obj.storage))
      self.emit(Global("torch._utils", "_rebuild_tensor_v2"))
      out += b"("
      pid = ("storage", Global("torch", _STORAGE_NAMES[obj.storage.dtype.name]), key, "cpu", obj.storage.size)
      self.emit(pid + (None,) if self.legacy else pid)
      out += b"Q"
      for item in (obj.offset, tuple(obj.shape), tuple(obj.strides), False, collections.OrderedDict()):
        self.emit(item)
      out += b"tR"
    else:
      raise TypeError(type(obj))

  def _items(self, mapping):
    self.out += b"("
    for key, value in mapping.items():
      self.emit(key)
      self.emit(value)
    self.out += b"u"

  def dumps(self, obj):
    self.out = bytearray(b"\x80\x02")
    self.emit(obj)
    return bytes(self.out + b".")


def save_pth(obj, path, *, legacy=False, data_pkl=None):
  """Writes `obj` like `torch.save` (zip layout, or the legacy stream); `data_pkl` replaces the pickle."""
  writer = _Writer(legacy)
  data = writer.dumps(obj) if data_pkl is None else data_pkl
  if legacy:
    with open(path, "wb") as f:
      for header in (0x1950A86A20F9469CFC6C, 1001, {"protocol_version": 1001, "little_endian": True}):
        f.write(pickle.dumps(header, protocol=2))
      f.write(data)
      f.write(pickle.dumps([key for key, _ in writer.storages], protocol=2))
      for _, storage in writer.storages:
        f.write(struct.pack("<q", storage.size) + storage.tobytes())
    return
  with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
    archive.writestr("archive/data.pkl", data)
    archive.writestr("archive/byteorder", "little")
    for key, storage in writer.storages:
      archive.writestr(f"archive/data/{key}", storage.tobytes())
    archive.writestr("archive/version", "3\n")


# --- The reader ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("legacy", [False, True])
def test_reader_restores_dtypes_views_and_structure(tmp_path, legacy):
  shared = np.arange(20, dtype=np.float32)
  obj = {"model": collections.OrderedDict(
            [("w", np.random.RandomState(0).randn(3, 4).astype(np.float32)), ("sigmas", np.linspace(0, 1, 5)),
             ("count", np.arange(4)), ("flags", np.array([True, False])), ("half", np.ones(2, np.float16)),
             ("scalar", np.array(2.5, np.float32)),
             ("transposed", View(shared, 0, (5, 4), (1, 5))), ("slice", View(shared, 7, (3, 2), (5, 1)))]),
         "ema": {"decay": 0.9999, "num_updates": 3, "shadow_params": [np.ones(2, np.float32)]},
         "step": 2**40, "name": "x", "pair": (1, None)}
  save_pth(obj, tmp_path / "c.pth", legacy=legacy)
  got = torch_pickle.load(tmp_path / "c.pth")
  model = got["model"]
  assert isinstance(model, collections.OrderedDict) and list(model) == list(obj["model"])
  for key in ("w", "sigmas", "count", "flags", "half", "scalar"):
    assert model[key].dtype == obj["model"][key].dtype
    np.testing.assert_array_equal(model[key], obj["model"][key])
  np.testing.assert_array_equal(model["transposed"], shared.reshape(4, 5).T)
  np.testing.assert_array_equal(model["slice"], shared.reshape(4, 5)[1:4, 2:4])
  assert got["step"] == 2**40 and got["pair"] == (1, None) and got["ema"]["num_updates"] == 3


class _Hostile:
  def __init__(self, func, argument):
    self.func, self.argument = func, argument

  def __reduce__(self):
    return self.func, (self.argument,)


@pytest.mark.parametrize("legacy", [False, True])
@pytest.mark.parametrize("attack", ["os.system", "builtins.exec"])
def test_reader_refuses_code_without_running_it(tmp_path, legacy, attack):
  marker = tmp_path / "pwned"
  if attack == "os.system":
    payload = _Hostile(os.system, f"touch {marker}")
  else:
    payload = _Hostile(exec, f"open({str(marker)!r}, 'w').close()")
  data = pickle.dumps({"model": {"w": payload}}, protocol=2)
  save_pth(None, tmp_path / "evil.pth", legacy=legacy, data_pkl=data)
  with pytest.raises(ValueError, match="refusing to load.*would execute code"):
    torch_pickle.load(tmp_path / "evil.pth")
  assert not marker.exists()


def test_reader_rejects_strides_beyond_the_storage(tmp_path):
  save_pth({"w": View(np.zeros(4, np.float32), 2, (2, 2), (2, 1))}, tmp_path / "bad.pth")
  with pytest.raises(ValueError, match="corrupt"):
    torch_pickle.load(tmp_path / "bad.pth")


def test_reader_rejects_other_files(tmp_path):
  (tmp_path / "x.pth").write_bytes(b"not a checkpoint")
  with pytest.raises(ValueError, match="neither a zip"):
    torch_pickle.load(tmp_path / "x.pth")


# --- Released-checkpoint layout: model + EMA, `module.` prefixes --------------------------------------------

def load_fixture(name):
  path = FIXTURES / f"model_{name}.npz"
  arrays = dict(np.load(path))
  meta = json.loads(path.with_suffix(".json").read_text())
  state_dict = collections.OrderedDict((key, arrays[key]) for key in meta["state_dict_keys_in_order"])
  return fixture_config(meta), arrays, meta, state_dict


def released_checkpoint(state_dict, meta, *, model_scale=0.5, step=123):
  """`{'optimizer','model','ema','step'}` as the PyTorch port saves it: EMA = the fixture weights,
  model = scaled weights, EMA list in parameter order over trainable entries only."""
  kinds = meta["state_dict_entry_kind"]
  model = collections.OrderedDict(
      ("module." + key, value * model_scale if kinds[key] == "param" else value) for key, value in state_dict.items())
  shadow = [value for key, value in state_dict.items() if kinds[key] == "param"]
  return {"optimizer": {"state": {}, "param_groups": [{"lr": 2e-4, "betas": (0.9, 0.999), "params": [0, 1]}]},
          "model": model, "ema": {"decay": 0.9999, "num_updates": step, "shadow_params": shadow}, "step": step}


def test_released_checkpoint_reproduces_reference_output(tmp_path):
  config, arrays, meta, state_dict = load_fixture("vp_cifar10_ddpmpp_continuous")
  save_pth(released_checkpoint(state_dict, meta), tmp_path / "checkpoint_1.pth")
  variables = convert.load_torch_checkpoint(tmp_path / "checkpoint_1.pth", config)
  output = jax.jit(get_model(config).apply)(variables, jnp.asarray(arrays["input_x"].transpose(0, 2, 3, 1)),
                                            jnp.asarray(arrays["input_time_cond"]))
  expected = arrays["output_f64"]
  assert np.abs(np.asarray(output).transpose(0, 3, 1, 2) - expected).max() <= 2e-5 * np.abs(expected).max()
  raw = convert.load_torch_checkpoint(tmp_path / "checkpoint_1.pth", config, ema=False)
  jax.tree_util.tree_map(lambda r, v: np.testing.assert_allclose(r, 0.5 * v, rtol=1e-6),
                         raw["params"], variables["params"])


def test_ema_list_skips_frozen_fourier_weights_and_buffers(tmp_path):
  config, _, meta, state_dict = load_fixture("ve_cifar10_ncsnpp_continuous")
  assert "param_frozen" in meta["state_dict_entry_kind"].values()
  checkpoint_dict = released_checkpoint(state_dict, meta, model_scale=-1.0)
  save_pth(checkpoint_dict, tmp_path / "c.pth")
  got = convert.load_torch_checkpoint(tmp_path / "c.pth", config)
  want = convert.torch_state_dict_to_variables(state_dict, config)
  jax.tree_util.tree_map(np.testing.assert_array_equal, got, want)
  shadow = checkpoint_dict["ema"]["shadow_params"]
  shadow[1], shadow[2] = shadow[2], shadow[1]  # a weight and a bias swapped: out of parameter order
  with pytest.raises(ValueError, match="out of order"):
    convert.checkpoint_state_dict(checkpoint_dict, config)
  with pytest.raises(ValueError, match="wrong config"):
    convert.checkpoint_state_dict({**checkpoint_dict, "ema": {"shadow_params": shadow[1:]}}, config)


# --- The conversion command ---------------------------------------------------------------------------------

def test_convert_command_writes_a_restorable_train_state(tmp_path):
  config, _, meta, state_dict = load_fixture("vp_cifar10_ddpmpp_continuous")
  assert meta["overrides"] == {"model.nf": 8}
  save_pth(released_checkpoint(state_dict, meta, step=400), tmp_path / "checkpoint_3.pth")
  workdir = tmp_path / "work"
  result = subprocess.run(
      [sys.executable, "-m", "score_jax.convert", "--config=configs/vp/cifar10_ddpmpp_continuous.py",
       "--config.model.nf=8", f"--checkpoint={tmp_path / 'checkpoint_3.pth'}", f"--workdir={workdir}"],
      cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-2000:]
  assert "--config.eval.begin_ckpt=3 --config.eval.end_ckpt=3" in result.stdout
  target = jax.eval_shape(lambda: run_setup.RunSetup(config, companions=()).initial_state(jax.random.PRNGKey(0)))
  manager = checkpoint.get_manager(workdir / checkpoint.SNAPSHOT_DIR)
  assert manager.all_steps() == [3 * config.training.snapshot_freq]
  state = checkpoint.restore(manager, 3 * config.training.snapshot_freq, target)
  want = convert.torch_state_dict_to_variables(state_dict, config)["params"]
  jax.tree_util.tree_map(np.testing.assert_array_equal, state.ema_params, want)
  jax.tree_util.tree_map(lambda p, w: np.testing.assert_allclose(p, 0.5 * w, rtol=1e-6), state.params, want)
  assert int(state.step) == 400
  assert all(not np.any(x) for x in jax.tree_util.tree_leaves(state.opt_state) if np.ndim(x) > 0)


# --- Optional: files written by real torch ------------------------------------------------------------------

@pytest.mark.parametrize("zip_format", [True, False])
def test_reads_real_torch_save(tmp_path, zip_format):
  torch = pytest.importorskip("torch")
  config, _, meta, state_dict = load_fixture("ve_cifar10_ncsnpp_continuous")
  model = collections.OrderedDict(("module." + k, torch.from_numpy(v.copy())) for k, v in state_dict.items())
  shadow = [torch.from_numpy(v.copy()) for k, v in state_dict.items() if meta["state_dict_entry_kind"][k] == "param"]
  weight = torch.nn.Parameter(torch.ones(3))
  optimizer = torch.optim.Adam([weight])
  weight.grad = torch.ones(3)
  optimizer.step()
  grid = torch.arange(20.0).reshape(4, 5)
  saved = {"optimizer": optimizer.state_dict(), "model": model, "step": 9,
           "ema": {"decay": 0.999, "num_updates": 9, "shadow_params": shadow},
           "views": [grid.t(), grid[1:, 2:], torch.randn(2).bfloat16()]}
  torch.save(saved, tmp_path / "c.pth", _use_new_zipfile_serialization=zip_format)
  got = torch_pickle.load(tmp_path / "c.pth")
  for ours, theirs in zip(got["views"], saved["views"]):
    np.testing.assert_array_equal(np.asarray(ours, np.float32), theirs.float().numpy())
  np.testing.assert_array_equal(got["optimizer"]["state"][0]["exp_avg"], optimizer.state[weight]["exp_avg"].numpy())
  variables = convert.load_torch_checkpoint(tmp_path / "c.pth", config)
  jax.tree_util.tree_map(np.testing.assert_array_equal, variables,
                         convert.torch_state_dict_to_variables(state_dict, config))
