"""EDM2's power-function EMA: its profiles, the tracked averages, and the post-hoc reconstruction."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate, optimize

from score_jax import checkpoint, ema, posthoc_ema, run_setup
from score_jax.train_state import TrainState
from tests.helpers import tiny_toy_config


def test_sigma_rel_and_gamma_are_inverse_and_match_edm2():
  # EDM2 (Karras et al. 2024, Sec. 3.1): sigma_rel 0.05 and 0.10 are gamma 16.97 and 6.94.
  assert ema.sigma_rel_to_gamma(0.05) == pytest.approx(16.97, abs=0.01)
  assert ema.sigma_rel_to_gamma(0.10) == pytest.approx(6.94, abs=0.01)
  for sigma_rel in (0.01, 0.03, 0.2, 0.28):
    assert ema.gamma_to_sigma_rel(ema.sigma_rel_to_gamma(sigma_rel)) == pytest.approx(sigma_rel, rel=1e-9)
  with pytest.raises(ValueError, match="sigma_rel=0.3 must lie in"):
    ema.sigma_rel_to_gamma(0.3)


def test_profile_inner_products_match_quadrature():
  def profile(gamma, t):
    return lambda tau: (gamma + 1) * tau**gamma / t ** (gamma + 1) if tau <= t else 0.0
  for (ga, ta), (gb, tb) in [((3.0, 100.0), (7.0, 60.0)), ((16.97, 500.0), (6.94, 500.0)), ((0.5, 10.0), (2.0, 30.0))]:
    numeric = integrate.quad(lambda tau: profile(ga, ta)(tau) * profile(gb, tb)(tau), 0, min(ta, tb), limit=200)[0]
    assert ema.profile_inner(ga, ta, gb, tb) == pytest.approx(numeric, rel=1e-6)
    assert ema.profile_inner(gb, tb, ga, ta) == pytest.approx(numeric, rel=1e-6)


def run_power_emas(trajectory, gammas, snapshot_every):
  """The tracked averages of `ema.update` over a scalar parameter trajectory: {step: [average per gamma]}."""
  params = {"w": jnp.asarray(trajectory[0])}
  state = TrainState(step=jnp.zeros((), jnp.int32), params=params, ema_params=params, opt_state=(),
                             model_state={}, power_ema={name: params for name in ema.profile_names(gammas)})
  snapshots = {}
  update = jax.jit(lambda s: ema.update(s, ema_rate=0.0, gammas=gammas))
  for step, value in enumerate(trajectory[1:], start=1):
    state = update(state.replace(step=jnp.asarray(step, jnp.int32), params={"w": jnp.asarray(value)}))
    if step % snapshot_every == 0:
      snapshots[step] = [float(state.power_ema[name]["w"]) for name in ema.profile_names(gammas)]
  return snapshots


def test_power_ema_weights_follow_the_power_profile():
  """The tracked average of a one-hot trajectory (1 at step tau) is the weight of tau. With beta_s = (1 - 1/s)^(gamma+1),
  prod_{s > tau} beta_s = (tau / t)^(gamma + 1) exactly, so the weight is (1 - (1 - 1/tau)^(gamma+1)) (tau / t)^(gamma+1),
  the power profile (gamma + 1) tau^gamma / t^(gamma+1) up to O(1 / tau)."""
  gamma, total = ema.sigma_rel_to_gamma(0.1), 400
  for tau in (100, 250, 390):
    trajectory = np.zeros(total + 1, np.float32)
    trajectory[tau] = 1.0
    weight = run_power_emas(trajectory, (gamma,), total)[total][0]
    assert weight == pytest.approx((1 - (1 - 1 / tau) ** (gamma + 1)) * (tau / total) ** (gamma + 1), rel=1e-4)
    assert weight == pytest.approx((gamma + 1) * tau**gamma / total ** (gamma + 1), rel=4 * (gamma + 1) / tau)


def test_reconstruction_recovers_tracked_and_interpolates_untracked_widths():
  """From snapshots of sigma_rel 0.05 and 0.10: a tracked width comes back exactly, an untracked one (0.07)
  close to its directly tracked average, between the neighbours', with a smaller profile error than either."""
  total, every = 1000, 100
  steps = np.arange(total + 1, dtype=np.float64)
  trajectory = (np.sqrt(steps) + 0.3 * np.sin(steps / 40.0)).astype(np.float32)  # drifting, with wiggles
  tracked = tuple(ema.sigma_rel_to_gamma(s) for s in (0.05, 0.10))
  snapshots = run_power_emas(trajectory, tracked, every)
  snapshot_steps = sorted(snapshots)
  values = np.array([snapshots[s] for s in snapshot_steps])     # (snapshots, profiles)

  exact = ema.solve_reconstruction(snapshot_steps, tracked, total, tracked[0])
  assert exact.relative_error < 1e-6
  reconstructed = float(np.sum(exact.coefficients * values))
  assert reconstructed == pytest.approx(snapshots[total][0], rel=1e-4)

  gamma = ema.sigma_rel_to_gamma(0.07)
  direct = run_power_emas(trajectory, (gamma,), total)[total][0]
  solution = ema.solve_reconstruction(snapshot_steps, tracked, total, gamma)
  reconstructed = float(np.sum(solution.coefficients * values))
  low, high = sorted(snapshots[total])
  assert low < reconstructed < high
  spread = high - low
  assert abs(reconstructed - direct) < 0.1 * spread
  target_norm = ema.profile_inner(gamma, total, gamma, total)
  for neighbour in tracked:  # the reconstruction's profile is nearer the wanted one than either tracked profile
    distance = (ema.profile_inner(neighbour, total, neighbour, total) - 2 * ema.profile_inner(neighbour, total, gamma, total)
                + target_norm)
    assert solution.relative_error < np.sqrt(distance / target_norm)


