"""EDM2's post-hoc EMA: the stored snapshots of the tracked power EMAs, and the reconstruction of any width.

Every `training.ema_snapshot_freq` steps a `model.ema_type = "power"` run stores its tracked averages
(`<workdir>/ema_snapshots/<step>`). After training, `reconstruct` finds the average of *any* sigma_rel at
any stored step from the snapshots up to that step (the weights of `ema.solve_reconstruction`, Karras et
al. 2024, Algorithm 3), and `write_reconstruction` saves it as a checkpoint that `--mode=eval`, the
samplers and `trained_model.load_model` read:

    python main.py --config=configs/digits_cfg.py --workdir=runs/cfg --mode=reconstruct_ema --sigma_rel=0.08
"""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from score_jax import checkpoint, ema, parallel
from score_jax.run_setup import RunSetup, trained_run_config
from score_jax.train_state import profile_names

SNAPSHOT_DIR = "ema_snapshots"
POSTHOC_DIR = "posthoc_ema"


def snapshot_manager(workdir):
  """The orbax manager of `<workdir>/ema_snapshots` (every snapshot kept; atomic like checkpoints)."""
  return checkpoint.get_manager(os.path.join(workdir, SNAPSHOT_DIR))


def save_snapshot(manager, step, state, sigma_rels):
  """Stores the tracked averages of `state` at `step` with their sigma_rels (a no-op if stored)."""
  checkpoint.save(manager, step, {"sigma_rels": np.asarray(sigma_rels, np.float64),
                                  "power_ema": state.power_ema})


def snapshot_target(params_shapes, num_profiles):
  """The structure a snapshot restores into, for parameters shaped like `params_shapes`."""
  return {"sigma_rels": np.zeros((num_profiles,), np.float64),
          "power_ema": {name: params_shapes for name in profile_names(range(num_profiles))}}


def reconstruct(config, workdir, sigma_rel, *, step=None, return_info=False):
  """The post-hoc EMA of relative width `sigma_rel` at `step` (default: the newest snapshot) from the
  snapshots in `<workdir>/ema_snapshots` up to that step: `params` (numpy float32, the model's structure),
  the weighted sum of the stored averages with weights that sum to 1.

  With `return_info`, returns `(params, ema.Reconstruction)`.

  Raises:
    ValueError: not a power-EMA config, no snapshot, or `step` not stored.
  """
  config = trained_run_config(workdir, config)  # the run's own config.json
  ema.check_ema_config(config)
  if config.model.ema_type != "power":
    raise ValueError("post-hoc EMA needs a run trained with model.ema_type='power'")
  gamma = ema.sigma_rel_to_gamma(sigma_rel)
  manager = snapshot_manager(workdir)
  steps = sorted(manager.all_steps())
  if not steps:
    raise ValueError(f"no EMA snapshots in {os.path.join(workdir, SNAPSHOT_DIR)}; train with "
                     "model.ema_type='power' and training.ema_snapshot_freq")
  step = steps[-1] if step is None else int(step)
  if step not in steps:
    raise ValueError(f"step={step} has no EMA snapshot; stored: {steps}")
  steps = [s for s in steps if s <= step]
  sigma_rels = tuple(config.model.ema_sigma_rels)
  run = RunSetup(config, companions=())
  params_shapes = checkpoint.abstract_state(lambda: run.initial_state(jax.random.PRNGKey(0)).params, run.mesh)
  target = snapshot_target(params_shapes, len(sigma_rels))
  solution = ema.solve_reconstruction(steps, [ema.sigma_rel_to_gamma(s) for s in sigma_rels], step, gamma)
  logging.info("Post-hoc EMA sigma_rel=%g at step %d from %d snapshots x %d profiles: profile error %.2e "
               "(least-squares weights summed to %.4f before normalisation)", sigma_rel, step, len(steps),
               len(sigma_rels), solution.relative_error, solution.least_squares_sum)
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
  and `trained_model.load_model` read); the run's `config.json` goes along. Returns `(output_dir, step)`."""
  config = trained_run_config(workdir, config)  # the run's own config.json
  params, solution = reconstruct(config, workdir, sigma_rel, step=step, return_info=True)
  step = max(snapshot_manager(workdir).all_steps()) if step is None else int(step)
  output_dir = output_dir or os.path.join(workdir, POSTHOC_DIR, f"sigma_rel_{sigma_rel:g}")
  run = RunSetup(config, companions=())
  state = jax.jit(run.initial_state,  # one compiled init (the optimizer state)
                  out_shardings=parallel.replicated(run.mesh))(jax.random.PRNGKey(0))
  params = jax.tree_util.tree_map(lambda x, like: jax.device_put(jnp.asarray(x), like.sharding), params,
                                  state.params)
  state = state.replace(step=jnp.asarray(step, jnp.int32), params=params, ema_params=params,
                        power_ema={name: params for name in state.power_ema})
  manager = checkpoint.get_manager(os.path.join(output_dir, checkpoint.SNAPSHOT_DIR))
  checkpoint.save(manager, step, state)
  if jax.process_index() == 0:
    with open(os.path.join(output_dir, "posthoc_ema.json"), "w") as f:
      json.dump({"sigma_rel": sigma_rel, "step": step, "source": os.path.abspath(workdir),
                 "profile_relative_error": solution.relative_error,
                 "least_squares_sum": solution.least_squares_sum}, f, indent=1)
    config_path = os.path.join(workdir, "config.json")
    if os.path.exists(config_path):
      with open(config_path) as f, open(os.path.join(output_dir, "config.json"), "w") as out:
        out.write(f.read())
  return output_dir, step
