"""Randomness of the training objectives, and the state an objective can carry.

With JAX's partitionable threefry, the bits `normal(key, shape)` draws at position j are the key data of
`fold_in(key, j)`: a key that is sampled from and also a parent (or sampled twice) ties two draws
together. These tests run every objective's loss with an interpreter that records each key at the
primitive level (the keys `random_bits` samples from, the keys `random_fold_in` / `random_split`
derive from), and measure the correlation of every purpose's draws with every example's noise. The objectives
that learn from a teacher get the exact denoiser of Gaussian data (`ExactTeacher`): it draws nothing.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from score_jax import checkpoint, objectives, run_setup, sde as sde_lib
from score_jax.models import get_model
from score_jax.objectives.base import purpose_keys
from score_jax.objectives.dsm import DSM
from score_jax.train_steps import get_train_step
from tests.helpers import gaussian_denoiser, tiny_toy_config

TEACHER = {"training.teacher_workdir": "unused"}  # `ExactTeacher` is passed in instead of a run's
CASES = {  # name: config values on the tiny checkerboard config (VP SDE, dsm)
    "dsm": {},
    "dsm-lw-is": {"training.likelihood_weighting": True, "training.importance_sampling": True},
    "edm": {"training.sde": "vesde", "training.objective": "edm"},
    "vdm": {"training.objective": "vdm"},
    "ssm": {"training.objective": "ssm", "training.ssm_projection": "gaussian"},
    "smld": {"training.sde": "vesde", "training.continuous": False},
    "ddpm": {"training.continuous": False},
    "consistency_training": {"training.objective": "consistency_training"},
    "consistency_distillation": {"training.objective": "consistency_distillation", "training.teacher_steps": 6,
                                 **TEACHER},
    "reflow": {"training.objective": "reflow", "training.sde": "rectified_flow", "model.parameterization": "flow",
               "training.teacher_steps": 4, **TEACHER},
    "scm": {"training.objective": "scm", "training.sde": "cosine"},
    "scm-distillation": {"training.objective": "scm", "training.sde": "cosine", **TEACHER},
}
# The objectives that evaluate the trained network twice with the step's dropout key, by design (the prediction
# and its target, or sCM's tangent and prediction, see the same dropout): its keys are sampled twice.
DROPOUT_EVALUATIONS = {"consistency_training": 2, "consistency_distillation": 2, "scm": 2, "scm-distillation": 2}
NUM_CLASSES = 8  # the checkerboard's squares


class ExactTeacher:
  """A frozen teacher without a workdir: the exact denoiser of 1-D N(1.5, 0.5^2) data, per coordinate."""

  variables, sampling_eps = {}, 1e-3

  def denoiser_fn(self, variables, sde, class_labels=None):
    return gaussian_denoiser(sde)


def _objective(case):
  """`(objective, model, variables, inputs)` of `CASES[case]`: a class-conditional model with dropout, its
  objective (class dropout 0.3) and what its loss receives beyond the batch at step 0."""
  config = run_setup.prepare_config(tiny_toy_config(**{
      "model.num_classes": NUM_CLASSES, "model.dropout": 0.1, "training.class_dropout": 0.3,
      "model.num_scales": 100, **CASES[case]}))
  sde, model = sde_lib.get_sde(config)[0], get_model(config)
  teacher = ExactTeacher() if config.training.teacher_workdir else None
  objective = objectives.get_objective(config, sde, model, teacher=teacher)
  variables = model.init({"params": jax.random.PRNGKey(0), "dropout": jax.random.PRNGKey(1)},
                         jnp.zeros((1, 2)), jnp.ones((1,)), train=False)
  variables = dict(variables)
  inputs = {"step": jnp.zeros((), jnp.int32), **(objective.init_state(variables["params"]) or {}),
            **objective.frozen_variables()}
  return objective, model, variables, inputs


def _record_keys(fn, *args):
  """Runs `fn(*args)` primitive by primitive; returns (sampled, parents): the key data (tuples) that
  `random_bits` sampled from and that `random_fold_in` / `random_split` derived from, once per use."""
  sampled, parents = [], []

  def keys_of(value):
    return [tuple(int(v) for v in row) for row in np.asarray(jax.random.key_data(value)).reshape(-1, 2)]

  def run(jaxpr, consts, *args):
    env = {}
    read = lambda v: v.val if hasattr(v, "val") else env[v]  # noqa: E731 -- literals carry their value
    env.update(zip(jaxpr.constvars, consts))
    env.update(zip(jaxpr.invars, args))
    for eqn in jaxpr.eqns:
      values = [read(v) for v in eqn.invars]
      inner = eqn.params.get("jaxpr", eqn.params.get("call_jaxpr"))
      if inner is not None and hasattr(inner, "jaxpr"):  # jit / custom_jvp calls: their body, recorded
        outputs = run(inner.jaxpr, inner.consts, *values)
      else:
        if eqn.primitive.name == "random_bits":
          sampled.extend(keys_of(values[0]))
        elif eqn.primitive.name in ("random_fold_in", "random_split"):
          parents.extend(keys_of(values[0]))
        outputs = eqn.primitive.bind(*values, **eqn.params)
        outputs = outputs if eqn.primitive.multiple_results else [outputs]
      env.update(zip(eqn.outvars, outputs))
    return [read(v) for v in jaxpr.outvars]

  closed = jax.make_jaxpr(fn)(*args)
  run(closed.jaxpr, closed.consts, *jax.tree_util.tree_leaves(args))
  return sampled, parents


@pytest.mark.parametrize("case", sorted(CASES))
def test_no_key_is_sampled_twice_or_also_a_parent(case):
  """Only the dropout keys of one network evaluation repeat, once per evaluation that shares them
  (`DROPOUT_EVALUATIONS`); no key is both sampled from and a parent."""
  objective, model, variables, inputs = _objective(case)
  loss_fn = objectives.get_loss_fn(objective, train=True)
  batch = (jax.random.normal(jax.random.PRNGKey(2), (4, 2)), jnp.arange(4) % NUM_CLASSES)
  sampled, parents = _record_keys(lambda rng, v, b, i: loss_fn(rng, v, b, i).loss, jax.random.PRNGKey(7), variables,
                                  batch, inputs)
  dropout, _ = _record_keys(lambda v: model.apply(v, batch[0], jnp.ones((4,)), train=True, class_labels=batch[1],
                                                  rngs={"dropout": purpose_keys(jax.random.PRNGKey(7))["dropout"]}),
                            variables)
  assert sampled and parents and dropout
  repeated = {key: sampled.count(key) for key in set(sampled) if sampled.count(key) > 1}
  evaluations = DROPOUT_EVALUATIONS.get(case, 1)
  assert repeated == ({key: evaluations for key in dropout} if evaluations > 1 else {}), "a key is sampled from twice"
  assert not set(sampled) & set(parents), "a key is both sampled from and a parent"


@pytest.mark.parametrize("case", ["dsm", "edm", "vdm", "ssm", "ddpm", "consistency_training",
                                  "consistency_distillation", "reflow", "scm"])
def test_purposes_are_uncorrelated_with_every_examples_noise(case):
  """Over many steps, the correlation of each purpose's draws (each example's) with the noise of every
  example is zero within 5 standard errors (1 / sqrt(steps))."""
  objective = _objective(case)[0]
  batch_size, steps = 4, 400
  x = jnp.zeros((batch_size, 3))
  draw_step = jax.jit(lambda step: _draws_of(objective, step, x))
  history = [draw_step(step) for step in range(steps)]
  noise = np.stack([h["noise"] for h in history])  # (steps, B)
  for name in history[0]:
    if name == "noise":
      continue
    values = np.stack([h[name] for h in history])
    for i in range(batch_size):
      for j in range(batch_size):
        correlation = np.corrcoef(values[:, i], noise[:, j])[0, 1]
        assert abs(correlation) < 5 / np.sqrt(steps), (name, i, j, correlation)


def _draws_of(objective, step, x):
  keys = purpose_keys(jax.random.fold_in(jax.random.PRNGKey(11), step))
  draws = {name: jnp.asarray(value).reshape(x.shape[0], -1)[:, 0].astype(jnp.float32)
           for name, value in objective.draw(keys, x).items()}
  draws["labels"] = objectives.drop_labels(keys["labels"], jnp.zeros(x.shape[0], jnp.int32), 1, 0.5).astype(jnp.float32)
  return draws


@dataclasses.dataclass(frozen=True)
class TargetDSM(DSM):
  """DSM plus a pull towards a target network that trails the parameters by an EMA of 0.5: an objective
  with its own state, as consistency distillation's target network is."""

  def init_state(self, params):
    return {"target": params}

  def update_state(self, state, params):
    return {"target": jax.tree_util.tree_map(lambda t, p: 0.5 * t + 0.5 * p, state["target"], params)}

  def loss(self, call, x, draws, inputs=None):
    out = super().loss(call, x, draws, inputs)
    pull = sum(jnp.sum(jnp.square(p - t)) for p, t in zip(jax.tree_util.tree_leaves(call.variables["params"]),
                                                          jax.tree_util.tree_leaves(inputs["target"])))
    return objectives.base.output(out.per_example + pull)


