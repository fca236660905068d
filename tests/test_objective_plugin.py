"""A new objective is one module plus one registry line: here an objective defined and registered in this test
file (the package untouched) trains through the training driver that `main.py --mode=train` calls, receives
the train step's counter, keeps a checkpointed state of its own, and its model loads as a network alone."""

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from score_jax import checkpoint, objectives, run_setup, trained_model
from score_jax.drivers import train
from score_jax.metric_writer import read_metrics
from score_jax.objectives.base import Objective, normal_per_example, output, reduce_per_example
from tests.helpers import tiny_toy_config

NAME = "toy_fixed_level_denoising"


@dataclasses.dataclass(frozen=True)
class FixedLevelDenoising(Objective):
  """|D(x0 + sigma z, t(sigma)) - x0|^2 at one noise level sigma = exp(`training.edm_p_mean`); its state counts
  the steps it has seen and records the last train step it was given."""

  noise_level: float = 1.0

  reports_noise_levels: ClassVar[bool] = True

  @classmethod
  def options(cls, config):
    return dict(noise_level=float(np.exp(config.training.edm_p_mean)))

  def check(self):
    if self.noise_level <= 0:
      raise ValueError("training.edm_p_mean must give a positive noise level")

  def draw(self, keys, x):
    return {"noise": normal_per_example(keys["noise"], x)}

  def loss(self, call, x, draws, inputs=None):
    sigma = jnp.full(x.shape[:1], self.noise_level, jnp.float32)
    t = call.sde.noise_level_to_t(sigma)
    mean_scale = call.sde.marginal_coeffs(t)[0][:, None]
    noisy = mean_scale * (x + self.noise_level * draws["noise"])
    per_example = reduce_per_example(jnp.square(call.denoiser_fn()(noisy, t) - x), True)
    return output(per_example, noise_levels=sigma)

  def init_state(self, params):
    return {"seen": jnp.zeros((), jnp.int32), "last_step": jnp.full((), -1, jnp.int32)}

  def update_state(self, state, params):
    return {"seen": state["seen"] + 1, "last_step": state["last_step"] + 1}


@pytest.fixture
def registered(monkeypatch):
  monkeypatch.setitem(objectives.OBJECTIVES, NAME, FixedLevelDenoising)
  return NAME


def test_a_registered_objective_trains_through_the_training_driver(registered, tmp_path):
  config = tiny_toy_config(**{"training.objective": registered, "training.edm_p_mean": 0.0, "optim.warmup": 0,
                              "training.n_iters": 40, "training.eval_freq": 40})
  assert registered in objectives.objective_choices()
  final = train.train_and_evaluate(config, str(tmp_path))
  assert int(final.step) == 40 and int(final.objective_state["seen"]) == 40
  losses = [row["loss"] for row in read_metrics(str(tmp_path / "metrics.jsonl")) if "loss" in row]
  assert losses[-1] < 0.9 * losses[0], losses  # measured: 0.91 -> 0.76 over the 40 steps
  # Its state is checkpointed as the `objective` item; the model loads without it.
  manager = checkpoint.get_manager(str(tmp_path / checkpoint.SNAPSHOT_DIR))
  restored = checkpoint.restore(manager, 40, run_setup.RunSetup(config).initial_state(jax.random.PRNGKey(0)))
  assert int(restored.objective_state["seen"]) == 40
  _, variables, step = trained_model.load_model(str(tmp_path))
  assert step == 40
  for a, b in zip(jax.tree_util.tree_leaves(variables["params"]), jax.tree_util.tree_leaves(final.ema_params)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_the_loss_receives_the_train_steps_counter(registered):
  """The step passed to the loss is the train state's own counter (no private counter to drift from it)."""
  config = tiny_toy_config(**{"training.objective": registered, "training.n_jitted_steps": 1, "training.log_freq": 1,
                              "training.eval_freq": 1, "training.snapshot_freq": 1,
                              "training.snapshot_freq_for_preemption": 1})
  seen = []

  class Recording(FixedLevelDenoising):
    def loss(self, call, x, draws, inputs=None):
      jax.debug.callback(lambda step: seen.append(int(step)), inputs["step"])
      return super().loss(call, x, draws, inputs)

  objectives.OBJECTIVES[registered] = dataclasses.dataclass(frozen=True)(Recording)
  run = run_setup.RunSetup(config)
  state = run.init_state().replace(step=jnp.asarray(7, jnp.int32))
  state, _ = run.multi_step(state, run.train_batches(7))
  jax.effects_barrier()
  assert seen == [7] and int(state.step) == 8


def test_an_unregistered_name_is_refused_in_one_line():
  config = tiny_toy_config(**{"training.objective": NAME})
  with pytest.raises(ValueError, match=f"training.objective='{NAME}' is not valid; choose one of: "):
    run_setup.RunSetup(config)
