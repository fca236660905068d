"""Autoguidance (`sampling.guidance_workdir`, Karras et al. 2024b): a model guided by a second one,
(1 + w) D_main - w D_guide, against exact Gaussian-mixture denoisers in closed form (tests/test_guidance.py's
mixture; the guide is the same mixture with wider components, a "bad version" of the main model)."""

import collections

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from score_jax import checkpoint, parameterization, run_setup, sampling, trained_model
from score_jax.models import GuidingModel, ScoreModel, get_denoiser_fn, get_score_fn
from tests.helpers import tiny_toy_config
from tests.test_guidance import SDE, ExactMixture, coeffs, exact_denoisers

MAIN = ScoreModel(network=ExactMixture(), parameterization=parameterization.Data())
GUIDE = ScoreModel(network=ExactMixture(spread=0.6), parameterization=parameterization.Data())
NETWORK_CALLS = collections.Counter()  # tag -> executed calls of a `CountedMixture`


class CountedMixture(ExactMixture):
  """The mixture network that counts its executed calls (one per batch evaluation) in `NETWORK_CALLS[tag]`, on
  the host, inside jit and loops: the samplers' evaluations counted without their own `nfe` arithmetic."""

  tag: str = "main"

  def __call__(self, x_in, labels, train=False, class_labels=None):
    jax.debug.callback(lambda: NETWORK_CALLS.update([self.tag]))
    return super().__call__(x_in, labels, train=train, class_labels=class_labels)


def problem():
  rng = np.random.default_rng(0)
  return (jnp.asarray(rng.normal(size=(6, 2)) * 1.5, jnp.float32),
          jnp.asarray([0.02, 0.1, 0.3, 0.5, 0.7, 0.95], jnp.float32), np.array([0, 1, 2, 2, 1, 0]))


@pytest.mark.parametrize("conditional", [False, True], ids=["unconditional", "class_conditional"])
@pytest.mark.parametrize("w", [0.5, 2.0])
def test_autoguided_denoiser_and_score_equal_the_closed_form(w, conditional):
  x, t, labels = problem()
  labels = labels if conditional else None
  denoiser = get_denoiser_fn(SDE, MAIN, {}, class_labels=labels, guidance_scale=w, guide=GuidingModel(GUIDE, {}))

  def exact(spread):
    per_class, null = exact_denoisers(np.asarray(x, np.float64), np.asarray(t, np.float64), spread)
    return null if labels is None else per_class[labels, np.arange(len(labels))]

  expected = (1 + w) * exact(0.3) - w * exact(0.6)
  np.testing.assert_allclose(denoiser(x, t), expected, rtol=2e-4, atol=2e-4)
  score_fn = get_score_fn(SDE, MAIN, {}, class_labels=labels, guidance_scale=w, guide=GuidingModel(GUIDE, {}))
  m, std = coeffs(np.asarray(t))
  np.testing.assert_allclose(score_fn(x, t), (m[:, None] * expected - np.asarray(x)) / std[:, None] ** 2,
                             rtol=2e-3, atol=2e-3)
  assert score_fn.network_evaluations == 2


