"""Checkpoint interoperability: diffusers folders, the JAX original's msgpack, safetensors; hostile files.

The tests against diffusers itself (its `UNet2DModel` built from the Hub models' block layout at small
width, random weights, `save_pretrained`, forward compared with ours) need the `interop` extra
(`pip install -e ".[interop]"`: torch and diffusers) and skip without it; everything else runs anywhere,
including our import and export against diffusers' own checkpoints and outputs recorded in
tests/fixtures/diffusers/ (tests/fixtures/make_diffusers_fixtures.py writes them).
"""

import json
import lzma
import math
import os
import pickle
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import serialization

from score_jax import convert, diffusers_format, safetensors_io, trained_model
from score_jax.drivers import train
from score_jax.models import get_model, get_model_fn, init_model
from tests.helpers import FIXTURES, tiny_toy_config
from tests.test_convert import _Hostile, load_fixture, save_pth

# The Hub models' block layouts at small width: google/ddpm-cifar10-32 (attention at 16 px) and
# google/ncsnpp-* (AttnSkip blocks at 16 px; diffusers hard-codes 32 norm groups there: >= 128 channels).
DDPM_UNET = dict(sample_size=16, in_channels=3, out_channels=3, layers_per_block=1, block_out_channels=[32, 64, 64],
                 down_block_types=["DownBlock2D", "AttnDownBlock2D", "DownBlock2D"],
                 up_block_types=["UpBlock2D", "AttnUpBlock2D", "UpBlock2D"], norm_num_groups=32,
                 attention_head_dim=None, act_fn="silu", center_input_sample=False, downsample_padding=0,
                 flip_sin_to_cos=False, freq_shift=1, norm_eps=1e-6, time_embedding_type="positional")
NCSNPP_UNET = dict(sample_size=32, in_channels=3, out_channels=3, layers_per_block=1, block_out_channels=[32, 64, 128, 128],
                   down_block_types=["SkipDownBlock2D", "SkipDownBlock2D", "AttnSkipDownBlock2D", "SkipDownBlock2D"],
                   up_block_types=["SkipUpBlock2D", "AttnSkipUpBlock2D", "SkipUpBlock2D", "SkipUpBlock2D"],
                   norm_num_groups=None, attention_head_dim=None, act_fn="silu", center_input_sample=True,
                   downsample_padding=1, flip_sin_to_cos=True, freq_shift=1, norm_eps=1e-6,
                   time_embedding_type="fourier", mid_block_scale_factor=math.sqrt(2.0))
DDPM_SCHEDULER = {"_class_name": "DDPMScheduler", "num_train_timesteps": 1000, "beta_start": 1e-4, "beta_end": 0.02,
                  "beta_schedule": "linear"}
NCSNPP_SCHEDULER = {"_class_name": "ScoreSdeVeScheduler", "num_train_timesteps": 2000, "sigma_min": 0.01,
                    "sigma_max": 380.0, "snr": 0.075}


def random_variables(config, seed=0):
  """The network's variables with every entry random, N(0, 0.1^2), so that no map hides behind zeros or ones."""
  rng = np.random.default_rng(seed)
  shapes = jax.eval_shape(lambda: init_model(jax.random.PRNGKey(0), config))
  return jax.tree_util.tree_map(lambda s: jnp.asarray(0.1 * rng.normal(size=s.shape), jnp.float32), shapes)


def our_output(config, variables, x_nchw, labels):
  model_fn = jax.jit(lambda v, x, t: get_model_fn(get_model(config), v)(x, t))
  out = model_fn(variables, jnp.asarray(x_nchw.transpose(0, 2, 3, 1)), jnp.asarray(labels))
  return np.asarray(out).transpose(0, 3, 1, 2)


def inputs(config, seed=0):
  rng = np.random.default_rng(seed)
  size = config.data.image_size
  if config.model.name == "ncsnpp":  # data in [0, 1], labels sigma
    return rng.uniform(size=(2, 3, size, size)).astype(np.float32), np.array([0.05, 20.0], np.float32)
  return rng.normal(size=(2, 3, size, size)).astype(np.float32), np.array([10, 700], np.float32)


# --- The diffusers layout without diffusers: configs and names both ways -------------------------------------

