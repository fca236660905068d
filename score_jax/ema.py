"""Exponential moving averages of the parameters: the fixed-decay EMA and EDM2's post-hoc power EMA.

`model.ema_type = "fixed"` (the default) keeps `ema_rate * ema + (1 - ema_rate) * params`, the reference's
EMA. `model.ema_type = "power"` (Karras et al. 2024, "Analyzing and Improving the Training Dynamics of
Diffusion Models", Sec. 3 and Appendix C) tracks, for each relative width sigma_rel in
`model.ema_sigma_rels`, the power-function EMA

    ema_t = beta_t ema_{t-1} + (1 - beta_t) params_t,   beta_t = (1 - 1 / t)^(gamma + 1)   (t = 1, 2, ...)

whose weights over the steps so far follow p(tau) = (gamma + 1) tau^gamma / t^(gamma + 1), a profile of
standard deviation sigma_rel * t. Every `training.ema_snapshot_freq` steps the tracked averages are stored
(`<workdir>/ema_snapshots/<step>`). After training, `reconstruct` finds the average of *any* sigma_rel at
any stored step as the linear combination of the snapshots whose profile is nearest in L2 to the wanted
profile (least squares on the profiles' closed-form inner products, normalised to sum 1: EDM2's
Algorithm 3), and `write_reconstruction` saves it
as a checkpoint that `--mode=eval` and the samplers read:

    python main.py --config=configs/digits_cfg.py --workdir=runs/cfg --mode=reconstruct_ema --sigma_rel=0.08

The training state of a power-EMA run carries the tracked averages (`train_state.PowerEMATrainState`), so
a resumed run continues them exactly; its `ema_params` is the first profile's.
"""

import dataclasses
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from score_jax import checkpoint, optim, parallel, train_state
from score_jax.train_state import profile_names
from score_jax.utils import choice_error

EMA_TYPES = ("fixed", "power")
SNAPSHOT_DIR = "ema_snapshots"
POSTHOC_DIR = "posthoc_ema"
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
  ema_type = config.model.get("ema_type", "fixed")
  if ema_type not in EMA_TYPES:
    raise choice_error("model.ema_type", ema_type, EMA_TYPES)
  if ema_type != "power":
    return
  sigma_rels = tuple(config.model.get("ema_sigma_rels", ()))
  if not sigma_rels:
    raise ValueError("model.ema_type='power' needs model.ema_sigma_rels, e.g. (0.05, 0.1)")
  for sigma_rel in sigma_rels:
    if not 0.0 < sigma_rel < MAX_SIGMA_REL:
      raise ValueError(f"model.ema_sigma_rels has {sigma_rel}; each must lie in (0, {MAX_SIGMA_REL:.4f})")
  freq, jitted = config.training.get("ema_snapshot_freq", 0), config.training.n_jitted_steps
  if freq <= 0 or freq % jitted:
    raise ValueError(f"training.ema_snapshot_freq={freq} must be a positive multiple of training.n_jitted_steps "
                     f"({jitted})")


def power_gammas(config):
  """The exponents of the tracked power profiles, or None for the fixed EMA."""
  if config.model.get("ema_type", "fixed") != "power":
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


# ------------------------------------------------------------------------------ snapshots and reconstruction

def snapshot_manager(workdir):
  """The orbax manager of `<workdir>/ema_snapshots` (every snapshot kept; atomic like checkpoints)."""
  return checkpoint.get_manager(os.path.join(workdir, SNAPSHOT_DIR))


def save_snapshot(manager, step, state, sigma_rels):
  """Stores the tracked averages of `state` at `step` with their sigma_rels (a no-op if stored)."""
  checkpoint.save(manager, step, {"sigma_rels": np.asarray(sigma_rels, np.float64),
                                  "power_ema": state.power_ema})


def _snapshot_target(params_shapes, num_profiles):
  return {"sigma_rels": np.zeros((num_profiles,), np.float64),
          "power_ema": {name: params_shapes for name in profile_names(range(num_profiles))}}


def _initial_state(config):
  return train_state.init_train_state(jax.random.PRNGKey(0), config, optim.get_optimizer(config))


def _params_shapes(config):
  abstract = checkpoint.abstract_state(lambda: _initial_state(config))
  return abstract, abstract.params


