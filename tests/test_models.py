"""Score networks against the reference fixtures (tests/fixtures/REFCHECK.md) and their architecture options."""

import importlib
import json
import subprocess
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from score_jax import base_config, convert, parameterization, sde as sde_lib
from score_jax.models import get_model, get_model_fn, get_score_fn, init_model
from tests.helpers import FIXTURES

MODEL_FIXTURES = ["vp_cifar10_ddpmpp_continuous", "ve_cifar10_ncsnpp_continuous", "vp_ddpm_cifar10", "ve_cifar10_ncsnpp"]


def load_config(name):
  return importlib.import_module("configs." + name.replace("/", ".")).get_config()


# --- The reference fixtures -------------------------------------------------------------------------------

def fixture_config(meta):
  """The reference's config of a fixture (its flat keys), completed with score_jax's defaults for the rest."""
  config = ml_collections.ConfigDict()
  for key, value in meta["config_flat"].items():
    *sections, leaf = key.split(".")
    node = config
    for section in sections:
      if section not in node:
        node[section] = ml_collections.ConfigDict()
      node = node[section]
    node[leaf] = tuple(value) if isinstance(value, list) else value
  return base_config.complete(config)


@pytest.fixture(scope="module", params=MODEL_FIXTURES)
def model_fixture(request, refcheck):
  arrays = refcheck(f"model_{request.param}")
  meta = json.loads((FIXTURES / f"model_{request.param}.json").read_text())
  config = fixture_config(meta)
  state_dict = {key: arrays[key] for key in meta["state_dict_keys_in_order"]}
  return config, arrays, state_dict, convert.torch_state_dict_to_variables(state_dict, config)


def test_network_and_score_match_reference(model_fixture):
  """The reference parameterization: its labels, the network as the reference defines it, and the score."""
  config, arrays, _, variables = model_fixture
  sde, _ = sde_lib.get_sde(config)
  model = get_model(config)
  continuous = config.training.continuous
  x, t = jnp.asarray(arrays["input_x"].transpose(0, 2, 3, 1)), jnp.asarray(arrays["input_t"])
  labels = parameterization.reference_labels(sde, t, continuous)
  np.testing.assert_allclose(labels, arrays["input_time_cond"], rtol=1e-6)
  output = jax.jit(get_model_fn(model, variables))(x, labels)
  expected = arrays["output_f64"]
  output = np.asarray(output).transpose(0, 3, 1, 2)
  assert np.abs(output - expected).max() <= 2e-5 * np.abs(expected).max()
  score = jax.jit(get_score_fn(sde, model, variables, continuous=continuous))(x, t)
  score = np.asarray(score).transpose(0, 3, 1, 2)
  assert np.abs(score - arrays["score"]).max() <= 2e-5 * np.abs(arrays["score"]).max()


def test_conversion_accepts_data_parallel_prefix_and_rejects_wrong_config(model_fixture):
  config, _, state_dict, variables = model_fixture
  prefixed = convert.torch_state_dict_to_variables({"module." + k: v for k, v in state_dict.items()}, config)
  jax.tree_util.tree_map(np.testing.assert_array_equal, variables, prefixed)
  fourier = config.model.name == "ncsnpp" and config.model.embedding_type == "fourier"
  assert set(variables) == ({"params", "constants"} if fourier else {"params"})
  wrong = ml_collections.ConfigDict(config.to_dict())
  wrong.model.num_res_blocks += 1
  with pytest.raises(ValueError):
    convert.torch_state_dict_to_variables(state_dict, wrong)


# --- Architecture options on tiny networks ----------------------------------------------------------------

def tiny_config(**model):
  config = load_config("ve/cifar10_ncsnpp_continuous")
  config.data.image_size = 16
  config.model.nf = 8
  config.model.ch_mult = (1, 2)
  config.model.num_res_blocks = 1
  config.model.attn_resolutions = (8,)
  config.model.update(model)
  return config


