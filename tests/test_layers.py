"""Layers and resampling ops against the reference's `sde_ops.npz` fixtures."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from score_jax.networks import layers, normalization
from score_jax.networks import up_or_down_sampling as resample


@pytest.fixture(scope="module")
def ops(refcheck):
  return refcheck("sde_ops")


def _nhwc(x):
  return jnp.asarray(x.transpose(0, 2, 3, 1))


def _assert_close_nchw(out, ref, rtol=1e-5):
  out = np.asarray(out).transpose(0, 3, 1, 2)
  assert out.shape == ref.shape
  np.testing.assert_allclose(out, ref, atol=rtol * np.abs(ref).max(), rtol=0)


@pytest.mark.parametrize("name, fn", [
    ("upsample_2d_fir", lambda x: resample.upsample_2d(x, (1, 3, 3, 1))),
    ("downsample_2d_fir", lambda x: resample.downsample_2d(x, (1, 3, 3, 1))),
    ("naive_upsample_2d", resample.naive_upsample_2d),
    ("naive_downsample_2d", resample.naive_downsample_2d),
])
def test_resampling_matches_reference(ops, name, fn):
  _assert_close_nchw(fn(_nhwc(ops["ops/input_nchw"])), ops[f"ops/{name}"])


def test_conv_downsample_matches_reference(ops):
  w = jnp.asarray(ops["ops/conv_weight_oihw"].transpose(2, 3, 1, 0))
  out = resample.conv_downsample_2d(_nhwc(ops["ops/input_nchw"]), w, k=(1, 3, 3, 1))
  _assert_close_nchw(out, ops["ops/conv_downsample_2d_fir"])


def test_upsample_conv_is_upsample_then_conv_inside_the_border():
  # The fused op (it crashes in the PyTorch port: docs/differences.md#fir-upsample-conv) equals FIR upsampling
  # + SAME conv away from a 1-pixel border.
  x = jax.random.normal(jax.random.PRNGKey(0), (1, 6, 6, 3))
  w = jax.random.normal(jax.random.PRNGKey(1), (3, 3, 3, 4))
  fused = resample.upsample_conv_2d(x, w)
  unfused = jax.lax.conv_general_dilated(resample.upsample_2d(x), w, (1, 1), "SAME",
                                         dimension_numbers=("NHWC", "HWIO", "NHWC"))
  assert fused.shape == (1, 12, 12, 4)
  np.testing.assert_allclose(fused[:, 1:-1, 1:-1], unfused[:, 1:-1, 1:-1], atol=1e-4)


def test_fir_upsampling_keeps_constants():
  x = jnp.ones((1, 4, 4, 2))
  np.testing.assert_allclose(resample.upsample_2d(x)[:, 2:-2, 2:-2], 1.0, atol=1e-6)


@pytest.mark.parametrize("dim", [16, 15])
def test_timestep_embedding_matches_reference(ops, dim):
  out = layers.get_timestep_embedding(jnp.asarray(ops["ops/timestep_embedding_t"]), dim)
  ref = ops[f"ops/timestep_embedding_dim{dim}"]
  np.testing.assert_allclose(out, ref, atol=1e-5 * np.abs(ref).max(), rtol=0)


def test_fourier_projection_of_log_sigma_matches_reference(ops):
  w = ops["ops/fourier_W"]
  module = layers.GaussianFourierProjection(embedding_size=w.shape[0])
  out = module.apply({"constants": {"W": jnp.asarray(w)}}, jnp.log(jnp.asarray(ops["ops/fourier_sigma"])))
  ref = ops["ops/fourier_of_log_sigma"]
  np.testing.assert_allclose(out, ref, atol=2e-5 * np.abs(ref).max(), rtol=0)


def test_fourier_weights_are_constants_not_params():
  variables = layers.GaussianFourierProjection(8, 16.0).init(jax.random.PRNGKey(0), jnp.ones((2,)))
  assert set(variables) == {"constants"}
  assert 10.0 < float(jnp.std(variables["constants"]["W"])) * 2 < 100.0  # scale 16


def test_default_init_zero_scale_is_tiny_not_zero():
  # init_scale 0 means variance scaling with 1e-10, as in the reference (docs/differences.md#zero-init-scale).
  w = layers.default_init(0.0)(jax.random.PRNGKey(0), (64, 64))
  assert 0 < float(jnp.abs(w).max()) < 1e-4


def test_attention_block_names_and_residual():
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 4, 4, 8))
  block = layers.AttnBlockpp(skip_rescale=True)
  variables = block.init(jax.random.PRNGKey(1), x)
  assert sorted(variables["params"]) == ["GroupNorm_0", "NIN_0", "NIN_1", "NIN_2", "NIN_3"]
  # The output NIN is 1e-10-initialised, so the block is (x + ~0) / sqrt(2).
  np.testing.assert_allclose(block.apply(variables, x), x / np.sqrt(2), atol=1e-5)


def test_biggan_block_dropout_uses_the_train_flag():
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 8, 8, 8))
  temb = jnp.ones((2, 16))
  block = layers.ResnetBlockBigGANpp(out_ch=16, down=True, fir=True, dropout=0.5, init_scale=1.0)
  shapes = jax.eval_shape(lambda: block.init(jax.random.PRNGKey(1), x, temb))  # compiling init is slow on CPU
  rng = np.random.default_rng(0)
  variables = jax.tree_util.tree_map(lambda s: jnp.asarray(rng.normal(0.0, 0.3, s.shape), jnp.float32), shapes)
  assert sorted(variables["params"]) == ["Conv_0", "Conv_1", "Conv_2", "Dense_0", "GroupNorm_0", "GroupNorm_1"]
  eval_out = block.apply(variables, x, temb, train=False)
  assert eval_out.shape == (2, 4, 4, 16)
  train_fn = jax.jit(lambda rng: block.apply(variables, x, temb, train=True, rngs={"dropout": rng}))
  train_a, train_b = train_fn(jax.random.PRNGKey(2)), train_fn(jax.random.PRNGKey(3))
  assert not np.allclose(train_a, train_b)
  np.testing.assert_allclose(block.apply(variables, x, temb, train=False), eval_out)


# --- NCSN / NCSNv2 normalisation and fusion (docs/differences.md#instance-norm-variance, #ncsnv2-resize) -----

def _instance_norm_variables(ops):
  return {"params": {name: jnp.asarray(ops[f"ops/instancenormpp_{name}"]).reshape(1, 1, 1, -1)
                     for name in ("alpha", "gamma", "beta")}}


def test_instance_norm_plus_matches_pytorch_with_unbiased_channel_variance(ops):
  x = _nhwc(ops["ops/input_nchw"])
  out = normalization.InstanceNorm2dPlus(unbiased_channel_var=True).apply(_instance_norm_variables(ops), x)
  _assert_close_nchw(out, ops["ops/instancenormpp_out"])


def test_instance_norm_plus_default_is_the_jax_original_biased_variance(ops):
  # The JAX original's biased variance of the channel means differs from PyTorch by a few per cent.
  x = _nhwc(ops["ops/input_nchw"])
  out = np.asarray(normalization.InstanceNorm2dPlus().apply(_instance_norm_variables(ops), x)).transpose(0, 3, 1, 2)
  ref = ops["ops/instancenormpp_out"]
  relative = np.abs(out - ref).max() / np.abs(ref).max()
  assert 1e-3 < relative < 0.2


def test_conditional_instance_norm_plus_matches_pytorch(ops):
  embed = jnp.asarray(ops["ops/cond_instancenormpp_embed"])
  module = normalization.ConditionalInstanceNorm2dPlus(num_classes=embed.shape[0], unbiased_channel_var=True)
  out = module.apply({"params": {"Embed_0": {"embedding": embed}}}, _nhwc(ops["ops/input_nchw"]),
                     jnp.asarray(ops["ops/cond_instancenormpp_labels"]))
  _assert_close_nchw(out, ops["ops/cond_instancenormpp_out"])


def test_conditional_instance_norm_init():
  module = normalization.ConditionalInstanceNorm2dPlus(num_classes=5)
  table = module.init(jax.random.PRNGKey(0), jnp.ones((1, 4, 4, 8)), jnp.zeros((1,), jnp.int32))
  table = np.asarray(table["params"]["Embed_0"]["embedding"])
  assert table.shape == (5, 24)
  np.testing.assert_allclose(table[:, :16].mean(), 1.0, atol=0.02)
  np.testing.assert_array_equal(table[:, 16:], 0.0)


def test_msf_resize_is_half_pixel_bilinear(ops):
  # The JAX original (and score_jax) resize with half-pixel centres, PyTorch with align_corners=True.
  x = _nhwc(ops["ops/msf_input_4x4"])
  out = jax.image.resize(x, (x.shape[0], 8, 8, x.shape[-1]), "bilinear")
  _assert_close_nchw(out, ops["ops/bilinear_align_corners_false_8x8"])


@pytest.mark.parametrize("shape", [(2, 8, 8, 32), (1, 4, 6, 16)])
def test_fused_attention_equals_the_written_out_attention(shape):
  """`jax.nn.dot_product_attention` (the block's attention) equals softmax(q k^T / sqrt(C)) v written out."""
  keys = jax.random.split(jax.random.PRNGKey(1), 4)
  batch, height, width, channels = shape
  q, k, v = (3.0 * jax.random.normal(key, (batch, height * width, 1, channels)) for key in keys[:3])
  np.testing.assert_allclose(layers.attention(q, k, v), layers.reference_attention(q, k, v), rtol=1e-5, atol=1e-5)
  # The whole block against its written-out form with the same parameters.
  x = jax.random.normal(keys[3], shape)
  block = layers.AttnBlockpp(init_scale=1.0)
  params = block.init(keys[0], x)["params"]
  h = layers.group_norm(channels, None).apply({"params": params["GroupNorm_0"]}, x)
  nin = lambda i, y: jnp.tensordot(y, params[f"NIN_{i}"]["W"], axes=1) + params[f"NIN_{i}"]["b"]
  flat = lambda y: y.reshape(batch, height * width, 1, channels)
  attended = layers.reference_attention(flat(nin(0, h)), flat(nin(1, h)), flat(nin(2, h))).reshape(shape)
  np.testing.assert_allclose(block.apply({"params": params}, x), x + nin(3, attended), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["ncsnpp", "ddpm"])
def test_remat_keeps_names_and_gradients(name):
  """`model.remat`: the same variables (names and shapes: checkpoints unchanged), the residual blocks under
  `remat` (jax.checkpoint) in the gradient's jaxpr, and the gradients of remat off to float32 rounding on the
  same parameters, inputs and dropout rng (the recomputed blocks draw the same dropout masks)."""
  from score_jax.models import get_model, get_network_fn, init_model
  from tests.test_mixed_precision import _config, _labels, random_variables
  config = _config(name)
  config.model.dropout = 0.5
  variables = random_variables(config)
  config.model.remat = True
  rematted = jax.eval_shape(lambda: init_model(jax.random.PRNGKey(0), config))
  assert jax.tree_util.tree_structure(variables) == jax.tree_util.tree_structure(rematted)
  assert jax.tree_util.tree_map(lambda a: a.shape, variables) == jax.tree_util.tree_map(lambda a: a.shape, rematted)
  x = jax.random.normal(jax.random.PRNGKey(1), (2, config.data.image_size, config.data.image_size, 3))
  labels = _labels(name)[:2]

  def traced_grad(remat):
    config.model.remat = remat
    model = get_model(config)
    loss = lambda variables, x: jnp.sum(get_network_fn(model, variables, train=True,
                                                       rng=jax.random.PRNGKey(2))(x, labels) ** 2)
    return jax.jit(jax.grad(loss)).trace(variables, x)

  with_remat, without_remat = traced_grad(True), traced_grad(False)
  assert str(with_remat.jaxpr).count("remat") >= 4  # every residual block (2 per level here, 2 in the middle)
  assert "remat" not in str(without_remat.jaxpr)
  grads = [traced.lower().compile()(variables, x) for traced in (with_remat, without_remat)]
  differences = jax.tree_util.tree_map(lambda a, b: float(jnp.max(jnp.abs(a - b))), *grads)
  scale = max(float(jnp.max(jnp.abs(b))) for b in jax.tree_util.tree_leaves(grads[1]))
  assert max(jax.tree_util.tree_leaves(differences)) <= 1e-6 * scale, differences  # seen: 1.1e-7 of the largest
