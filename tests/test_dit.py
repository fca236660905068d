"""DiT (`score_jax.networks.dit`): diffusers' recorded outputs, the paper's parameter counts, forward-mode derivatives,
chunked attention, bfloat16, the intermediate tokens, one training step; the diffusers import's refusals."""

import json
import lzma
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from score_jax import base_config, convert, models, objectives, run_setup
from score_jax import sde as sde_lib
from score_jax.networks import dit, get_network
from tests.helpers import FIXTURES, tiny_toy_config

DIT_FIXTURE = FIXTURES / "diffusers" / "dit"


def tiny_dit(**overrides):
  """A completed config of a tiny class-conditional DiT on 8x8x3 inputs (16 tokens of width 16)."""
  config = base_config.get_config()
  config.data.image_size, config.data.num_channels = 8, 3
  for key, value in {"name": "dit", "hidden_size": 16, "depth": 2, "num_heads": 2, "num_classes": 10,
                     "learn_sigma": True, **overrides}.items():
    config.model[key] = value
  return config


def perturbed_variables(network, shape, scale=0.3):
  """The network's variables redrawn N(0, scale^2), so that no zero-initialised layer (adaLN-Zero's modulation, the
  output layer) hides the rest."""
  @jax.jit
  def draw():
    variables = network.init(jax.random.key(0), jnp.zeros((1,) + shape), jnp.ones((1,)))
    leaves, tree = jax.tree.flatten(variables)
    keys = jax.random.split(jax.random.key(1), len(leaves))
    return jax.tree.unflatten(tree, [scale * jax.random.normal(k, leaf.shape) for k, leaf in zip(keys, leaves)])
  return draw()


# --- diffusers' DiTTransformer2DModel, recorded (tests/fixtures/make_dit_fixtures.py; no torch here) -------------

def hub_folder(tmp_path, class_name=None):
  """The fixture pipeline as the Hub has it (weights unpacked); `class_name` renames the transformer's class as
  the Hub's facebook/DiT-XL-2-256 does (`Transformer2DModel`, with no `norm_eps` key: diffusers' 1e-5)."""
  folder = tmp_path / "DiT-tiny"
  shutil.copytree(DIT_FIXTURE, folder)
  for packed in folder.rglob("*.safetensors.xz"):
    packed.with_suffix("").write_bytes(lzma.decompress(packed.read_bytes()))
    packed.unlink()
  if class_name:
    path = folder / "transformer" / "config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "_class_name": class_name}))
  return folder


@pytest.mark.numerical
@pytest.mark.parametrize("where, class_name", [("", None), ("transformer", None), ("", "Transformer2DModel")])
def test_imported_dit_computes_what_diffusers_computes(tmp_path, where, class_name):
  """The pipeline folder, its transformer/ alone (the pipeline's scheduler read all the same), and the Hub's class
  name: diffusers' learned-sigma transformer on fixed latents, timesteps and classes (the null class included), its
  noise channels to 1e-5 of the largest."""
  folder = hub_folder(tmp_path, class_name)
  scheduler = folder / "scheduler" / "scheduler_config.json"  # DiT's betas end at 0.02; read, not defaulted
  scheduler.write_text(json.dumps({**json.loads(scheduler.read_text()), "beta_end": 0.025}))
  config, variables = convert.load_diffusers_checkpoint(str(folder / where))
  m = config.model
  assert (m.name, m.depth, m.hidden_size, m.num_heads, m.patch_size, m.num_classes, m.learn_sigma) == \
      ("dit", 2, 16, 2, 2, 10, True)
  assert (m.time_freq_shift, m.mlp_norm_eps, config.data.image_size, config.data.num_channels) == (1.0, 0.05, 8, 4)
  assert (config.training.sde, config.training.continuous, config.data.centered) == ("vpsde", False, True)
  assert (m.beta_min, m.beta_max, m.num_scales) == pytest.approx((0.1, 25.0, 1000))  # the DDIM scheduler's betas
  recorded = np.load(DIT_FIXTURE / "forward.npz")
  model = models.get_model(config)
  model_fn = models.get_model_fn(model, variables, class_labels=jnp.asarray(recorded["class_labels"]))
  got = np.asarray(jax.jit(model_fn)(jnp.asarray(recorded["x"].transpose(0, 2, 3, 1)),
                                     jnp.asarray(recorded["timesteps"], jnp.float32))).transpose(0, 3, 1, 2)
  want = recorded["sample_f64"][:, :4]  # the learned variances (channels 4-7) are dropped
  assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max()