def edm2_algorithm_3(snapshot_steps, snapshot_sigma_rels, step, sigma_rel):
  """EDM2's Algorithm 3 (Karras et al. 2024, Appendix C.3) from the paper's formulas, independently of
  score_jax.ema: gamma from the profile's standard deviation by root finding, the profiles' inner products
  by quadrature, the normal equations solved, the weights divided by their sum.

  Returns `(normalised weights, their sum before the division)`, the weights in snapshot-major order."""
  def gamma_of(width):  # the standard deviation of (gamma + 1) tau^gamma on [0, 1] is `width`
    std = lambda g: np.sqrt((g + 1) / (g + 3) - ((g + 1) / (g + 2)) ** 2)
    return optimize.brentq(lambda g: std(g) - width, 0.0, 1e4, xtol=1e-14, rtol=1e-15)

  def inner(a, b):
    (ga, ta), (gb, tb) = a, b
    profile = lambda g, t, tau: (g + 1) / t * (tau / t) ** g
    return integrate.quad(lambda tau: profile(ga, ta, tau) * profile(gb, tb, tau), 0.0, min(ta, tb),
                          epsabs=0.0, epsrel=1e-11, limit=200)[0]

  inputs = [(gamma_of(s), float(t)) for t in snapshot_steps for s in snapshot_sigma_rels]
  gram = np.array([[inner(a, b) for b in inputs] for a in inputs])
  target = np.array([inner(a, (gamma_of(sigma_rel), float(step))) for a in inputs])
  weights = np.linalg.solve(gram, target)
  return weights / weights.sum(), weights.sum()


def test_reconstruction_weights_sum_to_one_and_follow_edm2_algorithm_3():
  """The digits run's setting (10 snapshots every 150 steps, tracked 0.05 and 0.10): the weights are EDM2's,
  normalised; the least-squares ones summed to 0.986 (sigma_rel 0.02) and 0.981 (0.22), which scaled every
  reconstructed parameter before the normalisation."""
  steps, tracked = np.arange(150, 1501, 150), (0.05, 0.10)
  gammas = [ema.sigma_rel_to_gamma(s) for s in tracked]
  for sigma_rel, least_squares_sum in [(0.02, 0.9862), (0.065, 1.0005), (0.13, 0.9988), (0.22, 0.9805)]:
    solution = ema.solve_reconstruction(steps, gammas, 1500, ema.sigma_rel_to_gamma(sigma_rel))
    assert solution.coefficients.shape == (10, 2)
    assert solution.coefficients.sum() == pytest.approx(1.0, abs=1e-12)
    assert solution.least_squares_sum == pytest.approx(least_squares_sum, abs=1e-4)
    want, want_sum = edm2_algorithm_3(steps, tracked, 1500, sigma_rel)
    np.testing.assert_allclose(solution.coefficients.ravel(), want, rtol=0, atol=1e-6 * np.abs(want).max())
    assert solution.least_squares_sum == pytest.approx(want_sum, rel=1e-6)


def test_reconstruct_of_constant_snapshots_is_that_constant(tmp_path):
  """Stored averages that all hold the same parameters reconstruct to exactly those parameters at any
  width (an average), through the snapshot files and `posthoc_ema.reconstruct`."""
  config = tiny_toy_config(**{"model.ema_type": "power", "training.ema_snapshot_freq": 150})
  config.model.ema_sigma_rels = (0.05, 0.10)
  state = run_setup.RunSetup(config, companions=()).initial_state(jax.random.PRNGKey(0))
  checkpoint.save_run_config(config, str(tmp_path))
  manager = posthoc_ema.snapshot_manager(str(tmp_path))
  for step in range(150, 1501, 150):
    posthoc_ema.save_snapshot(manager, step, state, config.model.ema_sigma_rels)
  for sigma_rel in (0.02, 0.22):
    params, solution = posthoc_ema.reconstruct(config, str(tmp_path), sigma_rel, return_info=True)
    assert abs(solution.least_squares_sum - 1.0) > 0.01  # the unnormalised weights would scale the parameters
    for got, want in zip(jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(state.params)):
      np.testing.assert_allclose(got, np.asarray(want), rtol=1e-6, atol=1e-7)
