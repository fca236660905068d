"""The noise-conditional Wide ResNet classifier: size, conditioning, normalisation, use as a guide."""

import jax
import jax.numpy as jnp
import numpy as np

from score_jax import controllable
from score_jax.networks import wideresnet


def count(tree):
  return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(tree))


def test_wrn_28_10_has_the_reference_size():
  variables = jax.eval_shape(wideresnet.WideResnet().init, jax.random.key(0), jnp.zeros((1, 32, 32, 3)),
                             jnp.ones((1,)))
  # The reference network's count, 38,913,242 = parameters + the 128 frozen Fourier frequencies.
  assert count(variables["params"]) == 38_913_114
  assert count(variables) == 38_913_242


def test_small_wrn_is_noise_conditional_and_normalises_its_input_once():
  model = wideresnet.WideResnet(blocks_per_group=1, channel_multiplier=1, num_outputs=4)
  x = jax.random.uniform(jax.random.key(1), (3, 8, 8, 3))
  sigma = jnp.array([0.1, 1.0, 10.0])
  variables = jax.jit(model.init)(jax.random.key(2), x, sigma)
  apply = jax.jit(model.apply)  # one compilation instead of op-by-op dispatch
  logits = apply(variables, x, sigma)
  assert logits.shape == (3, 4) and np.isfinite(logits).all()
  # Per-image standardisation: an affine change of the pixel values does not change the logits.
  np.testing.assert_allclose(apply(variables, 2 * x - 1, sigma), logits, rtol=1e-4, atol=1e-4)
  assert not np.allclose(apply(variables, x, 2 * sigma), logits, atol=1e-4)
  # Sample i's logits depend on sample i only (GroupNorm is per sample).
  np.testing.assert_allclose(apply(variables, x[1:], sigma[1:]), logits[1:], rtol=1e-5, atol=1e-5)

  # As a guide: grad_x log p(y | x(t)) with sigma = std(t), shaped like x.
  logit_fn = lambda x, t: model.apply(variables, x, t)  # here t stands for the noise level itself
  grad = jax.jit(controllable.classifier_log_prob_grad_fn(logit_fn))(x, sigma, jnp.array([0, 1, 3]))
  assert grad.shape == x.shape and np.isfinite(grad).all() and np.abs(grad).max() > 0