def reconstruct(config, workdir, sigma_rel, *, step=None, return_info=False):
  """The post-hoc EMA of relative width `sigma_rel` at `step` (default: the newest snapshot) from the
  snapshots in `<workdir>/ema_snapshots` up to that step: `params` (numpy float32, the model's structure).

  With `return_info`, returns `(params, Reconstruction)`.

  Raises:
    ValueError: not a power-EMA config, no snapshot, or `step` not stored.
  """
  check_ema_config(config)
  if config.model.get("ema_type", "fixed") != "power":
    raise ValueError("post-hoc EMA needs a run trained with model.ema_type='power'")
  gamma = sigma_rel_to_gamma(sigma_rel)
  manager = snapshot_manager(workdir)
  steps = sorted(manager.all_steps())
  if not steps:
    raise ValueError(f"no EMA snapshots in {os.path.join(workdir, SNAPSHOT_DIR)}; train with "
                     "model.ema_type='power' and training.ema_snapshot_freq")
  step = steps[-1] if step is None else int(step)
  if step not in steps:
    raise ValueError(f"step={step} has no EMA snapshot; stored: {steps}")
  steps = [s for s in steps if s <= step]
  _, params_shapes = _params_shapes(config)
  sigma_rels = tuple(config.model.ema_sigma_rels)
  target = _snapshot_target(params_shapes, len(sigma_rels))
  gammas = [sigma_rel_to_gamma(s) for s in sigma_rels]
  solution = solve_reconstruction(steps, gammas, step, gamma)
  logging.info("Post-hoc EMA sigma_rel=%g at step %d from %d snapshots x %d profiles: profile error %.2e",
               sigma_rel, step, len(steps), len(gammas), solution.relative_error)
  total = None
  for i, s in enumerate(steps):
    snapshot = checkpoint.restore(manager, s, target)
    stored = tuple(np.asarray(snapshot["sigma_rels"]))
    if not np.allclose(stored, sigma_rels):
      raise ValueError(f"the snapshot of step {s} tracks sigma_rels {stored}, the config {sigma_rels}")
    for name, weight in zip(profile_names(sigma_rels), solution.coefficients[i]):
      term = jax.tree_util.tree_map(lambda x, w=weight: np.float64(w) * np.asarray(x, np.float64),
                                    snapshot["power_ema"][name])
      total = term if total is None else jax.tree_util.tree_map(np.add, total, term)
  params = jax.tree_util.tree_map(lambda x: x.astype(np.float32), total)
  return (params, solution) if return_info else params


def write_reconstruction(config, workdir, sigma_rel, *, step=None, output_dir=None):
  """Reconstructs the post-hoc EMA (`reconstruct`) and saves it as a training state whose parameters and
  averages are all that EMA, at the snapshot's step, in `output_dir` (default
  `<workdir>/posthoc_ema/sigma_rel_<sigma_rel>`; its `checkpoints/` are what `--mode=eval --workdir=<dir>`
  and `checkpoint.load_model` read); the run's `config.json` goes along. Returns `(output_dir, step)`."""
  params, solution = reconstruct(config, workdir, sigma_rel, step=step, return_info=True)
  step = max(snapshot_manager(workdir).all_steps()) if step is None else int(step)
  output_dir = output_dir or os.path.join(workdir, POSTHOC_DIR, f"sigma_rel_{sigma_rel:g}")
  state = jax.jit(lambda: _initial_state(config),  # one compiled init (the optimizer state's structure)
                  out_shardings=parallel.replicated(parallel.make_mesh()))()
  params = jax.tree_util.tree_map(lambda x, like: jax.device_put(jnp.asarray(x), like.sharding), params,
                                  state.params)
  state = state.replace(step=jnp.asarray(step, jnp.int32), params=params, ema_params=params,
                        power_ema={name: params for name in state.power_ema})
  manager = checkpoint.get_manager(os.path.join(output_dir, checkpoint.SNAPSHOT_DIR))
  checkpoint.save(manager, step, state)
  if jax.process_index() == 0:
    with open(os.path.join(output_dir, "posthoc_ema.json"), "w") as f:
      json.dump({"sigma_rel": sigma_rel, "step": step, "source": os.path.abspath(workdir),
                 "profile_relative_error": solution.relative_error}, f, indent=1)
    config_path = os.path.join(workdir, "config.json")
    if os.path.exists(config_path):
      with open(config_path) as f, open(os.path.join(output_dir, "config.json"), "w") as out:
        out.write(f.read())
  return output_dir, step


__all__ = ["EMA_TYPES", "Reconstruction", "check_ema_config", "gamma_to_sigma_rel", "power_gammas",
           "profile_inner", "profile_names", "reconstruct", "save_snapshot", "sigma_rel_to_gamma",
           "snapshot_manager", "solve_reconstruction", "update", "write_reconstruction"]
