"""Class-conditional models and classifier-free guidance, against a labelled Gaussian mixture in closed form.

The "network" of most tests is the exact data prediction of a 3-class Gaussian mixture under the VP SDE
(x0-parameterization, so F = D): E[x(0) | x(t), c] for a class, the mixture's for the null class. Guidance,
its interval, the samplers' guided trajectories and the NFE count are then checked against formulas and
an independent ODE solver (scipy) that never touch score_jax's guidance code.
"""

import dataclasses
import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate

from score_jax import controllable, objectives, parameterization, sampling, sde as sde_lib, toy_data
from score_jax.run_setup import validate_config
from score_jax.models import ScoreModel, get_denoiser_fn, get_score_fn, init_model
from tests.helpers import FIXTURES, tiny_toy_config
from tests.test_models import fixture_config

MEANS = np.array([[2.0, 0.0], [-1.0, 1.5], [-1.0, -1.5]])
WEIGHTS = np.array([0.5, 0.3, 0.2])
SPREAD = 0.3  # every component's standard deviation
SDE = sde_lib.VPSDE(beta_min=0.1, beta_max=20.0, N=1000)


def coeffs(t):
  mean_scale, std = SDE.marginal_coeffs(jnp.asarray(t, jnp.float32))
  return np.asarray(mean_scale, np.float64), np.asarray(std, np.float64)


def exact_denoisers(x, t, spread=SPREAD):
  """(D_k(x, t) for each class k (K, B, 2), D_null(x, t) (B, 2)) of the mixture, in float64 numpy."""
  m, std = coeffs(t)
  m, std = m[:, None], std[:, None]
  variance = m**2 * spread**2 + std**2                                   # of x(t) given the class
  per_class = np.stack([mu + m * spread**2 / variance * (x - m * mu) for mu in MEANS])
  log_density = np.stack([np.log(w) - np.sum((x - m * mu) ** 2, -1) / (2 * variance[:, 0])
                          for w, mu in zip(WEIGHTS, MEANS)])
  responsibilities = np.exp(log_density - log_density.max(0))
  responsibilities /= responsibilities.sum(0)
  return per_class, np.einsum("kb,kbd->bd", responsibilities, per_class)


def exact_guided(x, t, labels, w):
  per_class, null = exact_denoisers(x, t)
  conditional = per_class[labels, np.arange(len(labels))]
  return (1 + w) * conditional - w * null


class ExactMixture(nn.Module):
  """F(x_in, labels, class_labels) = D(x, t, c) of the mixture, for the x0 parameterization on the VP SDE."""

  num_classes: int = 3
  spread: float = SPREAD  # the components' standard deviation

  def __call__(self, x_in, labels, train=False, class_labels=None):
    t = labels / (SDE.N - 1)                                 # VP continuous labels are 999 t
    mean_scale, std, scale = parameterization.coefficients(SDE, t)
    x = x_in * scale[:, None]
    m, std = mean_scale[:, None], std[:, None]
    variance = m**2 * self.spread**2 + std**2
    means, weights = jnp.asarray(MEANS, jnp.float32), jnp.asarray(WEIGHTS, jnp.float32)
    per_class = means[:, None] + (m * self.spread**2 / variance) * (x[None] - m * means[:, None])
    log_density = jnp.log(weights)[:, None] - jnp.sum((x[None] - m * means[:, None]) ** 2, -1) / (2 * variance[:, 0])
    null = jnp.einsum("kb,kbd->bd", jax.nn.softmax(log_density, axis=0), per_class)
    if class_labels is None:
      return null
    conditional = jnp.take_along_axis(per_class, jnp.minimum(class_labels, 2)[None, :, None], axis=0)[0]
    return jnp.where((class_labels == self.num_classes)[:, None], null, conditional)


MODEL = ScoreModel(network=ExactMixture(), parameterization=parameterization.Data())


