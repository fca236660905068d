"""`model.dtype = "bfloat16"`: every network computes in bf16 on float32 parameters.

Checked per network on the same parameters: the output within 2e-2 (relative) of the float32
network's, every convolution and matmul of the jaxpr on bf16 operands (attention logits and
GroupNorm statistics accumulate in float32), and the parameters float32 with the float32 network's
tree (checkpoints do not change format). Training in bf16 ends near the float32 loss.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from score_jax import models
from tests.helpers import tiny_toy_config


def _config(name):
  from configs.ve import cifar10_ncsnpp_continuous
  from configs.ve.ncsn import cifar10 as ncsn
  from configs.ve.ncsnv2 import cifar10 as ncsnv2
  from configs.vp import cifar10_ddpmpp_continuous
  from configs.vp.ddpm import cifar10 as ddpm

  if name == "mlp":
    return tiny_toy_config()
  module = {"ncsnpp": cifar10_ncsnpp_continuous, "ncsnpp_pyramid": cifar10_ncsnpp_continuous,
            "ddpmpp": cifar10_ddpmpp_continuous, "ddpm": ddpm, "ncsnv2": ncsnv2, "ncsn": ncsn}[name]
  config = module.get_config()
  if name == "ncsnpp_pyramid":  # both pyramids resample with 3x3 convolutions (no FIR)
    config.model.fir, config.model.resamp_with_conv = False, True
    config.model.progressive, config.model.progressive_input = "residual", "residual"
  config.data.image_size = 16 if name.startswith("ncsn") and name != "ncsnpp" else 8
  config.model.nf = 32 if name == "ddpm" else 16  # DDPM's GroupNorm has 32 groups
  config.model.ch_mult, config.model.num_res_blocks = (1, 2), 1
  config.model.attn_resolutions = (4,)
  config.model.init_scale = 1.0  # outputs of a visible size (the reference zero-initialises the last layers)
  return config


def _labels(name):
  if name in ("ncsnv2", "ncsn"):
    return jnp.array([0, 3, 6, 9])  # sigma indices (NCSN: one class per level)
  return jnp.array([0.3, 0.9, 2.0, 7.0]) if name.startswith("ncsnpp") else jnp.array([100.0, 300.0, 600.0, 900.0])


def _network_output(config, variables, x, labels):
  model = models.get_model(config)
  network_fn = models.get_network_fn(model, variables)
  return model.parameterization.call_network(network_fn, x, labels)


def random_variables(config, seed=0):
  """Variables of `config`'s model drawn host-side (fan-in scaled normals; 0.1 normals for vectors) without
  compiling `init`, which costs more than a forward pass."""
  shapes = jax.eval_shape(lambda: models.init_model(jax.random.PRNGKey(0), config))
  rng = np.random.default_rng(seed)

  def draw(leaf):
    scale = 1.0 / np.sqrt(np.prod(leaf.shape[:-1])) if leaf.ndim >= 2 else 0.1
    return jnp.asarray(scale * rng.standard_normal(leaf.shape), leaf.dtype)
  return jax.tree_util.tree_map(draw, shapes)


# NCSN++ (FIR, both pyramids), NCSN++ with convolutional pyramids, DDPM++, the MLP, DDPM and NCSN (NCSNv2's
# blocks with conditional norms): each run in float32 and in bf16, about 2-3 s of compiles each.
NETWORKS = ["ncsnpp", "ncsnpp_pyramid", "ddpmpp", "mlp", "ddpm", "ncsn"]


@pytest.mark.parametrize("name", NETWORKS)
def test_bf16_network_matches_float32_on_bf16_operands(name):
  config = _config(name)
  variables = random_variables(config)
  x = jax.random.normal(jax.random.PRNGKey(1), (4,) + models.get_data_shape(config))
  labels = _labels(name)
  full = jax.jit(lambda v, x: _network_output(config, v, x, labels))(variables, x)
  config.model.dtype = "bfloat16"
  bf16_variables = jax.eval_shape(lambda: models.init_model(jax.random.PRNGKey(0), config))
  assert jax.tree_util.tree_structure(bf16_variables) == jax.tree_util.tree_structure(variables)
  assert all(leaf.dtype == jnp.float32 for leaf in jax.tree_util.tree_leaves(bf16_variables))
  traced = jax.jit(lambda v, x: _network_output(config, v, x, labels)).trace(variables, x)  # a new trace: bf16
  half = traced.lower().compile()(variables, x)
  assert half.dtype == jnp.float32  # cast back at the parameterization's boundary
  error = float(jnp.linalg.norm(half - full) / jnp.linalg.norm(full))
  assert 0 < error <= 2e-2, (name, error)
  operands = _jaxpr_conv_and_matmul_operands(traced.jaxpr)
  assert operands and all(dtypes == ["bfloat16", "bfloat16"] for _, dtypes in operands), [
      op for op in operands if op[1] != ["bfloat16", "bfloat16"]]


def _conv_and_matmul_operands(fn, *args):
  """(primitive, operand dtypes) of every convolution and matmul in `fn`'s jaxpr, nested ones included."""
  return _jaxpr_conv_and_matmul_operands(jax.make_jaxpr(fn)(*args))


