"""Losses against the reference's numbers and closed forms; optimizer and EMA semantics."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from score_jax import models, objectives, optim, sde as sde_lib
from score_jax.objectives import discrete, dsm
from score_jax.models import get_model_fn, get_score_fn
from score_jax.train_state import init_train_state
from score_jax.train_steps import get_train_step
from score_jax.models import get_model
from tests.helpers import ReferenceToyModel, nhwc, tiny_toy_config

FIXTURE_SDES = {"vp": sde_lib.VPSDE(0.1, 20.0, 10), "subvp": sde_lib.subVPSDE(0.1, 20.0, 10),
                "ve": sde_lib.VESDE(0.01, 50.0, 10)}


@pytest.mark.parametrize("name", ["vp", "subvp", "ve"])
@pytest.mark.parametrize("likelihood_weighting", [False, True])
@pytest.mark.parametrize("reduce_mean", [False, True])
def test_dsm_loss_replays_reference(refcheck, name, likelihood_weighting, reduce_mean):
  ref = refcheck("toy_pipelines")
  case = f"loss/sde/{name}/lw{int(likelihood_weighting)}_rm{int(reduce_mean)}"
  sde = FIXTURE_SDES[name]
  data = nhwc(ref["inputs/data_01" if name == "ve" else "inputs/data_centered"])
  eps = 1e-5
  t = jnp.asarray(ref[f"{case}/draw000"]) * (sde.T - eps) + eps  # torch.rand * (T - eps) + eps
  z = nhwc(ref[f"{case}/draw001"])
  score_fn = get_score_fn(sde, ReferenceToyModel(), {}, continuous=True)
  out = dsm.dsm_loss(score_fn, sde, data, t, z, reduce_mean=reduce_mean,
                        likelihood_weighting=likelihood_weighting)
  np.testing.assert_allclose(out.loss, ref[f"{case}/out0"], rtol=2e-6)


def test_smld_and_ddpm_losses_replay_reference(refcheck):
  ref = refcheck("toy_pipelines")
  model_fn = get_model_fn(ReferenceToyModel(), {})
  out = discrete.smld_loss(model_fn, FIXTURE_SDES["ve"], nhwc(ref["inputs/data_01"]),
                         jnp.asarray(ref["loss/smld/ve/draw000"]), nhwc(ref["loss/smld/ve/draw001"]))
  np.testing.assert_allclose(out.loss, ref["loss/smld/ve/out0"], rtol=2e-6)
  # The reference's DDPM case has no number to replay: at N = 10, beta_i = beta_max / N reaches 2, so
  # prod(1 - beta_i) < 0 from i = 5 on, and label 9 (of the drawn 4, 9) reads its square root, NaN.
  labels = ref["loss/ddpm/vp/draw000"]
  x0, z = (np.asarray(nhwc(ref[key]), np.float32) for key in ("inputs/data_centered", "loss/ddpm/vp/draw001"))
  assert np.isnan(ref["loss/ddpm/vp/out0"]) and list(labels) == [4, 9]
  with warnings.catch_warnings():
    warnings.simplefilter("error")  # the table refuses; no NaN on the way
    with pytest.raises(ValueError, match="beta_max"):
      discrete.ddpm_loss(model_fn, FIXTURE_SDES["vp"], x0, jnp.asarray(labels), z)
  # At N = beta_max (the least that model.num_scales allows): Ho et al.'s Eq. (14), in float64.
  abar = np.cumprod(1.0 - np.linspace(0.1 / 20, 20.0 / 20, 20))[labels][:, None, None, None]
  perturbed = np.sqrt(abar) * x0.astype(np.float64) + np.sqrt(1.0 - abar) * z.astype(np.float64)
  expected = np.mean((np.tanh(0.5 * perturbed) + 0.001 * labels[:, None, None, None] - z)**2)
  out = discrete.ddpm_loss(model_fn, sde_lib.VPSDE(0.1, 20.0, 20), x0, jnp.asarray(labels), z)
  np.testing.assert_allclose(out.loss, expected, rtol=2e-6)


@pytest.mark.parametrize("name", ["vp", "subvp", "ve"])
def test_dsm_loss_of_exact_gaussian_score_is_closed_form(name):
  """For x0 ~ N(0, s^2), E||std * score + z||^2 / D = m^2 s^2 / (m^2 s^2 + std^2), and any other
  score does worse."""
  sde = sde_lib.VPSDE() if name == "vp" else sde_lib.subVPSDE() if name == "subvp" else sde_lib.VESDE()
  s, n, dim = 0.7, 20000, 4
  t = jnp.full((n,), 0.3)
  mean_scale = sde.marginal_prob(jnp.ones((1, 1)), t[:1])[0][0, 0]
  std = sde.marginal_prob(jnp.ones((1, 1)), t[:1])[1][0]
  var = mean_scale**2 * s**2 + std**2
  k1, k2 = jax.random.split(jax.random.PRNGKey(0))
  x0 = s * jax.random.normal(k1, (n, dim))
  z = jax.random.normal(k2, (n, dim))
  exact = lambda x, t: -x / var
  out = dsm.dsm_loss(exact, sde, x0, t, z, reduce_mean=True)
  expected = mean_scale**2 * s**2 / var
  standard_error = np.std(out.per_example) / np.sqrt(n)
  assert abs(float(out.loss) - float(expected)) < 4 * standard_error + 1e-6
  worse = dsm.dsm_loss(lambda x, t: 1.1 * exact(x, t), sde, x0, t, z, reduce_mean=True)
  assert float(worse.loss) > float(out.loss)
  summed = dsm.dsm_loss(exact, sde, x0, t, z, reduce_mean=False)
  np.testing.assert_allclose(summed.loss, 0.5 * dim * out.loss, rtol=1e-5)  # the reference's 0.5 * sum


def test_per_example_randomness_does_not_depend_on_batch_size():
  config = tiny_toy_config()
  sde = sde_lib.VPSDE(N=20)
  model = get_model(config)
  state = init_train_state(models.init_model(jax.random.PRNGKey(0), config), optax.adam(1e-3))
  loss_fn = objectives.get_loss_fn(objectives.get_objective(config, sde, model), train=False)
  batch = jax.random.normal(jax.random.PRNGKey(1), (8, 2))
  rng = jax.random.PRNGKey(2)
  big = loss_fn(rng, state.variables(), batch).per_example
  small = loss_fn(rng, state.variables(), batch[:4]).per_example
  np.testing.assert_allclose(big[:4], small, rtol=1e-6)


def _reference_adam(grads_seq, params, lr, warmup, clip, beta1=0.9, beta2=0.999, eps=1e-8):
  """The reference's optimize_fn + flax.optim.Adam, step by step, in numpy float64."""
  m = np.zeros_like(params)
  v = np.zeros_like(params)
  for step, g in enumerate(grads_seq):
    g = g * clip / max(np.linalg.norm(g), clip)
    m = beta1 * m + (1 - beta1) * g
    v = beta2 * v + (1 - beta2) * g**2
    m_hat = m / (1 - beta1 ** (step + 1))
    v_hat = v / (1 - beta2 ** (step + 1))
    params = params - lr * min(step / warmup, 1.0) * m_hat / (np.sqrt(v_hat) + eps)
  return params