@pytest.mark.parametrize("w", [0.0, 1.0, 3.0])
def test_guided_denoiser_and_score_equal_the_closed_form(w):
  rng = np.random.default_rng(0)
  x = rng.normal(size=(6, 2)) * 1.5
  t = np.array([0.02, 0.1, 0.3, 0.5, 0.7, 0.95])
  labels = np.array([0, 1, 2, 2, 1, 0])
  denoiser = get_denoiser_fn(SDE, MODEL, {}, class_labels=labels, guidance_scale=w)
  expected = exact_guided(x, t, labels, w)
  np.testing.assert_allclose(denoiser(jnp.asarray(x, jnp.float32), jnp.asarray(t, jnp.float32)), expected,
                             rtol=2e-4, atol=2e-4)
  score_fn = get_score_fn(SDE, MODEL, {}, class_labels=labels, guidance_scale=w)
  m, std = coeffs(t)
  np.testing.assert_allclose(score_fn(jnp.asarray(x, jnp.float32), jnp.asarray(t, jnp.float32)),
                             (m[:, None] * expected - x) / std[:, None] ** 2, rtol=2e-3, atol=2e-3)
  assert score_fn.network_evaluations == (2 if w else 1)
  unconditional = get_denoiser_fn(SDE, MODEL, {})(jnp.asarray(x, jnp.float32), jnp.asarray(t, jnp.float32))
  np.testing.assert_allclose(unconditional, exact_denoisers(x, t)[1], rtol=2e-4, atol=2e-4)


def test_guidance_interval_guides_only_inside_its_noise_levels():
  x = np.random.default_rng(1).normal(size=(4, 2))
  t = np.array([0.05, 0.2, 0.5, 0.9])
  sigma = np.asarray(SDE.noise_level(jnp.asarray(t, jnp.float32)))
  interval = (float(sigma[1]) * 0.99, float(sigma[2]) * 1.01)            # t = 0.2 and 0.5 inside
  labels = np.array([1, 1, 1, 1])
  guided = get_denoiser_fn(SDE, MODEL, {}, class_labels=labels, guidance_scale=2.0, guidance_interval=interval)
  out = np.asarray(guided(jnp.asarray(x, jnp.float32), jnp.asarray(t, jnp.float32)))
  inside = np.array([False, True, True, False])
  np.testing.assert_allclose(out[inside], exact_guided(x, t, labels, 2.0)[inside], rtol=2e-4, atol=2e-4)
  np.testing.assert_allclose(out[~inside], exact_guided(x, t, labels, 0.0)[~inside], rtol=2e-4, atol=2e-4)


def test_w0_samples_the_class_conditional_distribution():
  """w = 0 is p(x | c) exactly: DPM-Solver++ on the exact denoiser gives the class's Gaussian."""
  n, label = 4000, 1
  score_fn = get_score_fn(SDE, MODEL, {}, class_labels=jnp.full((n,), label), guidance_scale=0.0)
  out = sampling.dpm_solver_sample(jax.random.PRNGKey(0), score_fn, SDE, (n, 2), steps=25)
  samples = np.asarray(out.samples)
  np.testing.assert_allclose(samples.mean(0), MEANS[label], atol=0.03)
  np.testing.assert_allclose(samples.std(0), SPREAD, rtol=0.06)