@pytest.mark.parametrize("unet, scheduler", [(DDPM_UNET, DDPM_SCHEDULER), (NCSNPP_UNET, NCSNPP_SCHEDULER)])
def test_diffusers_layout_round_trip(tmp_path, unet, scheduler):
  config = diffusers_format.config_from_diffusers(unet, scheduler)
  if unet["time_embedding_type"] == "fourier":
    assert (config.model.sigma_min, config.model.sigma_max, config.model.num_scales) == (0.01, 380.0, 2000)
    assert config.sampling.snr == 0.075 and not config.data.centered and config.model.attn_resolutions == (8,)
  else:
    assert (config.model.beta_min, config.model.beta_max, config.model.num_scales) == (0.1, 20.0, 1000)
    assert config.model.attn_per_up_resnet and not config.training.continuous
  variables = random_variables(config)
  diffusers_format.save_diffusers_checkpoint(str(tmp_path), config, variables)
  loaded_config, loaded = diffusers_format.load_diffusers_checkpoint(str(tmp_path))
  jax.tree_util.tree_map(np.testing.assert_array_equal, loaded, variables)
  written = json.loads((tmp_path / "config.json").read_text())
  for key, value in unet.items():
    assert written[key] == pytest.approx(value) if isinstance(value, float) else written[key] == value, key
  assert loaded_config.model.to_dict() == config.model.to_dict()


def test_missing_and_unmapped_names_are_listed(tmp_path):
  config = diffusers_format.config_from_diffusers(DDPM_UNET, DDPM_SCHEDULER)
  state_dict = diffusers_format.variables_to_state_dict(random_variables(config), config)
  state_dict["up_blocks.1.attentions.9.to_q.weight"] = state_dict.pop("up_blocks.1.attentions.1.to_q.weight")
  with pytest.raises(ValueError, match=r"missing \['up_blocks.1.attentions.1.to_q.weight'\], unmapped "
                                       r"\['up_blocks.1.attentions.9.to_q.weight'\]"):
    diffusers_format.state_dict_to_variables(state_dict, config)
  state_dict = diffusers_format.variables_to_state_dict(random_variables(config), config)
  state_dict["conv_in.weight"] = state_dict["conv_in.weight"][:16]
  with pytest.raises(ValueError, match="conv_in.weight: shape"):
    diffusers_format.state_dict_to_variables(state_dict, config)


@pytest.mark.parametrize("change, message", [
    ({"attention_head_dim": 8}, "one head"), ({"norm_eps": 1e-5}, "norm_eps=1e-05 is not supported"),
    ({"up_block_types": ["UpBlock2D", "UpBlock2D", "AttnUpBlock2D"]}, "attention levels"),
    ({"time_embedding_type": "learned"}, "time_embedding_type='learned'")])
def test_unsupported_diffusers_settings_are_named(change, message):
  with pytest.raises(ValueError, match=message):
    diffusers_format.config_from_diffusers({**DDPM_UNET, **change}, DDPM_SCHEDULER)


def test_narrow_ncsnpp_attention_levels_are_refused():
  with pytest.raises(ValueError, match=r"attention levels with \[64\] channels"):
    diffusers_format.config_from_diffusers({**NCSNPP_UNET, "block_out_channels": [32, 64, 64, 64]}, NCSNPP_SCHEDULER)


def test_a_bin_that_would_run_code_is_refused(tmp_path):
  marker = tmp_path / "pwned"
  (tmp_path / "config.json").write_text(json.dumps(DDPM_UNET))
  data = pickle.dumps({"conv_in.weight": _Hostile(os.system, f"touch {marker}")}, protocol=2)
  save_pth(None, tmp_path / "diffusion_pytorch_model.bin", data_pkl=data)
  with pytest.raises(ValueError, match="would execute code"):
    convert.load_diffusers_checkpoint(str(tmp_path))
  assert not marker.exists()


