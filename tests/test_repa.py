"""REPA (`objectives.repa`, `feature_encoders`): the term against numpy, where its gradient goes, REPA off leaves a
run as it was, a few driver steps of a tiny DiT on the digits, refusals."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from score_jax import feature_encoders, models, objectives, run_setup, trained_model
from score_jax.metrics import digits
from score_jax.objectives import repa
from tests.helpers import save_untrained_run, tiny_toy_config


def tiny_repa(**overrides):
  """A tiny DiT (2 blocks of width 16, patch 2: 16 tokens) on the 8x8 digits with REPA on block 1."""
  values = {"model.name": "dit", "data.dim": 0, "data.dataset": "digits", "data.image_size": 8,
            "data.num_channels": 1, "model.hidden_size": 16, "model.depth": 2, "model.num_heads": 2,
            "model.patch_size": 2, "training.sde": "vpsde", "training.n_jitted_steps": 2, "training.batch_size": 8,
            "optim.warmup": 0, "training.repa_weight": 0.5, "training.repa_depth": 1, "training.repa_hidden": 32,
            "training.repa_encoder": "digits"}
  return tiny_toy_config(**{**values, **overrides})


def perturbed(variables, scale=0.3):
  """Every weight redrawn N(0, scale^2): adaLN-Zero's zero gates hide nothing."""
  leaves, tree = jax.tree.flatten(variables)
  keys = jax.random.split(jax.random.key(1), len(leaves))
  return jax.tree.unflatten(tree, [scale * jax.random.normal(k, a.shape) for k, a in zip(keys, leaves)])


def numpy_projector(params, tokens):
  silu = lambda h: h / (1.0 + np.exp(-h))  # noqa: E731
  dense = lambda h, layer: h @ np.asarray(params[layer]["kernel"]) + np.asarray(params[layer]["bias"])  # noqa: E731
  return dense(silu(dense(silu(dense(tokens, "Dense_0")), "Dense_1")), "Dense_2")