def test_optimizer_matches_reference_warmup_and_clipping():
  config = tiny_toy_config(**{"optim.lr": 0.1, "optim.warmup": 3, "optim.grad_clip": 1.0, "optim.schedule": "constant"})
  optimizer = optim.get_optimizer(config)
  rng = np.random.default_rng(0)
  grads_seq = [rng.normal(size=5) * scale for scale in (3.0, 0.1, 2.0, 0.5, 4.0)]
  params = jnp.asarray(rng.normal(size=5), jnp.float32)
  opt_state = optimizer.init(params)
  first = None
  for g in grads_seq:
    updates, opt_state = optimizer.update(jnp.asarray(g, jnp.float32), opt_state, params)
    params_next = optax.apply_updates(params, updates)
    if first is None:
      first = params_next
      np.testing.assert_array_equal(first, params)  # the first update has learning rate 0, as in the reference
    params = params_next
  expected = _reference_adam(grads_seq, np.asarray(first, np.float64), 0.1, 3, 1.0)
  np.testing.assert_allclose(params, expected, rtol=1e-5, atol=1e-6)


def test_train_step_updates_ema_and_derives_rng_from_step():
  config = tiny_toy_config(**{"optim.warmup": 0})
  sde = sde_lib.VPSDE(N=20)
  model = get_model(config)
  optimizer = optim.get_optimizer(config)
  state = init_train_state(models.init_model(jax.random.PRNGKey(0), config), optimizer)
  step = jax.jit(get_train_step(objectives.get_objective(config, sde, model), optimizer, ema_rate=0.9,
                                rng=jax.random.PRNGKey(3)))
  batch = jax.random.normal(jax.random.PRNGKey(1), (16, 2))
  new_state, loss = step(state, batch)
  assert int(new_state.step) == 1 and np.isfinite(loss)
  leaves = jax.tree_util.tree_leaves
  for old, new, ema in zip(leaves(state.params), leaves(new_state.params), leaves(new_state.ema_params)):
    np.testing.assert_allclose(ema, 0.9 * old + 0.1 * new, rtol=1e-5, atol=1e-7)
  # Same state and batch -> same loss; a different step number -> different noise.
  _, again = step(state, batch)
  _, other = step(state.replace(step=state.step + 7), batch)
  assert float(again) == float(loss) and float(other) != float(loss)


def test_discrete_loss_errors():
  model = ReferenceToyModel()
  with pytest.raises(ValueError, match="subVPSDE"):
    objectives.get_objective(tiny_toy_config(**{"training.continuous": False}), sde_lib.subVPSDE(), model)
  with pytest.raises(ValueError, match="likelihood_weighting"):
    objectives.get_objective(tiny_toy_config(**{"training.continuous": False, "training.likelihood_weighting": True}),
                             sde_lib.VPSDE(), model)
