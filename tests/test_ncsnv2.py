"""NCSNv2 / NCSN RefineNets: the JAX original's topology (docs/differences.md#ncsnv2-64-width), and NCSN v1
(docs/differences.md#ncsn-v1-builds)."""

import importlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from score_jax.models import get_model


def small_config(name, image_size, nf=16):
  config = importlib.import_module("configs.ve.ncsnv2.cifar10").get_config()
  config.model.name = name
  config.model.nf = nf
  config.data.image_size = image_size
  return config


def shapes_and_count(config, image_size, batch=2):
  model = get_model(config)
  x, labels = jnp.zeros((batch, image_size, image_size, 3)), jnp.zeros((batch,), jnp.int32)
  variables = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), x, labels))
  out = jax.eval_shape(lambda v: model.apply(v, x, labels), variables)
  return out.shape, sum(int(np.prod(a.shape)) for a in jax.tree_util.tree_leaves(variables))


def test_ncsnv2_64_has_the_jax_original_width():
  # The JAX original's width: 533,299 parameters at nf 16 (the PyTorch port's narrower decoder has 466,451).
  shape, count = shapes_and_count(small_config("ncsnv2_64", 32), 32)
  assert shape == (2, 32, 32, 3)
  assert count == 533_299


@pytest.mark.parametrize("name, image_size", [("ncsnv2_128", 64), ("ncsnv2_256", 64), ("ncsn", 32)])
def test_refinenets_build(name, image_size):
  shape, count = shapes_and_count(small_config(name, image_size, nf=8), image_size)
  assert shape == (2, image_size, image_size, 3) and count > 0


def test_ncsn_is_noise_conditional():
  # NCSN v1 builds here (in neither reference), one conditional-norm class per noise scale.
  config = small_config("ncsn", 16, nf=8)
  config.model.num_scales = 10
  model = get_model(config)
  x = jax.random.uniform(jax.random.PRNGKey(0), (2, 16, 16, 3))
  shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), x, jnp.zeros((2,), jnp.int32)))
  rng = np.random.default_rng(0)
  variables = jax.tree_util.tree_map(lambda s: jnp.asarray(rng.normal(1.0, 0.3, s.shape), jnp.float32), shapes)
  embeddings = [leaf for path, leaf in jax.tree_util.tree_leaves_with_path(variables) if "Embed" in str(path)]
  assert embeddings and all(e.shape[0] == 10 for e in embeddings)
  apply = jax.jit(lambda labels: model.apply(variables, x, labels))
  same, other = apply(jnp.array([3, 3])), apply(jnp.array([3, 7]))
  np.testing.assert_allclose(same[0], other[0], rtol=1e-5, atol=1e-5)
  assert not np.allclose(same[1], other[1])
