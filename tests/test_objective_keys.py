"""Randomness of the training objectives, and the state an objective can carry.

With JAX's partitionable threefry, the bits `normal(key, shape)` draws at position j are the key data of
`fold_in(key, j)`: a key that is sampled from and also a parent (or sampled twice) ties two draws
together. These tests run every objective's loss with an interpreter that records each key at the
primitive level (the keys `random_bits` samples from, the keys `random_fold_in` / `random_split`
derive from), and measure the correlation of every purpose's draws with every example's noise.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from score_jax import checkpoint, objectives, optim, sde as sde_lib
from score_jax.models import get_model
from score_jax.objectives.base import purpose_keys
from score_jax.objectives.dsm import DSM
from score_jax.train_state import ObjectiveTrainState, init_train_state
from score_jax.train_steps import get_train_step
from tests.helpers import tiny_toy_config

CASES = {  # name: (sde, LossConfig fields)
    "dsm": (sde_lib.VPSDE(N=100), {}),
    "dsm-lw-is": (sde_lib.VPSDE(N=100), dict(likelihood_weighting=True, importance_sampling=True)),
    "edm": (sde_lib.VESDE(N=100), dict(objective="edm")),
    "vdm": (sde_lib.VPSDE(N=100), dict(objective="vdm")),
    "ssm": (sde_lib.VPSDE(N=100), dict(objective="ssm", ssm_projection="gaussian")),
    "smld": (sde_lib.VESDE(N=100), dict(continuous=False)),
    "ddpm": (sde_lib.VPSDE(N=100), dict(continuous=False)),
}
NUM_CLASSES = 3


def _model():
  config = tiny_toy_config(**{"model.num_classes": NUM_CLASSES, "model.dropout": 0.1})
  model = get_model(config)
  variables = model.init({"params": jax.random.PRNGKey(0), "dropout": jax.random.PRNGKey(1)},
                         jnp.zeros((1, 2)), jnp.ones((1,)), train=False)
  return model, dict(variables)


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
  sde, fields = CASES[case]
  model, variables = _model()
  settings = objectives.LossConfig(num_classes=NUM_CLASSES, class_dropout=0.3, **fields)
  loss_fn = objectives.get_loss_fn(sde, model, settings, train=True)
  batch = (jax.random.normal(jax.random.PRNGKey(2), (4, 2)), jnp.arange(4) % NUM_CLASSES)
  sampled, parents = _record_keys(lambda rng, v, b: loss_fn(rng, v, b).loss, jax.random.PRNGKey(7), variables, batch)
  assert sampled and parents
  assert len(set(sampled)) == len(sampled), "a key is sampled from twice"
  assert not set(sampled) & set(parents), "a key is both sampled from and a parent"


@pytest.mark.parametrize("case", ["dsm", "edm", "vdm", "ssm", "ddpm"])
def test_purposes_are_uncorrelated_with_every_examples_noise(case):
  """Over many steps, the correlation of each purpose's draws (each example's) with the noise of every
  example is zero within 5 standard errors (1 / sqrt(steps))."""
  sde, fields = CASES[case]
  model, _ = _model()
  objective = objectives.get_objective(sde, model, objectives.LossConfig(**fields))
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
  with its own state, as consistency training's target network is."""

  needs = ("target",)

  def init_state(self, params):
    return {"target": params}

  def update_state(self, state, params):
    return {"target": jax.tree_util.tree_map(lambda t, p: 0.5 * t + 0.5 * p, state["target"], params)}

  def loss(self, call, x, draws, state=None):
    out = super().loss(call, x, draws)
    pull = sum(jnp.sum(jnp.square(p - t)) for p, t in zip(jax.tree_util.tree_leaves(call.variables["params"]),
                                                          jax.tree_util.tree_leaves(state["target"])))
    return objectives.base.output(out.per_example + pull)


def test_an_objective_carries_its_own_state(monkeypatch, tmp_path):
  """A new objective is one class plus one registry entry; the train state carries what it `needs`,
  every step advances it, and checkpoints keep it."""
  monkeypatch.setitem(objectives.OBJECTIVES, "target_dsm", TargetDSM)
  config = tiny_toy_config(**{"training.objective": "target_dsm", "optim.warmup": 0})
  optimizer = optim.get_optimizer(config)
  state = init_train_state(jax.random.PRNGKey(0), config, optimizer)
  assert isinstance(state, ObjectiveTrainState)
  step = jax.jit(get_train_step(sde_lib.VPSDE(N=100), get_model(config), optimizer,
                                objectives.LossConfig.from_config(config), ema_rate=0.9, rng=jax.random.PRNGKey(3)))
  target = state.params
  for i in range(3):
    state, loss = step(state, jax.random.normal(jax.random.PRNGKey(i), (16, 2)))
    target = jax.tree_util.tree_map(lambda t, p: 0.5 * t + 0.5 * p, target, state.params)
    assert np.isfinite(loss)
  for expected, actual in zip(jax.tree_util.tree_leaves(target), jax.tree_util.tree_leaves(state.objective_state)):
    np.testing.assert_allclose(actual, expected, rtol=1e-6)
  manager = checkpoint.get_manager(tmp_path / "checkpoints")
  checkpoint.save(manager, 3, state)
  restored, restored_step = checkpoint.restore_latest([manager], init_train_state(jax.random.PRNGKey(1), config,
                                                                                  optimizer))
  assert restored_step == 3
  for a, b in zip(jax.tree_util.tree_leaves(restored.objective_state), jax.tree_util.tree_leaves(state.objective_state)):
    np.testing.assert_array_equal(a, b)


def test_plain_objectives_keep_the_checkpoint_layout():
  """Objectives without state keep today's `TrainState`, so earlier checkpoints restore unchanged."""
  config = tiny_toy_config()
  state = jax.eval_shape(lambda: init_train_state(jax.random.PRNGKey(0), config, optax.adam(1e-3)))
  assert not isinstance(state, ObjectiveTrainState) and not hasattr(state, "objective_state")