def test_a_hub_config_without_norm_eps_takes_diffusers_default(tmp_path):
  folder = hub_folder(tmp_path, "Transformer2DModel")
  path = folder / "transformer" / "config.json"
  path.write_text(json.dumps({k: v for k, v in json.loads(path.read_text()).items() if k != "norm_eps"}))
  config, _ = convert.load_diffusers_checkpoint(str(folder))
  assert config.model.mlp_norm_eps == 1e-5


@pytest.mark.parametrize("edit, message", [
    (lambda sd: sd.__setitem__("transformer_blocks.1.norm1.emb.class_embedder.embedding_table.weight",
                               sd["transformer_blocks.1.norm1.emb.class_embedder.embedding_table.weight"] + 1),
     "differs from transformer_blocks.0.norm1.emb"),
    (lambda sd: sd.pop("transformer_blocks.1.attn1.to_k.bias"), "missing.*to_k.bias"),
    (lambda sd: sd.__setitem__("transformer_blocks.0.norm2.weight", np.ones(16, np.float32)), "unmapped.*norm2"),
])
def test_weights_a_dit_does_not_have_are_refused(tmp_path, edit, message):
  from score_jax import safetensors_io
  folder = hub_folder(tmp_path)
  weights = folder / "transformer" / "diffusion_pytorch_model.safetensors"
  state_dict, _ = safetensors_io.read(str(weights))
  edit(state_dict)
  safetensors_io.write(str(weights), state_dict)
  with pytest.raises(ValueError, match=message):
    convert.load_diffusers_checkpoint(str(folder))


@pytest.mark.parametrize("file, key, value", [("transformer/config.json", "norm_elementwise_affine", True),
                                              ("transformer/config.json", "out_channels", 12),
                                              ("scheduler/scheduler_config.json", "prediction_type", "v_prediction"),
                                              ("scheduler/scheduler_config.json", "beta_schedule", "scaled_linear")])
def test_unsupported_dit_settings_are_named(tmp_path, file, key, value):
  folder = hub_folder(tmp_path)
  path = folder / file
  path.write_text(json.dumps({**json.loads(path.read_text()), key: value}))
  with pytest.raises(ValueError, match=f"{key}={value!r}" if key != "out_channels" else "out_channels=12"):
    convert.load_diffusers_checkpoint(str(folder))


# --- The architecture ----------------------------------------------------------------------------------------

# facebookresearch/DiT's `sum(p.numel() for p in model.parameters())` at 256 px (32x32x4 latents), 1000 classes,
# learned sigma: per block 12 D^2 + 13 D (qkv, proj, the MLP) and 6 D^2 + 6 D (adaLN), plus the patch embedding,
# the timestep MLP (256 D + D^2 + 2 D), the class table (1001 D), the final layer, and the position embedding
# (256 tokens x D), a frozen parameter there, computed here. The paper's Table 4 (33M, 130M, 458M, 675M) is the
# trainable count rounded: 32,865,056, 130,315,808, 457,840,672 and 674,834,720.
@pytest.mark.parametrize("name, reference_count, millions", [("S/2", 32_963_360, 33), ("B/2", 130_512_416, 130),
                                                             ("L/2", 458_102_816, 458), ("XL/2", 675_129_632, 675)])