def test_a_model_guiding_itself_is_the_identity():
  x, t, labels = problem()
  plain = get_denoiser_fn(SDE, MAIN, {}, class_labels=labels)(x, t)
  for w in (0.5, 3.0):
    guided = get_denoiser_fn(SDE, MAIN, {}, class_labels=labels, guidance_scale=w, guide=GuidingModel(MAIN, {}))
    np.testing.assert_allclose(guided(x, t), plain, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("method", ["pc", "ode", "ddim", "dpm_solver", "heun", "adaptive_sde", "consistency"])
def test_every_sampler_takes_a_guiding_model(method):
  """Each family samples with the guide: twice the network evaluations, and the model guiding itself gives the
  unguided samples. The evaluations are counted as the networks run (`CountedMixture`): every run's `nfe` is
  its executed calls; a guided run calls the main model and the guide equally often; the adaptive solvers
  (ode, adaptive_sde) choose their steps from the score, so the self-guided run (the same trajectory) takes the
  unguided run's steps and reports exactly twice its `nfe`, like the fixed-step families."""
  config = tiny_toy_config(**{"sampling.method": method, "model.num_scales": 10, "model.parameterization": "x0",
                              "training.sde": "vpsde"})
  config.sampling.steps = 4 if method != "consistency" else 2
  shape, identity = (8, 2), lambda x: x
  main = ScoreModel(network=CountedMixture(), parameterization=parameterization.Data())
  guide = ScoreModel(network=CountedMixture(spread=0.6, tag="guide"), parameterization=parameterization.Data())

  def run(w, guide):
    config.sampling.guidance_scale = w
    sample_fn = sampling.get_sampling_fn(config, SDE, main, shape, identity, 1e-3, guide=guide)
    NETWORK_CALLS.clear()
    out = sample_fn(jax.random.PRNGKey(0), {})
    jax.block_until_ready(out)
    jax.effects_barrier()  # every callback has run
    return out, dict(NETWORK_CALLS)

  (plain, plain_calls), (self_guided, self_calls), (guided, guided_calls) = (
      run(0.0, None), run(2.0, GuidingModel(main, {})), run(2.0, GuidingModel(guide, {})))
  np.testing.assert_allclose(self_guided.samples, plain.samples, rtol=1e-4, atol=1e-4)
  assert plain_calls == {"main": int(plain.nfe)} and self_calls == {"main": int(self_guided.nfe)}
  assert guided_calls == {"main": int(guided.nfe) // 2, "guide": int(guided.nfe) // 2}, (guided_calls, guided.nfe)
  assert int(self_guided.nfe) == 2 * int(plain.nfe) > 0
  if method not in ("ode", "adaptive_sde"):  # fixed steps: a guide of its own takes them too
    assert int(guided.nfe) == 2 * int(plain.nfe)
  assert np.isfinite(np.asarray(guided.samples)).all()
  assert not np.allclose(guided.samples, plain.samples, atol=1e-3)


def test_the_guide_comes_from_its_workdir_and_must_match(tmp_path):
  """`sampling.guidance_workdir` (and `guidance_step`) load that run's EMA variables; a guide on another path,
  with another parameterization or another data shape is refused in one line before sampling."""
  guide = tiny_toy_config(**{"model.nf": 8})          # narrower than the main model
  state = run_setup.RunSetup(guide).initial_state(jax.random.key(3))
  manager = checkpoint.get_manager(str(tmp_path / "guide" / checkpoint.SNAPSHOT_DIR))
  checkpoint.save(manager, 20, state)
  (tmp_path / "guide" / "config.json").write_text(guide.to_json_best_effort())
  main = tiny_toy_config(**{"sampling.guidance_workdir": str(tmp_path / "guide"), "sampling.guidance_step": 20,
                            "sampling.guidance_scale": 1.0, "sampling.method": "ddim", "sampling.steps": 3})
  run = run_setup.RunSetup(main)  # reads the guide once
  loaded = run.guide
  for got, want in zip(jax.tree.leaves(loaded.variables["params"]), jax.tree.leaves(state.ema_params)):
    np.testing.assert_array_equal(got, want)
  out = run.sampler(8)(jax.random.PRNGKey(0), run.init_state().variables())
  assert np.isfinite(np.asarray(out.samples)).all() and int(out.nfe) == 2 * 4  # 3 steps + the final denoising
  for key, value, message in [("training.sde", "subvpsde", "another path"),
                              ("model.parameterization", "eps", "both must share it"),
                              ("data.dim", 3, "both must model the same data")]:
    other = tiny_toy_config(**{key: value, "model.nf": 8})
    (tmp_path / "guide" / "config.json").write_text(other.to_json_best_effort())
    with pytest.raises(ValueError, match=message):
      trained_model.guiding_model(main)
  (tmp_path / "guide" / "config.json").write_text(guide.to_json_best_effort())
  main.sampling.guidance_step = 7
  with pytest.raises(ValueError, match="has no checkpoint of step 7"):
    trained_model.guiding_model(main)