def test_guided_sampler_follows_the_closed_form_guided_ode():
  """The probability-flow ODE sampler on the guided score equals scipy's integration of
  dx/dt = f(x, t) - g(t)^2 / 2 * s_w(x, t), s_w from the closed-form guided denoiser."""
  n, w, eps = 5, 2.0, 1e-3
  labels = np.array([0, 1, 2, 0, 1])
  z = np.random.default_rng(2).normal(size=(n, 2)).astype(np.float32)
  score_fn = get_score_fn(SDE, MODEL, {}, class_labels=labels, guidance_scale=w)
  out = sampling.ode_sample(jax.random.PRNGKey(0), score_fn, SDE, (n, 2), z=z, rtol=1e-6, atol=1e-6, eps=eps)

  def velocity(t, x):
    x = x.reshape(n, 2)
    m, std = coeffs(np.full(n, t))
    score = (m[:, None] * exact_guided(x, np.full(n, t), labels, w) - x) / std[:, None] ** 2
    beta = SDE.beta_min + t * (SDE.beta_max - SDE.beta_min)
    return (-0.5 * beta * x - 0.5 * beta * score).ravel()

  solution = integrate.solve_ivp(velocity, (SDE.T, eps), z.astype(np.float64).ravel(), rtol=1e-9, atol=1e-9)
  np.testing.assert_allclose(np.asarray(out.samples), solution.y[:, -1].reshape(n, 2), atol=5e-3)
  assert int(out.nfe) % 2 == 0  # two network evaluations per guided score evaluation


@pytest.mark.parametrize("method, options, score_evaluations", [
    ("ddim", dict(steps=10, denoise=True), 11),
    ("heun", dict(steps=6), 11),
    ("pc", dict(predictor="euler_maruyama", corrector="langevin", n_steps=1), 40),
])
def test_nfe_counts_two_network_evaluations_per_guided_score_evaluation(method, options, score_evaluations):
  sde = dataclasses.replace(SDE, N=20)
  labels = np.zeros(4, np.int32)
  for w, per_evaluation in [(0.0, 1), (1.5, 2)]:
    score_fn = get_score_fn(sde, MODEL, {}, class_labels=labels, guidance_scale=w)
    out = sampling.sample(jax.random.PRNGKey(0), score_fn, sde, (4, 2), method=method, **options)
    assert int(out.nfe) == per_evaluation * score_evaluations
    assert np.isfinite(np.asarray(out.samples)).all()


def test_adaptive_sampler_and_inpainting_take_the_guided_score():
  sde = dataclasses.replace(SDE, N=20)
  labels = np.array([0, 1, 2, 0])
  score_fn = get_score_fn(sde, MODEL, {}, class_labels=labels, guidance_scale=1.0)
  out = sampling.sample(jax.random.PRNGKey(0), score_fn, sde, (4, 2), method="adaptive_sde")
  assert int(out.nfe) > 0 and int(out.nfe) % 2 == 0 and np.isfinite(np.asarray(out.samples)).all()
  known = jnp.asarray(MEANS[labels], jnp.float32)
  out = controllable.pc_inpaint(jax.random.PRNGKey(0), score_fn, sde, known, jnp.array([1.0, 0.0]))
  assert int(out.nfe) == 2 * sampling.pc_nfe(sde, "reverse_diffusion", "langevin", 1)
  np.testing.assert_allclose(np.asarray(out.samples)[:, 0], MEANS[labels, 0], rtol=1e-2, atol=1e-2)


class NullIndicator(nn.Module):
  """Outputs 1 where the class is the null class, 0 elsewhere (the x0 loss against zero data then counts drops)."""

  num_classes: int = 4

  def __call__(self, x, labels, train=False, class_labels=None):
    return jnp.broadcast_to((class_labels == self.num_classes).astype(x.dtype)[:, None], x.shape)


@pytest.mark.parametrize("class_dropout", [0.0, 0.2])
def test_label_dropout_rate(class_dropout):
  model = ScoreModel(network=NullIndicator(), parameterization=parameterization.Data())
  settings = objectives.LossConfig(num_classes=4, class_dropout=class_dropout)
  objective = objectives.OBJECTIVES["dsm"](sde=SDE, model=model, settings=settings)
  n = 20000
  batch = (jnp.zeros((n, 2)), jnp.arange(n) % 4)
  for train, expected in [(True, class_dropout), (False, 0.0)]:
    loss_fn = objectives.get_loss_fn(objective, train=train)
    dropped = np.asarray(loss_fn(jax.random.PRNGKey(3), {}, batch).per_example)
    assert set(np.unique(dropped)) <= {0.0, 1.0}
    assert abs(dropped.mean() - expected) <= 4 * np.sqrt(expected * (1 - expected) / n)