@pytest.mark.parametrize("options", [
    dict(progressive="output_skip", progressive_input="input_skip", progressive_combine="cat"),
    dict(progressive="residual", progressive_input="residual"),
    dict(resblock_type="ddpm", progressive="output_skip", progressive_input="input_skip", fir=False),
    dict(resblock_type="ddpm", fir=True, skip_rescale=False, embedding_type="positional"),
])
def test_ncsnpp_options_build(options):
  config = tiny_config(**options)
  shapes = jax.eval_shape(lambda: get_model(config).init(
      jax.random.PRNGKey(0), jnp.zeros((2, 16, 16, 3)), jnp.ones((2,)), train=False))
  assert jax.eval_shape(lambda v: get_model(config).apply(v, jnp.zeros((2, 16, 16, 3)), jnp.ones((2,))),
                        shapes).shape == (2, 16, 16, 3)


def random_variables(model, x, labels, seed=0):
  """Dense random weights for the shapes of `model.init` (only traced: compiling init is slow on CPU)."""
  shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), x, labels, train=False))
  rng = np.random.default_rng(seed)
  def draw(leaf):
    fan_in = int(np.prod(leaf.shape[:-1])) if len(leaf.shape) > 1 else 1
    return jnp.asarray(rng.normal(0.0, 1.0 / np.sqrt(fan_in), leaf.shape), jnp.float32)
  return jax.tree_util.tree_map(draw, shapes)


def test_dropout_follows_train_flag_and_rng():
  config = tiny_config(dropout=0.5, progressive="residual")
  model = get_model(config)
  x = jax.random.uniform(jax.random.PRNGKey(1), (2, 16, 16, 3))
  sigma = jnp.array([0.5, 5.0])
  variables = random_variables(model, x, sigma)
  eval_out = jax.jit(lambda: model.apply(variables, x, sigma, train=False))()
  assert np.all(np.isfinite(eval_out)) and np.abs(eval_out).max() > 1e-3
  train_fn = jax.jit(lambda rng: model.apply(variables, x, sigma, train=True, rngs={"dropout": rng}))
  train_a, train_b = train_fn(jax.random.PRNGKey(2)), train_fn(jax.random.PRNGKey(3))
  assert not np.allclose(train_a, train_b)
  assert not np.allclose(train_a, eval_out)
  with pytest.raises(Exception):  # noqa: B017 -- flax's error when the caller gives no 'dropout' rng
    jax.eval_shape(lambda: model.apply(variables, x, sigma, train=True))


def test_unknown_architecture_option_is_a_value_error():
  config = tiny_config(progressive="sideways")
  with pytest.raises(ValueError, match="progressive"):
    jax.eval_shape(lambda: init_model(jax.random.PRNGKey(0), config))


def test_mlp_input_fourier_features():
  """sin / cos(pi 2^k x) of every coordinate beside x; 0 frequencies is the plain MLP (fewer weights)."""
  from score_jax.networks.mlp import MLPScoreModel
  x = jnp.array([[0.25, -0.5]])
  features = MLPScoreModel(input_frequencies=2).bind({})._input_features(x)
  angles = np.pi * np.array([[0.25, 0.5], [-0.5, -1.0]])  # coordinate x frequency
  np.testing.assert_allclose(features, np.concatenate([[0.25, -0.5], np.sin(angles).ravel(), np.cos(angles).ravel()])[None],
                             atol=1e-6)
  count = lambda k: sum(a.size for a in jax.tree_util.tree_leaves(jax.eval_shape(
      lambda: MLPScoreModel(hidden=8, num_layers=1, embedding_dim=8, input_frequencies=k).init(
          jax.random.key(0), jnp.zeros((1, 2)), jnp.ones((1,))))))
  assert count(2) - count(0) == 8 * 2 * 2 * 2  # the first layer's extra inputs: 2 coordinates x 2 frequencies x 2


NETWORK_MODULES = ["ddpm", "mlp", "ncsnpp", "ncsnv2", "wideresnet", "layers", "normalization",
                   "up_or_down_sampling", "registry", "edm2"]


def test_networks_know_nothing_of_sdes_or_parameterizations():
  """Dependencies point one way: importing any plain network (a fresh interpreter) loads neither the SDE
  module nor the parameterizations nor the score model that pairs them."""
  script = ("import sys\n"
            f"for name in {NETWORK_MODULES!r}:\n"
            "  __import__('score_jax.networks.' + name)\n"
            "print(' '.join(sorted(sys.modules)))\n")
  result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
  loaded = set(result.stdout.split())
  assert {f"score_jax.networks.{name}" for name in NETWORK_MODULES} <= loaded
  assert not loaded & {"score_jax.sde", "score_jax.parameterization", "score_jax.models.score_model"}, loaded