def test_parameter_counts_are_the_papers(name, reference_count, millions):
  net = dit.DiT(**dit.dit_size(name), num_classes=1000, learn_sigma=True)
  shapes = jax.eval_shape(lambda: net.init(jax.random.key(0), jnp.zeros((1, 32, 32, 4)), jnp.zeros((1,))))
  count = sum(leaf.size for leaf in jax.tree.leaves(shapes))
  tokens = (32 // net.patch_size) ** 2
  assert count + tokens * net.hidden_size == reference_count
  assert round(count / 1e6) == millions, count


def test_sizes_and_settings_are_checked():
  assert dit.dit_size("B/4") == dict(depth=12, hidden_size=768, num_heads=12, patch_size=4)
  with pytest.raises(ValueError, match="'XL/3'"):
    dit.dit_size("XL/3")
  with pytest.raises(ValueError, match="model.attention"):
    get_network(tiny_dit(attention="flash"))
  with pytest.raises(ValueError, match="bfloat16 or float16"):
    get_network(tiny_dit(attention="cudnn"))


def test_scm_refuses_the_cudnn_attention():
  """sCM takes `jax.jvp` through the network; cuDNN's kernel is a custom_vjp, which forward mode refuses."""
  config = tiny_dit(attention="cudnn", dtype="bfloat16")
  config.training.objective, config.training.sde, config.model.parameterization = "scm", "cosine", "trigflow"
  with pytest.raises(ValueError, match="'xla' or 'chunked'"):
    objectives.get_objective(config, sde_lib.get_sde(config)[0], models.get_model(config))


@pytest.mark.numerical
@pytest.mark.parametrize("attention", ["xla", "chunked"])
def test_jvp_matches_central_differences(attention):
  """Forward mode through the whole network (what sCM and flow maps train through), in float64, in a direction of
  both the input and the noise label, against a central difference."""
  config = tiny_dit(depth=1, attention=attention, attention_block=5)  # 16 tokens: blocks of 5, the last padded
  network = get_network(config)
  with jax.enable_x64(True):
    variables = jax.tree.map(lambda a: a.astype(jnp.float64), perturbed_variables(network, (8, 8, 3)))
    draws = jax.random.split(jax.random.key(2), 2)
    x, dx = (jax.random.normal(k, (2, 8, 8, 3), jnp.float64) for k in draws)
    labels, dlabels = jnp.array([10.0, 700.0]), jnp.array([1.0, -2.0])
    classes = jnp.array([3, 10])
    f = lambda x, t: network.apply(variables, x, t, class_labels=classes)  # noqa: E731
    h = 1e-5

    @jax.jit
    def tangent_and_difference(x, t):
      tangent = jax.jvp(f, (x, t), (dx, dlabels))[1]
      return tangent, (f(x + h * dx, t + h * dlabels) - f(x - h * dx, t - h * dlabels)) / (2 * h)

    tangent, difference = tangent_and_difference(x, labels)
    assert float(jnp.abs(tangent).max()) > 1.0
    np.testing.assert_allclose(tangent, difference, rtol=0, atol=1e-6 * float(jnp.abs(tangent).max()))


def test_chunked_attention_is_the_full_attention_in_less_memory():
  """Equal outputs and gradients (23 queries in blocks of 5, the last padded); for 4096 tokens in blocks of 256 the
  backward pass's scratch memory is under a tenth of the full attention's (the O(N^2) logits never exist at once)."""
  q, k, v = jax.random.normal(jax.random.key(3), (3, 2, 23, 2, 8))

  def value_and_grads(attention):
    return jax.value_and_grad(lambda q, k, v: jnp.sum(jnp.sin(dit.attention(q, k, v, attention, 5))),
                              argnums=(0, 1, 2))(q, k, v)

  (value, grads), (want_value, want_grads) = jax.jit(lambda: [value_and_grads(a) for a in ("chunked", "xla")])()
  np.testing.assert_allclose(value, want_value, rtol=1e-5)
  for grad, want in zip(grads, want_grads):
    np.testing.assert_allclose(grad, want, rtol=1e-4, atol=1e-5)

  tokens = jax.ShapeDtypeStruct((1, 4096, 1, 8), jnp.float32)

  def scratch(attention):
    grad = jax.grad(lambda q, k, v: jnp.sum(dit.attention(q, k, v, attention, 256) ** 2), argnums=(0, 1, 2))
    return jax.jit(grad).lower(tokens, tokens, tokens).compile().memory_analysis().temp_size_in_bytes

  assert scratch("chunked") < scratch("xla") / 10


def test_bfloat16_runs_close_to_float32():
  x, labels = jax.random.normal(jax.random.key(4), (2, 8, 8, 3)), jnp.array([10.0, 700.0])
  variables = perturbed_variables(get_network(tiny_dit(depth=1)), (8, 8, 3))
  outputs = jax.jit(lambda v: {dtype: get_network(tiny_dit(depth=1, dtype=dtype, remat=True)).apply(v, x, labels)
                                for dtype in ("float32", "bfloat16")})(variables)
  assert outputs["bfloat16"].dtype == jnp.bfloat16 and outputs["float32"].shape == x.shape
  error = jnp.abs(outputs["bfloat16"].astype(jnp.float32) - outputs["float32"]).max()
  assert 0 < error < 0.05 * jnp.abs(outputs["float32"]).max(), error  # computed in bfloat16, to its precision


def test_each_blocks_tokens_are_sown_for_repa():
  """`intermediates["tokens"][i]` is block i + 1's output: it moves with that block's weights and not with a later
  block's; the model (network and parameterization) exposes the same tokens."""
  config = tiny_dit(depth=2)
  x, labels = jax.random.normal(jax.random.key(5), (2, 8, 8, 3)), jnp.array([10.0, 700.0])
  variables = perturbed_variables(get_network(config), (8, 8, 3))

  def moved(block):
    params = dict(variables["params"])
    params[block] = jax.tree.map(lambda a: a + 0.1, params[block])
    return {"params": params}

  @jax.jit
  def tokens(variables):
    return get_network(config).apply(variables, x, labels, mutable=["intermediates"])[1]["intermediates"]["tokens"]

  sown, after_block_0, after_block_1 = tokens(variables), tokens(moved("block_0")), tokens(moved("block_1"))
  assert len(sown) == 2 and sown[0].shape == (2, 16, 16)
  assert not np.allclose(after_block_0[0], sown[0]) and not np.allclose(after_block_1[1], sown[1])
  np.testing.assert_array_equal(after_block_1[0], sown[0])
  _, state = jax.jit(lambda v: models.get_model(config).apply(v, x, labels, mutable=["intermediates"]))(variables)
  np.testing.assert_array_equal(state["intermediates"]["tokens"][1], sown[1])


def test_sit_trains_a_step_through_the_training_path():
  """SiT (`dit` with the flow parameterization on rectified flow), class-conditional with label dropout, in bfloat16
  with remat: one real train step (the driver's step function, as test_train.py's runs)."""
  config = tiny_toy_config(**{"model.name": "dit", "data.dim": 0, "data.dataset": "digits", "data.image_size": 8,
                              "data.num_channels": 4, "model.hidden_size": 16, "model.depth": 1, "model.num_heads": 2,
                              "model.num_classes": 10, "training.class_dropout": 0.1, "model.dtype": "bfloat16",
                              "model.remat": True, "training.sde": "rectified_flow", "model.parameterization": "flow",
                              "training.n_jitted_steps": 1, "training.batch_size": 8, "optim.warmup": 0})
  run = run_setup.RunSetup(config)
  state = run.init_state()
  initial = jax.device_get(state.params)
  batch = (jax.random.normal(jax.random.key(6), (1, 8, 8, 8, 4)), jnp.arange(8)[None] % 10)
  new_state, losses = run.multi_step(state, batch)
  assert int(new_state.step) == 1 and np.isfinite(np.asarray(losses)).all()
  moved = jax.tree.map(lambda a, b: float(jnp.abs(a - b).max()), initial, jax.device_get(new_state.params))
  # adaLN-Zero: the output layer starts at zero, so the first step moves it alone (the blocks' gradients are zero).
  assert moved["final_linear"]["kernel"] > 0
  assert moved["block_0"]["adaLN_modulation"]["kernel"] == moved["final_modulation"]["kernel"] == 0


@pytest.mark.skipif(jax.default_backend() != "gpu", reason="cuDNN attention needs a GPU")
def test_cudnn_attention_is_the_xla_attention_on_a_gpu():
  config = tiny_dit(hidden_size=128, num_heads=2, dtype="bfloat16")
  x, labels = jax.random.normal(jax.random.key(7), (2, 8, 8, 3)), jnp.array([10.0, 700.0])
  variables = perturbed_variables(get_network(config), (8, 8, 3), scale=0.05)
  xla = get_network(config).apply(variables, x, labels).astype(jnp.float32)
  cudnn = get_network(tiny_dit(hidden_size=128, num_heads=2, dtype="bfloat16", attention="cudnn")).apply(
      variables, x, labels).astype(jnp.float32)
  assert jnp.abs(cudnn - xla).max() < 0.02 * jnp.abs(xla).max()
