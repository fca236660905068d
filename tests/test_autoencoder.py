"""score_jax.autoencoder and networks.autoencoder_kl against diffusers' own AutoencoderKL (recorded, no torch).

tests/fixtures/diffusers/autoencoder_kl/ holds tiny SD-VAE-layout folders saved by diffusers, one in the old
attention names as a torch.save `.bin`, and diffusers' outputs on fixed inputs
(tests/fixtures/make_autoencoder_fixtures.py writes them; its docstring says what each file holds).
"""

import functools
import json
import lzma
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from score_jax import autoencoder, diffusers_format, safetensors_io
from score_jax.networks import autoencoder_kl
from tests.helpers import FIXTURES
from tests.test_imports import import_graph

RECORDED = FIXTURES / "diffusers" / "autoencoder_kl"
# name -> (the fixture whose outputs it reproduces, scaling_factor, shift_factor)
FOLDERS = {"sd": ("sd", 0.18215, 0.0), "shifted": ("shifted", 0.3611, 0.1159), "sd_legacy": ("sd", 0.18215, 0.0)}


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
  """`hub(name)`: the folder `name` as the Hub has it (its weights unpacked), made once."""
  root = tmp_path_factory.mktemp("autoencoder_kl")

  def folder(name):
    target = root / name
    if not target.exists():
      target.mkdir()
      shutil.copy(RECORDED / name / "config.json", target)
      for packed in (RECORDED / name).glob("*.xz"):
        with lzma.open(packed) as f:
          (target / packed.stem).write_bytes(f.read())
    return target
  return folder


def nchw(x):
  return np.asarray(x).transpose(0, 3, 1, 2)


def nhwc(x):
  return np.asarray(x).transpose(0, 2, 3, 1)


def assert_close(got, want):
  assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max()


@pytest.mark.numerical
@pytest.mark.parametrize("name", FOLDERS)
def test_encode_and_decode_match_diffusers(hub, name):
  """The posterior's moments and the decoded images are diffusers' (its float64 run; its float32 run is within
  4e-6 of it), in today's attention names and the old ones (a `.bin` read through torch_pickle)."""
  recorded, scaling_factor, shift_factor = FOLDERS[name]
  ae = autoencoder.load_autoencoder(str(hub(name)))
  assert (ae.scaling_factor, ae.shift_factor, ae.latent_channels, ae.downsample_factor) == (
      scaling_factor, shift_factor, 4, 2)
  outputs = np.load(RECORDED / recorded / "outputs.npz")
  mean, logvar = ae.encode(nhwc(outputs["x"]))
  assert mean.shape == logvar.shape == (2, 8, 8, 4) and mean.dtype == logvar.dtype == jnp.float32
  assert np.isin([20.0, -30.0], outputs["logvar"]).all()  # the fixture's log-variance is clamped both ways
  assert_close(nchw(mean), outputs["mean_f64"])
  assert_close(nchw(logvar), outputs["logvar_f64"])
  images = ae.decode(nhwc(outputs["z"]))
  assert images.shape == (2, 16, 16, 3) and images.dtype == jnp.float32
  assert_close(nchw(images), outputs["sample_f64"])