def test_safetensors_headers_that_lie_are_refused(tmp_path):
  path = str(tmp_path / "x.safetensors")
  safetensors_io.write(path, {"a": np.arange(16, dtype=np.float32)}, {"format": "score_jax"})
  raw = open(path, "rb").read()
  header_size = int.from_bytes(raw[:8], "little")
  header = json.loads(raw[8:8 + header_size])
  assert header["a"]["data_offsets"] == [0, 64]
  lies = {"size": header_size, "offsets": None, "length": None}
  for lie in lies:
    bad = dict(header, a=dict(header["a"], data_offsets=[0, 640])) if lie == "offsets" else header
    text = json.dumps(bad).encode()
    text += b" " * (-len(text) % 8)
    size = len(text) + 10**6 if lie == "size" else len(text)
    body = raw[8 + header_size:] if lie != "length" else raw[8 + header_size:] + b"\0" * 8
    bad_path = tmp_path / f"{lie}.safetensors"
    bad_path.write_bytes(size.to_bytes(8, "little") + text + body)
    before = sorted(os.listdir(tmp_path))
    with pytest.raises(ValueError, match="not a valid safetensors file"):
      safetensors_io.read(str(bad_path))
    assert sorted(os.listdir(tmp_path)) == before


# --- safetensors export of a training workdir ----------------------------------------------------------------

def test_safetensors_export_and_import_of_a_workdir(tmp_path):
  config = tiny_toy_config(**{"training.n_iters": 10, "training.snapshot_freq": 10})
  train.train_and_evaluate(config, str(tmp_path / "run"))
  path = convert.export_checkpoint(str(tmp_path / "run"), "safetensors", str(tmp_path / "run.safetensors"))
  loaded_config, variables, ema_variables = convert.import_safetensors(path)
  for ema in (False, True):
    _, want, step = trained_model.load_model(str(tmp_path / "run"), ema=ema)
    jax.tree_util.tree_map(np.testing.assert_array_equal, ema_variables if ema else variables, want)
  assert step == 10 and loaded_config.model.nf == config.model.nf
  assert not np.allclose(variables["params"]["Dense_0"]["kernel"], ema_variables["params"]["Dense_0"]["kernel"])


# --- The JAX original's msgpack checkpoints -----------------------------------------------------------------

def original_state_bytes(variables, raw_scale=0.5):
  """A `yang-song/score_sde` `State` (flax msgpack, the original's field names) holding `variables`: Fourier
  `W` among the parameters, as the original keeps it; the optimizer's target is `raw_scale` times them."""
  params = {**variables["params"], **variables.get("constants", {})}
  params = jax.tree_util.tree_map(np.asarray, params)
  target = jax.tree_util.tree_map(lambda x: raw_scale * x, params)
  state = {"step": np.int64(400), "optimizer": {"target": target, "state": {"step": np.int64(400), "param_states": {}}},
           "lr": np.float32(2e-4), "model_state": {}, "ema_rate": np.float32(0.999), "params_ema": params,
           "rng": np.zeros(2, np.uint32)}
  return serialization.msgpack_serialize(state)


def test_jax_original_checkpoint_gives_the_fixture_variables(tmp_path):
  """The NCSN++ fixture (Fourier features: a parameter in the original, a constant here) through the original's
  State layout gives exactly the variables that reproduce the reference network's output (tests/test_models.py
  checks those against the reference; a second compile of the network here would add nothing)."""
  config, _, _, state_dict = load_fixture("ve_cifar10_ncsnpp_continuous")
  variables = convert.torch_state_dict_to_variables(state_dict, config)
  path = tmp_path / "checkpoint_26"
  path.write_bytes(original_state_bytes(variables))
  loaded = convert.load_score_sde_jax_checkpoint(str(path), config)
  assert set(loaded) == {"params", "constants"} and "GaussianFourierProjection_0" in loaded["constants"]
  jax.tree_util.tree_map(np.testing.assert_array_equal, loaded, variables)
  raw = convert.load_score_sde_jax_checkpoint(str(path), config, ema=False)
  jax.tree_util.tree_map(lambda r, e: np.testing.assert_allclose(r, 0.5 * e, rtol=1e-6), raw, loaded)
  _, _, ema_variables, step, ckpt = convert.read_released_checkpoint(str(path), config)
  assert (step, ckpt) == (400, 26)
  jax.tree_util.tree_map(np.testing.assert_array_equal, ema_variables, loaded)


def test_jax_original_checkpoint_errors(tmp_path):
  config, _, _, state_dict = load_fixture("vp_ddpm_cifar10")
  (tmp_path / "garbage").write_bytes(b"\xc1\xc1 not msgpack")
  with pytest.raises(ValueError, match="msgpack"):
    convert.load_score_sde_jax_checkpoint(str(tmp_path / "garbage"), config)
  variables = convert.torch_state_dict_to_variables(state_dict, config)
  del variables["params"]["Conv_0"]
  (tmp_path / "checkpoint_1").write_bytes(original_state_bytes(variables))
  with pytest.raises(ValueError, match=r"missing \[.*Conv_0"):
    convert.load_score_sde_jax_checkpoint(str(tmp_path / "checkpoint_1"), config)