def test_repa_term_is_the_hand_computation():
  """lambda * mean over tokens of -cos(h_phi(h), y), per example, with the features on the token grid."""
  config = run_setup.prepare_config(tiny_repa(**{"training.repa_weight": 0.7}))
  settings = objectives.LossConfig.from_config(config).repa
  model = models.get_model(config)
  variables = jax.jit(lambda key: perturbed(models.init_network(key, model, (8, 8, 1))))(jax.random.key(0))
  tokens = tuple(jax.random.normal(jax.random.key(i), (3, 16, 16)) for i in (2, 3))
  features = np.asarray(jax.random.normal(jax.random.key(4), (3, 4, 4, 64)))
  feature_encoders.ENCODERS["fixed"] = feature_encoders.FeatureEncoder(64, lambda v, images: v, lambda c: None)
  try:
    term = repa.repa_term(dataclasses.replace(settings, encoder="fixed"), model, variables, tokens,
                          jnp.zeros((3, 8, 8, 1)), jnp.asarray(features))
  finally:
    del feature_encoders.ENCODERS["fixed"]
  projected = numpy_projector(variables["params"]["repa_projector"], np.asarray(tokens[0]))  # block 1
  y = features.reshape(3, 16, 64)
  cosine = np.sum(projected * y, -1) / (np.linalg.norm(projected, axis=-1) * np.linalg.norm(y, axis=-1))
  np.testing.assert_allclose(term, -0.7 * cosine.mean(-1), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("objective", ["edm", "dsm"])
def test_gradients_reach_the_projector_and_the_first_blocks_not_the_encoder(objective):
  """d(REPA term): nonzero for the projector and blocks 1..repa_depth, zero for later blocks, the output layer and
  the frozen encoder; the term is the loss's difference from the objective's alone."""
  config = run_setup.prepare_config(tiny_repa(**{"model.depth": 3, "training.repa_depth": 2,
                                                 "training.objective": objective}))
  run = run_setup.RunSetup(config, companions=())
  params = jax.jit(lambda key: perturbed(run.initial_state(key).params))(jax.random.key(0))
  encoder = digits.load_variables()
  batch = jax.random.uniform(jax.random.key(5), (4, 8, 8, 1), minval=-1.0, maxval=1.0)
  loss_fn = objectives.get_loss_fn(run.objective, train=True)

  plain_fn = objectives.get_loss_fn(run.objective, train=False)

  @jax.jit
  def check(params, encoder):
    repa_of = lambda p, e: loss_fn(jax.random.key(6), {"params": p}, batch, {"step": 0, "repa_encoder": e})  # noqa: E731
    grads = jax.grad(lambda p, e: repa_of(p, e).terms["repa"], argnums=(0, 1))(params, encoder)
    return grads, repa_of(params, encoder), plain_fn(jax.random.key(6), {"params": params}, batch)

  (grads, encoder_grads), loss, plain = check(params, encoder)
  size = lambda tree: float(sum(jnp.abs(a).sum() for a in jax.tree.leaves(tree)))  # noqa: E731
  assert size(grads["repa_projector"]) > 0 and size(grads["block_0"]) > 0 and size(grads["block_1"]) > 0
  assert size(grads["patch_embed"]) > 0
  assert size(grads["block_2"]) == size(grads["final_linear"]) == size(encoder_grads) == 0
  np.testing.assert_allclose(loss.loss - loss.terms["repa"], plain.loss, rtol=1e-5)


def test_repa_off_leaves_the_run_as_before():
  """repa_weight = 0, whatever the other repa keys: no projector, no encoder, no term, the same loss as a config
  that never set them."""
  runs = [run_setup.RunSetup(tiny_repa(**{"training.repa_weight": 0.0, "training.repa_depth": 1})),
          run_setup.RunSetup(tiny_repa(**{"training.repa_weight": 0.0, "training.repa_depth": 9,
                                          "training.repa_encoder": "inception", "training.repa_hidden": 8}))]
  shapes = [jax.eval_shape(run.initial_state, jax.random.key(0)) for run in runs]
  assert "repa_projector" not in shapes[0].params and jax.tree.structure(shapes[0]) == jax.tree.structure(shapes[1])
  params = runs[0].initial_state(jax.random.key(0)).params
  batch = jax.random.uniform(jax.random.key(7), (8, 8, 8, 1)) * 2 - 1
  losses = []
  for run in runs:
    assert run.repa_encoder is None and not run._frozen and run.objective.settings.repa is None
    loss = jax.jit(objectives.get_loss_fn(run.objective, train=True))(jax.random.key(8), {"params": params}, batch,
                                                                     {"step": 0})
    assert not loss.terms or "repa" not in loss.terms
    losses.append(float(loss.loss))
  assert losses[0] == losses[1]


def test_a_tiny_dit_trains_with_repa_through_the_driver(tmp_path):
  """Two driver steps of a flow-matching DiT (rectified flow) with REPA on the digits: the encoder read once as a
  companion, the projector trained with the network; the network alone loads from the checkpoint."""
  config = tiny_repa(**{"training.sde": "rectified_flow", "model.parameterization": "flow"})
  run = run_setup.RunSetup(config)
  assert set(run._frozen) == {"repa_encoder"}
  state = run.init_state()
  initial = jax.device_get(state.params)
  state, losses = run.multi_step(state, run.train_batches(0))
  assert int(state.step) == 2 and np.isfinite(np.asarray(losses)).all()
  moved = jax.tree.map(lambda a, b: float(np.abs(a - b).max()), initial, jax.device_get(state.params))
  assert max(jax.tree.leaves(moved["repa_projector"])) > 0 and max(jax.tree.leaves(moved["block_0"])) > 0
  save_untrained_run(config, str(tmp_path))
  model, variables, step = trained_model.load_model(str(tmp_path))
  assert step == 2 and "repa_projector" in variables["params"]
  out = model.apply(variables, jnp.zeros((1, 8, 8, 1)), jnp.ones((1,)))
  assert out.shape == (1, 8, 8, 1)


@pytest.mark.parametrize("overrides, message", [
    ({"model.name": "ddpm"}, "model.name='dit' sows them, 'ddpm' does not"),
    ({"training.repa_depth": 0}, r"training.repa_depth=0 must lie in 1..model.depth=2"),
    ({"training.repa_depth": 3}, r"training.repa_depth=3 must lie in 1..model.depth=2"),
    ({"training.repa_encoder": "dinov2"}, "training.repa_encoder='dinov2' is not valid; choose one of: digits, "),
    ({"training.repa_weight": -1.0}, "training.repa_weight=-1.0 must be >= 0"),
])
def test_refusals_name_the_key(overrides, message):
  with pytest.raises(ValueError, match=message):
    run_setup.validate_config(tiny_repa(**overrides))
