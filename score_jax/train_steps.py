"""The pure train and eval steps (single program; data parallelism is applied by the caller)."""

import jax
import optax

from score_jax import ema
from score_jax.models import project_parameters
from score_jax.objectives import get_loss_fn


def objective_inputs(state, frozen):
  """What an objective's loss receives beyond the batch (`Objective.loss`): the train step's counter, the
  objective's own state and the frozen companions' variables (`frozen`: `Objective.frozen_variables`)."""
  return {"step": state.step, **(state.objective_state or {}), **(frozen or {})}


def get_train_step(objective, optimizer, *, ema_rate, rng, ema_gammas=None):
  """Returns `train_step(state, batch, frozen=None) -> (state, loss)` of `objective` (`objectives.get_objective`);
  its randomness is `fold_in(rng, state.step)`; `frozen`: the companions' variables (`Objective.frozen_variables`).

  The EMA decays by `ema_rate`, or with `ema_gammas` (`ema.power_gammas(config)`) the state's power
  EMAs advance (`score_jax.ema.update`); an objective with its own state (a target network) advances it.
  """
  loss_fn = get_loss_fn(objective, train=True)
  model = objective.model

  def train_step(state, batch, frozen=None):
    step_rng = jax.random.fold_in(rng, state.step)
    inputs = objective_inputs(state, frozen)

    def loss_of(params):
      return loss_fn(step_rng, {**state.model_state, "params": params}, batch, inputs).loss

    loss, grads = jax.value_and_grad(loss_of)(state.params)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = project_parameters(model, optax.apply_updates(state.params, updates))  # EDM2's weight normalisation
    state = state.replace(step=state.step + 1, params=params, opt_state=opt_state)
    if state.objective_state is not None:
      state = state.replace(objective_state=objective.update_state(state.objective_state, params))
    return ema.update(state, ema_rate=ema_rate, gammas=ema_gammas), loss

  return train_step


def get_multi_step(train_step):
  """Scans `train_step` over a leading axis of batches: `(state, batches[n], frozen=None) -> (state, losses[n])`."""
  def multi_step(state, batches, frozen=None):
    return jax.lax.scan(lambda carry, batch: train_step(carry, batch, frozen), state, batches)
  return multi_step


def get_eval_step(objective, *, rng):
  """Returns `eval_step(state, batch, frozen=None) -> loss` with the EMA parameters (the reference's eval loss)."""
  loss_fn = get_loss_fn(objective, train=False)

  def eval_step(state, batch, frozen=None):
    return loss_fn(jax.random.fold_in(rng, state.step), state.variables(ema=True), batch,
                   objective_inputs(state, frozen)).loss

  return eval_step