# --- Against diffusers itself (optional: the interop extra) -------------------------------------------------

@pytest.mark.parametrize("unet_config, scheduler", [(DDPM_UNET, DDPM_SCHEDULER), (NCSNPP_UNET, NCSNPP_SCHEDULER)])
def test_import_matches_diffusers_forward(tmp_path, unet_config, scheduler):
  torch = pytest.importorskip("torch")
  diffusers = pytest.importorskip("diffusers")
  torch.manual_seed(0)
  unet = diffusers.UNet2DModel(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in unet_config.items()})
  with torch.no_grad():
    for p in unet.parameters():
      p.add_(0.05 * torch.randn_like(p))  # no zero-initialised layer hides a wrong map
  unet.eval().save_pretrained(tmp_path)
  (tmp_path / "scheduler_config.json").write_text(json.dumps(scheduler))
  config, variables = convert.load_diffusers_checkpoint(str(tmp_path))
  x, labels = inputs(config)
  with torch.no_grad():
    want = unet(torch.from_numpy(x), torch.from_numpy(labels if config.model.name == "ncsnpp" else
                                                      labels.astype(np.int64))).sample.numpy()
  got = our_output(config, variables, x, labels)
  assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max()


@pytest.mark.parametrize("unet_config, scheduler", [(DDPM_UNET, DDPM_SCHEDULER), (NCSNPP_UNET, NCSNPP_SCHEDULER)])
def test_export_loads_in_diffusers_with_the_same_forward(tmp_path, unet_config, scheduler):
  torch = pytest.importorskip("torch")
  diffusers = pytest.importorskip("diffusers")
  config = diffusers_format.config_from_diffusers(unet_config, scheduler)
  variables = random_variables(config, seed=3)
  convert.save_diffusers_checkpoint(str(tmp_path), config, variables)
  unet = diffusers.UNet2DModel.from_pretrained(str(tmp_path)).eval()
  x, labels = inputs(config, seed=1)
  with torch.no_grad():
    want = unet(torch.from_numpy(x), torch.from_numpy(labels if config.model.name == "ncsnpp" else
                                                      labels.astype(np.int64))).sample.numpy()
  got = our_output(config, variables, x, labels)
  assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max()