def test_an_objective_carries_its_own_state(monkeypatch, tmp_path):
  """A new objective is one class plus one registry entry; the train state carries its own state
  (`init_state`), every step advances it, and checkpoints keep it."""
  monkeypatch.setitem(objectives.OBJECTIVES, "target_dsm", TargetDSM)
  run = run_setup.RunSetup(tiny_toy_config(**{"training.objective": "target_dsm", "optim.warmup": 0}), companions=())
  state = run.initial_state(jax.random.PRNGKey(0))
  assert state.objective_state is not None and "objective" in state.checkpoint_items()
  step = jax.jit(get_train_step(run.objective, run.optimizer, ema_rate=0.9, rng=jax.random.PRNGKey(3)))
  target = state.params
  for i in range(3):
    state, loss = step(state, jax.random.normal(jax.random.PRNGKey(i), (16, 2)))
    target = jax.tree_util.tree_map(lambda t, p: 0.5 * t + 0.5 * p, target, state.params)
    assert np.isfinite(loss)
  for expected, actual in zip(jax.tree_util.tree_leaves(target), jax.tree_util.tree_leaves(state.objective_state)):
    np.testing.assert_allclose(actual, expected, rtol=1e-6)
  manager = checkpoint.get_manager(tmp_path / "checkpoints")
  checkpoint.save(manager, 3, state)
  restored, restored_step = checkpoint.restore_latest([manager], run.initial_state(jax.random.PRNGKey(1)))
  assert restored_step == 3
  for a, b in zip(jax.tree_util.tree_leaves(restored.objective_state), jax.tree_util.tree_leaves(state.objective_state)):
    np.testing.assert_array_equal(a, b)


def test_plain_objectives_keep_the_checkpoint_layout():
  """Objectives without state add no checkpoint item, so earlier checkpoints restore unchanged."""
  run = run_setup.RunSetup(tiny_toy_config(), companions=())
  state = jax.eval_shape(run.initial_state, jax.random.PRNGKey(0))
  assert state.objective_state is None and set(state.checkpoint_items()) == {"model", "optimizer"}
