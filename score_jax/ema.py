"""Exponential moving averages of the parameters: the fixed-decay EMA, EDM2's power EMA and the maths of
its post-hoc reconstruction.

`model.ema_type = "fixed"` (the default) keeps `ema_rate * ema + (1 - ema_rate) * params`, the reference's
EMA. `model.ema_type = "power"` (Karras et al. 2024, "Analyzing and Improving the Training Dynamics of
Diffusion Models", Sec. 3 and Appendix C) tracks, for each relative width sigma_rel in
`model.ema_sigma_rels`, the power-function EMA

    ema_t = beta_t ema_{t-1} + (1 - beta_t) params_t,   beta_t = (1 - 1 / t)^(gamma + 1)   (t = 1, 2, ...)

whose weights over the steps so far follow p(tau) = (gamma + 1) tau^gamma / t^(gamma + 1), a profile of
standard deviation sigma_rel * t. The average of *any* sigma_rel at a stored step is the linear combination
of the stored averages whose profile is nearest in L2 to the wanted one, normalised to sum 1
(`solve_reconstruction`, EDM2's Algorithm 3).

The snapshots, `reconstruct` and `write_reconstruction` (the `--mode=reconstruct_ema` command) are in
`score_jax.posthoc_ema`. The training state of a power-EMA run carries the tracked averages
(`train_state.TrainState.power_ema`); its `ema_params` is the first profile's.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from score_jax.train_state import profile_names
from score_jax.utils import choice_error

EMA_TYPES = ("fixed", "power")
MAX_SIGMA_REL = 12 ** -0.5  # the profile of gamma = 0 (a uniform average over all steps)


# ------------------------------------------------------------------------------ power-function profiles

def sigma_rel_to_gamma(sigma_rel):
  """The exponent gamma of the power profile of relative width `sigma_rel` (EDM2, Eq. (3)):
  sigma_rel^2 = (gamma + 1) / ((gamma + 2)^2 (gamma + 3)), i.e. the largest real root of
  gamma^3 + 7 gamma^2 + (16 - sigma_rel^-2) gamma + 12 - sigma_rel^-2."""
  sigma_rel = float(sigma_rel)
  if not 0.0 < sigma_rel < MAX_SIGMA_REL:
    raise ValueError(f"sigma_rel={sigma_rel} must lie in (0, {MAX_SIGMA_REL:.4f})")
  inverse = sigma_rel ** -2
  roots = np.roots([1.0, 7.0, 16.0 - inverse, 12.0 - inverse])
  return float(roots[np.abs(roots.imag) < 1e-9].real.max())


def gamma_to_sigma_rel(gamma):
  """The relative width of the power profile of exponent `gamma` (the inverse of `sigma_rel_to_gamma`)."""
  return float(np.sqrt((gamma + 1.0) / ((gamma + 2.0) ** 2 * (gamma + 3.0))))


def profile_inner(gamma_a, t_a, gamma_b, t_b):
  """<p_a, p_b> = int p_a(tau) p_b(tau) dtau of the profiles (gamma + 1) tau^gamma / t^(gamma + 1) on [0, t]
  (broadcasting): with t_a <= t_b it is (gamma_a + 1)(gamma_b + 1) (t_a / t_b)^gamma_b / ((gamma_a + gamma_b + 1) t_b)."""
  gamma_a, t_a, gamma_b, t_b = (np.asarray(v, np.float64) for v in (gamma_a, t_a, gamma_b, t_b))
  ratio_exponent = np.where(t_a <= t_b, gamma_b, -gamma_a)
  return ((gamma_a + 1.0) * (gamma_b + 1.0) * (t_a / t_b) ** ratio_exponent
          / ((gamma_a + gamma_b + 1.0) * np.maximum(t_a, t_b)))


@dataclasses.dataclass(frozen=True)
class Reconstruction:
  """The snapshot weights of a post-hoc EMA and how well their profiles match the wanted one."""

  coefficients: np.ndarray  # (snapshots, profiles): the weight of each stored average; they sum to 1
  relative_error: float     # |sum_i c_i p_i - p| / |p| of these weights, in L2 over tau (EDM2's reconstruction error)
  least_squares_sum: float  # the sum of the least-squares weights, which `coefficients` are divided by


def solve_reconstruction(snapshot_steps, snapshot_gammas, step, gamma):
  """The weights of the stored profiles (`snapshot_steps` x `snapshot_gammas`) for the profile of exponent
  `gamma` at `step` (EDM2, Algorithm 3): the least-squares solution of the normal equations A c = b with
  A_ij = <p_i, p_j>, b_i = <p_i, p>, divided by its sum, so that the reconstruction is an average of the
  stored averages (the unnormalised weights would scale every parameter by their sum)."""
  t_in, g_in = (np.asarray(v, np.float64).ravel() for v in np.meshgrid(snapshot_steps, snapshot_gammas,
                                                                        indexing="ij"))
  gram = profile_inner(g_in[:, None], t_in[:, None], g_in[None, :], t_in[None, :])
  target = profile_inner(g_in, t_in, gamma, step)
  least_squares = np.linalg.lstsq(gram, target, rcond=None)[0]
  coefficients = least_squares / least_squares.sum()
  target_norm = profile_inner(gamma, step, gamma, step)
  residual = coefficients @ gram @ coefficients - 2.0 * coefficients @ target + target_norm
  error = float(np.sqrt(max(residual, 0.0) / target_norm))
  return Reconstruction(coefficients.reshape(len(snapshot_steps), len(snapshot_gammas)), error,
                        float(least_squares.sum()))


# ------------------------------------------------------------------------------ the averages in training

def check_ema_config(config):
  """Raises a `ValueError` for bad EMA keys (before any compile)."""
  ema_type = config.model.ema_type
  if ema_type not in EMA_TYPES:
    raise choice_error("model.ema_type", ema_type, EMA_TYPES)
  if ema_type != "power":
    return
  sigma_rels = tuple(config.model.ema_sigma_rels)
  if not sigma_rels:
    raise ValueError("model.ema_type='power' needs model.ema_sigma_rels, e.g. (0.05, 0.1)")
  for sigma_rel in sigma_rels:
    if not 0.0 < sigma_rel < MAX_SIGMA_REL:
      raise ValueError(f"model.ema_sigma_rels has {sigma_rel}; each must lie in (0, {MAX_SIGMA_REL:.4f})")
  freq, jitted = config.training.ema_snapshot_freq, config.training.n_jitted_steps
  if freq <= 0 or freq % jitted:
    raise ValueError(f"training.ema_snapshot_freq={freq} must be a positive multiple of training.n_jitted_steps "
                     f"({jitted})")


def power_gammas(config):
  """The exponents of the tracked power profiles, or None for the fixed EMA; the EMA's keys checked first.

  Raises:
    ValueError: a bad EMA key (`check_ema_config`).
  """
  check_ema_config(config)
  if config.model.ema_type != "power":
    return None
  return tuple(sigma_rel_to_gamma(s) for s in config.model.ema_sigma_rels)


def update(state, *, ema_rate, gammas=None):
  """`state` with its averages advanced to `state.step` (the step just taken, >= 1): the fixed EMA, or
  with `gammas` every power EMA (`ema_params` is then the first of them)."""
  if gammas is None:
    return state.replace(ema_params=jax.tree_util.tree_map(lambda e, p: ema_rate * e + (1.0 - ema_rate) * p,
                                                           state.ema_params, state.params))
  t = state.step.astype(jnp.float32)
  averages = {}
  for name, gamma in zip(profile_names(gammas), gammas):
    beta = (1.0 - 1.0 / t) ** (gamma + 1.0)
    averages[name] = jax.tree_util.tree_map(lambda e, p, b=beta: b * e + (1.0 - b) * p,
                                            state.power_ema[name], state.params)
  return state.replace(power_ema=averages, ema_params=averages[profile_names(gammas)[0]])


__all__ = ["EMA_TYPES", "Reconstruction", "check_ema_config", "gamma_to_sigma_rel", "power_gammas",
           "profile_inner", "profile_names", "sigma_rel_to_gamma", "solve_reconstruction", "update"]