def test_imports_write_orbax_snapshots_with_their_config(tmp_path):
  """What `python -m score_jax.convert --checkpoint=...` does: a diffusers folder (no --config; the derived
  config is written as <workdir>/config.py) and the JAX original's checkpoint_<n> become restorable snapshots."""
  import importlib.util
  config = diffusers_format.config_from_diffusers(DDPM_UNET, DDPM_SCHEDULER)
  variables = random_variables(config)
  diffusers_format.save_diffusers_checkpoint(str(tmp_path / "hub"), config, variables)
  derived, ckpt, step = convert.write_train_state_checkpoint(None, str(tmp_path / "hub"), str(tmp_path / "w1"))
  spec = importlib.util.spec_from_file_location("derived_config", tmp_path / "w1" / "config.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  assert module.get_config().to_dict() == derived.to_dict() == config.to_dict()
  _, loaded, loaded_step = trained_model.load_model(str(tmp_path / "w1"))
  assert (ckpt, step, loaded_step) == (1, config.training.snapshot_freq, config.training.snapshot_freq)
  jax.tree_util.tree_map(np.testing.assert_array_equal, loaded, variables)

  fixture_config, _, _, state_dict = load_fixture("vp_ddpm_cifar10")
  fixture_variables = convert.torch_state_dict_to_variables(state_dict, fixture_config)
  (tmp_path / "checkpoint_7").write_bytes(original_state_bytes(fixture_variables))
  _, ckpt, step = convert.write_train_state_checkpoint(fixture_config, str(tmp_path / "checkpoint_7"),
                                                       str(tmp_path / "w2"))
  _, loaded, loaded_step = trained_model.load_model(str(tmp_path / "w2"))
  assert (ckpt, loaded_step) == (7, step) and step == 7 * fixture_config.training.snapshot_freq
  jax.tree_util.tree_map(np.testing.assert_array_equal, loaded, fixture_variables)


# --- Against diffusers' recorded outputs (tests/fixtures/diffusers/, no torch) -------------------------------
# Written by tests/fixtures/make_diffusers_fixtures.py (its docstring says what each file holds): diffusers'
# own Hub folders of a tiny google/ddpm-cifar10-32 and google/ncsnpp-celebahq-256 layout, and its outputs.

def hub_folder(name, tmp_path):
  """`tests/fixtures/diffusers/<name>` as the Hub has it: the JSON files and the unpacked safetensors."""
  source, folder = FIXTURES / "diffusers" / name, tmp_path / name
  folder.mkdir()
  for path in source.glob("*.json"):
    shutil.copy(path, folder)
  with lzma.open(source / f"{diffusers_format.WEIGHTS[0]}.xz") as f:
    (folder / diffusers_format.WEIGHTS[0]).write_bytes(f.read())
  return folder


@pytest.mark.parametrize("name", ["ddpm", "ncsnpp"])
def test_import_matches_diffusers_recorded_forward(tmp_path, name):
  config, variables = convert.load_diffusers_checkpoint(str(hub_folder(name, tmp_path)))
  if name == "ncsnpp":
    assert (config.model.sigma_min, config.model.sigma_max, config.model.num_scales) == (0.01, 348.0, 2000)
    assert config.sampling.snr == 0.15 and config.model.attn_resolutions == (8,)
  else:
    assert (config.model.beta_min, config.model.beta_max, config.model.num_scales) == (0.1, 20.0, 1000)
    assert config.model.attn_resolutions == (8,) and config.model.ch_mult == (1, 2, 2, 2)
  recorded = np.load(FIXTURES / "diffusers" / name / "forward.npz")
  got = our_output(config, variables, recorded["x"], recorded["labels"].astype(np.float32))
  want = recorded["sample_f64"]  # diffusers' own float32 forward is 7e-6 (NCSN++) and 6e-7 (DDPM) off it
  assert np.abs(got - want).max() <= 2e-5 * np.abs(want).max()


@pytest.mark.parametrize("name", ["ddpm", "ncsnpp"])
def test_export_writes_the_hub_weights_and_config(tmp_path, name):
  folder = hub_folder(name, tmp_path)
  config, variables = convert.load_diffusers_checkpoint(str(folder))
  convert.save_diffusers_checkpoint(str(tmp_path / "export"), config, variables)
  want, _ = safetensors_io.read(str(folder / diffusers_format.WEIGHTS[0]))
  got, _ = safetensors_io.read(str(tmp_path / "export" / diffusers_format.WEIGHTS[0]))
  assert sorted(got) == sorted(want)
  for key, value in want.items():
    assert got[key].dtype == value.dtype and got[key].shape == value.shape, key
    np.testing.assert_array_equal(got[key], value, err_msg=key)
  for file in ("config.json", "scheduler_config.json"):
    hub, ours = (json.loads((directory / file).read_text()) for directory in (folder, tmp_path / "export"))
    for key, value in ours.items():
      assert hub[key] == pytest.approx(value) if isinstance(value, float) else hub[key] == value, (file, key)


def test_diffusers_config_is_derived_and_read_outside_the_repository(tmp_path):
  """The diffusers import needs no repository `configs/` folder: run from an empty folder with only the
  installed package, it derives the config and writes a `config.py` that builds the same config."""
  folder = hub_folder("ddpm", tmp_path)
  script = (
      "import importlib.util, sys\n"
      "from score_jax import convert, diffusers_format\n"
      f"config, _ = convert.load_diffusers_checkpoint({str(folder)!r})\n"
      "open('derived.py', 'w').write(diffusers_format.config_file(config, 'hub'))\n"
      "spec = importlib.util.spec_from_file_location('derived', 'derived.py')\n"
      "module = importlib.util.module_from_spec(spec)\n"
      "spec.loader.exec_module(module)\n"
      "assert module.get_config().to_dict() == config.to_dict()\n"
      "assert not any(name == 'configs' or name.startswith('configs.') for name in sys.modules), 'configs'\n")
  run_dir = tmp_path / "elsewhere"
  run_dir.mkdir()
  env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
  result = subprocess.run([sys.executable, "-c", script], cwd=run_dir, env=env, capture_output=True, text=True)
  assert result.returncode == 0, result.stderr[-2000:]