def test_a_pipeline_folder_reads_its_vae(hub, tmp_path):
  (tmp_path / "vae").mkdir()
  for path in hub("sd").iterdir():
    shutil.copy(path, tmp_path / "vae")
  (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
  got = autoencoder.load_autoencoder(str(tmp_path))
  want = autoencoder.load_autoencoder(str(hub("sd")))
  assert got.module == want.module
  jax.tree_util.tree_map(np.testing.assert_array_equal, got.variables, want.variables)


def test_the_old_attention_names_load_to_the_same_variables(hub):
  old = autoencoder.load_autoencoder(str(hub("sd_legacy")))
  new = autoencoder.load_autoencoder(str(hub("sd")))
  jax.tree_util.tree_map(np.testing.assert_array_equal, old.variables, new.variables)


def sd_state_dict(hub):
  config = json.loads((hub("sd") / "config.json").read_text())
  state_dict, _ = safetensors_io.read(str(hub("sd") / diffusers_format.WEIGHTS[0]))
  return autoencoder_kl.from_diffusers_config(config), state_dict


@pytest.mark.parametrize("change, message", [
    (lambda s: s.pop("decoder.up_blocks.1.resnets.1.conv1.weight"), "missing decoder.up_blocks.1.resnets.1.conv1.weight"),
    (lambda s: s.update(extra=s["quant_conv.bias"]), "unexpected extra"),
    (lambda s: s.update({"encoder.conv_in.bias": s["encoder.conv_in.bias"][:-1]}),
     r"encoder.conv_in.bias: shape \(31,\) does not fit encoder/conv_in/bias \(32,\)"),
    (lambda s: s.update({"encoder.mid_block.attentions.0.query.weight": s["encoder.mid_block.attentions.0.to_q.weight"]}),
     "both encoder.mid_block.attentions.0.query.weight and encoder.mid_block.attentions.0.to_q.weight"),
], ids=["missing", "unexpected", "shape", "both_names"])
def test_a_state_dict_that_does_not_fit_is_refused_naming_the_tensor(hub, change, message):
  module, state_dict = sd_state_dict(hub)
  change(state_dict)
  with pytest.raises(ValueError, match=message) as error:
    autoencoder.state_dict_to_params(state_dict, module)
  assert "\n" not in str(error.value)


def test_the_names_map_both_ways_between_flax_and_diffusers():
  assert autoencoder.torch_name(("decoder", "up_blocks_1", "upsamplers_0", "conv", "kernel")) == \
      "decoder.up_blocks.1.upsamplers.0.conv.weight"
  assert autoencoder.torch_name(("encoder", "mid_block", "attentions_0", "to_out_0", "bias")) == \
      "encoder.mid_block.attentions.0.to_out.0.bias"
  assert autoencoder.torch_name(("encoder", "conv_norm_out", "scale")) == "encoder.conv_norm_out.weight"
  assert autoencoder.today_name("decoder.mid_block.attentions.0.proj_attn.weight") == \
      "decoder.mid_block.attentions.0.to_out.0.weight"
  assert autoencoder.today_name("decoder.mid_block.resnets.0.conv1.weight") == "decoder.mid_block.resnets.0.conv1.weight"


@pytest.mark.parametrize("change, message", [
    ({"down_block_types": ["DownEncoderBlock2D", "AttnDownEncoderBlock2D"]}, "down_block_types=.*AttnDownEncoderBlock2D"),
    ({"up_block_types": ["UpDecoderBlock2D"]}, "up_block_types=.*one per block_out_channels"),
    ({"act_fn": "tanh"}, "act_fn='tanh' is not valid"),
    ({"_class_name": "UNet2DModel"}, "UNet2DModel is not an AutoencoderKL"),
], ids=["down_block", "levels", "act_fn", "class"])
def test_an_unknown_config_is_refused_in_one_line(change, message):
  config = {"block_out_channels": [32, 64], "down_block_types": ["DownEncoderBlock2D"] * 2,
            "up_block_types": ["UpDecoderBlock2D"] * 2, **change}
  with pytest.raises(ValueError, match=message) as error:
    autoencoder_kl.from_diffusers_config(config)
  assert "\n" not in str(error.value)


def test_a_path_that_is_no_autoencoder_is_refused(tmp_path):
  (tmp_path / "only_config").mkdir()
  (tmp_path / "only_config" / "config.json").write_text("{}")
  (tmp_path / "file").write_text("")
  for path in (tmp_path / "absent", tmp_path / "file", tmp_path / "only_config"):
    with pytest.raises(ValueError, match="is not a diffusers AutoencoderKL folder .* nor a score_jax autoencoder"):
      autoencoder.load_autoencoder(str(path))


def test_the_network_without_mid_attention_or_quant_convs():
  module = autoencoder_kl.from_diffusers_config({"block_out_channels": [32, 32, 64], "down_block_types": ["DownEncoderBlock2D"] * 3,
                                                 "up_block_types": ["UpDecoderBlock2D"] * 3, "mid_block_add_attention": False,
                                                 "use_quant_conv": False, "use_post_quant_conv": True, "latent_channels": 8})
  x = jnp.zeros((1, 16, 16, 3))
  params = jax.eval_shape(module.init, jax.random.key(0), x)["params"]
  assert "attentions_0" not in params["encoder"]["mid_block"] and "quant_conv" not in params
  assert params["post_quant_conv"]["kernel"].shape == (1, 1, 8, 8)
  assert len(params["encoder"]["down_blocks_0"]["resnets_0"]) == 4  # no shortcut where the width stays
  mean, logvar = jax.eval_shape(functools.partial(module.apply, method="encode"), {"params": params}, x)
  assert mean.shape == logvar.shape == (1, 4, 4, 8)


def test_bfloat16_compute_keeps_float32_parameters_and_outputs(hub):
  ae = autoencoder.load_autoencoder(str(hub("sd")), dtype="bfloat16")
  assert ae.module.dtype == jnp.bfloat16
  assert all(p.dtype == jnp.float32 for p in jax.tree_util.tree_leaves(ae.variables))
  x = jax.ShapeDtypeStruct((2, 16, 16, 3), jnp.float32)
  encoded = jax.eval_shape(ae.encode, x)
  assert [a.dtype for a in encoded] == [jnp.float32, jnp.float32]
  z = jax.ShapeDtypeStruct((2, 8, 8, 4), jnp.float32)
  jaxpr = str(jax.make_jaxpr(functools.partial(ae.module.apply, method="decode"))(ae.variables, z))
  assert "bf16" in jaxpr and "conv_general_dilated" in jaxpr


def test_the_network_knows_nothing_of_sdes():
  graph, seen, todo = import_graph(), set(), ["score_jax.networks.autoencoder_kl"]
  while todo:
    module = todo.pop()
    if module not in seen:
      seen.add(module)
      todo.extend(graph[module])
  assert not seen & {"score_jax.sde", "score_jax.parameterization", "score_jax.models.score_model"}, seen