def _jaxpr_conv_and_matmul_operands(closed_jaxpr):
  operands = []

  def collect(jaxpr):
    for eqn in jaxpr.eqns:
      if eqn.primitive.name in ("conv_general_dilated", "dot_general"):
        operands.append((eqn.primitive.name, [str(v.aval.dtype) for v in eqn.invars]))
      for param in eqn.params.values():
        inner = getattr(param, "jaxpr", None)
        if inner is not None:
          collect(getattr(inner, "jaxpr", inner))

  collect(closed_jaxpr.jaxpr)
  return operands


def test_bf16_classifier_matches_float32():
  """`classifier.dtype`: the noise-conditional WRN in bf16 on the float32 parameters."""
  from configs.classifier.digits import get_config
  from score_jax import classifier

  config = get_config()
  config.classifier.blocks_per_group, config.classifier.channel_multiplier = 1, 1
  x = jax.random.normal(jax.random.PRNGKey(1), (4, 4, 4, 1))
  sigma = jnp.array([0.1, 0.5, 1.0, 5.0])
  model = classifier.get_classifier(config)
  shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), x, sigma)
  rng = np.random.default_rng(0)  # random weights without compiling `init`
  variables = jax.tree_util.tree_map(lambda s: jnp.asarray(0.3 * rng.standard_normal(s.shape), s.dtype), shapes)
  full = jax.jit(model.apply)(variables, x, sigma)
  config.classifier.dtype = "bfloat16"
  half_model = classifier.get_classifier(config)
  bf16_variables = jax.eval_shape(half_model.init, jax.random.PRNGKey(0), x, sigma)
  assert jax.tree_util.tree_structure(bf16_variables) == jax.tree_util.tree_structure(variables)
  assert all(leaf.dtype == jnp.float32 for leaf in jax.tree_util.tree_leaves(bf16_variables))
  half = jax.jit(half_model.apply)(variables, x, sigma)
  assert half.dtype == jnp.float32
  error = float(jnp.linalg.norm(half - full) / jnp.linalg.norm(full))
  assert 0 < error <= 2e-2, error
  operands = _conv_and_matmul_operands(half_model.apply, variables, x, sigma)
  # The noise embedding's two dense layers stay float32; every convolution and the rest run in bf16.
  convs = [dtypes for name, dtypes in operands if name == "conv_general_dilated"]
  assert convs and all(dtypes == ["bfloat16", "bfloat16"] for dtypes in convs), operands
  assert sum(dtypes == ["bfloat16", "bfloat16"] for _, dtypes in operands) == len(operands) - 2, operands
  config.classifier.dtype = "float16"
  with pytest.raises(ValueError, match="classifier.dtype"):
    classifier.get_classifier(config)


def test_bf16_training_ends_near_the_float32_loss():
  """300 steps of the toy MLP, float32 against bfloat16 from the same start: final losses within 3%."""
  from score_jax.run_setup import RunSetup

  final = {}
  for dtype in ("float32", "bfloat16"):
    config = tiny_toy_config(**{"model.dtype": dtype, "training.n_jitted_steps": 10, "training.batch_size": 256})
    run = RunSetup(config)
    state = run.init_state()
    losses = []
    for step in range(0, 300, 10):
      state, block = run.multi_step(state, run.train_batches(step))
      losses.append(np.asarray(block))
    final[dtype] = float(np.mean(np.concatenate(losses)[-100:]))
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree_util.tree_leaves(state.params))
  assert abs(final["bfloat16"] - final["float32"]) <= 0.03 * final["float32"], final
