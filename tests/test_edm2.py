"""EDM2's magnitude-preserving U-Net (`model.name = "edm2"`): magnitudes measured, forced weight normalisation,
the paper's parameter counts."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from score_jax import models, run_setup
from score_jax.networks import edm2
from tests.helpers import tiny_toy_config


def rms(x):
  return float(jnp.sqrt(jnp.mean(jnp.square(x.astype(jnp.float32)))))


def test_each_magnitude_preserving_layer_keeps_unit_variance():
  """Unit-variance Gaussian inputs give unit-variance outputs (the expectation over the random weights at init)."""
  normal = lambda key, shape: jax.random.normal(jax.random.key(key), shape)  # noqa: E731
  x = normal(0, (4096, 256))
  dense = edm2.MPConv(128, 0)
  assert abs(rms(dense.apply(dense.init(jax.random.key(1), x), x)) - 1) < 0.03
  images = normal(2, (4, 64, 64, 32))
  conv = edm2.MPConv(32, 3)
  assert abs(rms(conv.apply(conv.init(jax.random.key(3), images), images)) - 1) < 0.05  # the border's padding
  assert abs(rms(edm2.mp_silu(normal(4, (1 << 20,)))) - 1) < 0.01
  a, b = normal(5, (1 << 20,)), normal(6, (1 << 20,))
  assert abs(rms(edm2.mp_sum(a, b, 0.3)) - 1) < 0.01
  joined = edm2.mp_cat(normal(7, (4096, 48)), normal(8, (4096, 16)), 0.3)
  assert abs(rms(joined) - 1) < 0.01
  share = float(jnp.sum(jnp.square(joined[:, 48:])) / jnp.sum(jnp.square(joined)))
  assert abs(share - 0.3**2 / (0.7**2 + 0.3**2)) < 0.01  # b carries its blend share of the energy
  np.testing.assert_allclose(jnp.sqrt(jnp.mean(jnp.square(edm2.normalize(3 * images, -1)), -1)), 1.0, rtol=1e-3)
  assert abs(rms(edm2.fourier_features(normal(9, (4096,)), 256)) - 1) < 0.02


def test_the_network_at_init_keeps_unit_variance():
  """Through the whole U-Net (32 px, two levels, attention at 16 px), with the output gain at 1 instead of its
  initial 0: output RMS within 10% of 1 (measured 0.94; padding and attention averaging lose a little)."""
  net = edm2.EDM2UNet(nf=32, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(16,), num_classes=4)
  x, labels = jax.random.normal(jax.random.key(1), (4, 32, 32, 3)), jax.random.normal(jax.random.key(2), (4,))
  params = dict(net.init(jax.random.key(0), x, labels)["params"])
  assert float(net.apply({"params": params}, x, labels).std()) == 0.0  # the output gain starts at 0
  params["out_gain"] = jnp.ones(())
  out = net.apply({"params": params}, x, labels, class_labels=jnp.asarray([0, 1, 2, 4]))
  assert abs(rms(out) - 1) < 0.1, rms(out)


def edm2_config(**overrides):
  return tiny_toy_config(**{"model.name": "edm2", "data.dim": 0, "data.dataset": "blobs", "data.image_size": 8,
                            "data.num_channels": 1, "model.nf": 8, "model.ch_mult": (1, 2), "model.num_res_blocks": 1,
                            "model.attn_resolutions": (4,), "training.objective": "edm",
                            "model.parameterization": "edm", "training.loss_weighting": "uncertainty",
                            "optim.lr": 0.05, "optim.warmup": 0, **overrides})


def test_weights_stay_normalised_after_an_optimizer_step():
  """Forced weight normalisation: after a training step every magnitude-preserving weight has unit RMS per output
  channel again (Adam's step alone moves it off), while the other parameters (gains, the loss weighting's head)
  are left as the optimiser put them. In bfloat16 with remat, as a large run trains."""
  run = run_setup.RunSetup(edm2_config(**{"model.dtype": "bfloat16", "model.remat": True}))
  state = run.init_state()
  initial = jax.device_get(state.params)  # the step donates the state's buffers
  batch = jax.random.normal(jax.random.key(0), (run.config.training.n_jitted_steps, 64, 8, 8, 1))
  new_state, losses = run.multi_step(state, batch)
  assert np.isfinite(np.asarray(losses)).all()
  flat = jax.tree_util.tree_flatten_with_path(new_state.params)[0]
  weights = [(p, w) for p, w in flat if getattr(p[-1], "key", None) == edm2.WEIGHT]
  assert len(weights) > 10
  for path, w in weights:
    per_output = jnp.sqrt(jnp.mean(jnp.square(w.reshape(-1, w.shape[-1])), axis=0))
    np.testing.assert_allclose(per_output, 1.0, rtol=2e-3, err_msg=jax.tree_util.keystr(path))
  gains = [w for p, w in flat if getattr(p[-1], "key", None) in ("out_gain", "emb_gain")]
  assert any(float(jnp.abs(g)) > 0 for g in gains)  # trained, not normalised
  raw = jax.tree_util.tree_map(lambda p, u: p + 0.05 * jnp.sign(u), initial, new_state.params)
  projected = models.project_parameters(run.model, raw)
  moved = [w for p, w in jax.tree_util.tree_flatten_with_path(raw)[0] if getattr(p[-1], "key", None) == edm2.WEIGHT]
  assert any(abs(rms(w) - 1) > 1e-2 for w in moved)  # without the projection the norms drift
  assert all(abs(rms(w) - 1) < 2e-3 for p, w in jax.tree_util.tree_flatten_with_path(projected)[0]
             if getattr(p[-1], "key", None) == edm2.WEIGHT)


@pytest.mark.parametrize("name, nf, millions", [("S", 192, 280), ("M", 256, 498)])
def test_parameter_counts_are_the_papers(name, nf, millions):
  """EDM2's table: EDM2-S 280M and EDM2-M 498M parameters (class-conditional, 1000 classes; ImageNet-64's
  3 channels). Measured without the loss weighting's head: 280,209,253 and 497,803,045."""
  net = edm2.EDM2UNet(nf=nf, ch_mult=(1, 2, 3, 4), num_res_blocks=3, attn_resolutions=(16, 8), num_classes=1000)
  shapes = jax.eval_shape(lambda: net.init(jax.random.key(0), jnp.zeros((1, 64, 64, 3)), jnp.zeros((1,))))
  count = sum(x.size for x in jax.tree.leaves(shapes))
  assert round(count / 1e6) == millions, count