def test_class_conditional_toy_model_gets_labelled_batches():
  """A class-conditional MLP gets (points, labels) batches of the labelled checkerboard and a class table."""
  from score_jax.run_setup import RunSetup
  config = tiny_toy_config(**{"model.num_classes": 8, "training.class_dropout": 0.2})
  run = RunSetup(config)
  state = jax.eval_shape(run.init_state)
  assert state.params["class_embedding"]["embedding"].shape == (9, config.model.nf)
  points, labels = run.train_batches(0)
  assert points.shape == (5, 64, 2) and labels.shape == (5, 64)
  np.testing.assert_array_equal(np.asarray(labels), np.asarray(toy_data.checkerboard_square(
      np.asarray(points).reshape(-1, 2))).reshape(5, 64))
  # Training on these batches (with dropout and the power EMA) runs in tests/test_train.py's kill -9 tests.


def test_toy_labels_are_the_natural_ones():
  rng = jax.random.PRNGKey(0)
  points, modes = toy_data.labelled_eight_gaussians(rng, 2000)
  angle = np.asarray(modes) * np.pi / 4       # mode k at angle 2 pi k / 8, counter-clockwise from 0
  centres = 2.0 * np.stack([np.cos(angle), np.sin(angle)], 1)
  assert np.abs(np.asarray(points) - centres).max() < 0.6
  np.testing.assert_array_equal(toy_data.eight_gaussians(rng, 2000), points)   # the same draw unlabelled
  points, squares = toy_data.labelled_checkerboard(rng, 2000)
  cells = np.floor(np.asarray(points) + 2.0).astype(int)
  np.testing.assert_array_equal(np.asarray(squares), 2 * cells[:, 1] + cells[:, 0] // 2)
  assert sorted(np.unique(np.asarray(squares))) == list(range(8))
  points, moons = toy_data.labelled_moons(rng, 2000)
  points, moons = np.asarray(points), np.asarray(moons)
  assert points[moons == 0, 1].mean() > 0.3 > -0.3 > points[moons == 1, 1].mean()


@pytest.mark.parametrize("overrides, message", [
    ({"model.num_classes": 3}, "model.num_classes=3, but data.dataset='checkerboard' has 8 classes"),
    ({"sampling.guidance_scale": 1.0}, "sampling.guidance_scale=1.0 needs a class-conditional model"),
    ({"training.class_dropout": 0.1}, "training.class_dropout=0.1 needs a class-conditional model"),
    ({"model.num_classes": 8, "training.class_dropout": 1.0}, "training.class_dropout=1.0 must lie in [0, 1)"),
    ({"model.num_classes": 8, "sampling.guidance_interval": (2.0, 1.0)}, "sampling.guidance_interval=(2.0, 1.0)"),
    ({"data.dataset": "swissroll", "model.num_classes": 2}, "data.dataset='swissroll' has no labels"),
])
def test_bad_class_conditioning_settings_are_value_errors(overrides, message):
  config = tiny_toy_config()
  config.update_from_flattened_dict(overrides)
  with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
    validate_config(config)


@pytest.mark.parametrize("fixture", ["vp_cifar10_ddpmpp_continuous", "vp_ddpm_cifar10"])
def test_num_classes_zero_keeps_the_reference_parameter_count(fixture):
  """The reference networks' parameter counts (recorded from the PyTorch port) with num_classes = 0; a class
  table of (classes + 1) x 4 nf with num_classes = 10."""
  meta = json.loads((FIXTURES / f"model_{fixture}.json").read_text())
  config = fixture_config(meta)
  count = lambda c: sum(x.size for x in jax.tree_util.tree_leaves(
      jax.eval_shape(lambda: init_model(jax.random.PRNGKey(0), c))["params"]))
  assert count(config) == meta["param_count_total"]
  config.model.num_classes = 10
  assert count(config) == meta["param_count_total"] + 11 * 4 * config.model.nf
