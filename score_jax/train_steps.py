"""The pure train and eval steps (single program; data parallelism is applied by the caller)."""

import jax
import optax

from score_jax import ema, objectives
from score_jax.models import project_parameters
from score_jax.train_state import objective_state


def get_train_step(sde, model, optimizer, loss_config, *, ema_rate, rng, ema_gammas=None, objective=None):
  """Returns `train_step(state, batch) -> (state, loss)`; its randomness is `fold_in(rng, state.step)`.

  The EMA decays by `ema_rate`, or with `ema_gammas` (`ema.power_gammas(config)`) the state's power
  EMAs advance (`score_jax.ema.update`); an objective with its own state (a target network) advances it.
  `objective`: the one `objectives.get_objective(sde, model, loss_config)` built already.
  """
  objective = objectives.get_objective(sde, model, loss_config) if objective is None else objective
  loss_fn = objectives.get_loss_fn(sde, model, loss_config, train=True, objective=objective)

  def train_step(state, batch):
    step_rng = jax.random.fold_in(rng, state.step)
    extra = objective_state(state)

    def loss_of(params):
      return loss_fn(step_rng, {**state.model_state, "params": params}, batch, extra).loss

    loss, grads = jax.value_and_grad(loss_of)(state.params)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = project_parameters(model, optax.apply_updates(state.params, updates))  # EDM2's weight normalisation
    state = state.replace(step=state.step + 1, params=params, opt_state=opt_state)
    if extra is not None:
      state = state.replace(objective_state=objective.update_state(extra, params))
    return ema.update(state, ema_rate=ema_rate, gammas=ema_gammas), loss

  return train_step


def get_multi_step(train_step):
  """Scans `train_step` over a leading axis of batches: `(state, batches[n]) -> (state, losses[n])`."""
  def multi_step(state, batches):
    return jax.lax.scan(train_step, state, batches)
  return multi_step


def get_eval_step(sde, model, loss_config, *, rng, objective=None):
  """Returns `eval_step(state, batch) -> loss` with the EMA parameters (the reference's eval loss)."""
  loss_fn = objectives.get_loss_fn(sde, model, loss_config, train=False, objective=objective)

  def eval_step(state, batch):
    return loss_fn(jax.random.fold_in(rng, state.step), state.variables(ema=True), batch,
                   objective_state(state)).loss

  return eval_step
