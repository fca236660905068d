"""The train state: everything a resumed run needs (the steps that update it are in `train_steps`).

A checkpoint stores it as three orbax items (`checkpoint_items`): `model`, what a trained model is (the step,
the parameters, their EMA, the network's other collections and the power EMAs), read alone by
`trained_model.load_model`; `optimizer`, the optimizer's state; and `objective`, an objective's own state (a
target network), when it has one. Frozen companions (a distillation's teacher) are never part of it: the
drivers read them from their own workdirs.
"""

from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax

MODEL_ITEM, OPTIMIZER_ITEM, OBJECTIVE_ITEM = "model", "optimizer", "objective"


@flax.struct.dataclass
class TrainState:
  """Everything a resumed run needs; no RNG (it is derived from the step)."""

  step: jax.Array
  params: dict
  ema_params: dict
  opt_state: optax.OptState
  model_state: dict            # non-trained collections, e.g. the Fourier features' "constants"
  power_ema: Any = None        # `model.ema_type = "power"`: {profile_i: params} (`score_jax.ema`); else None
  objective_state: Any = None  # an objective's own state (`Objective.init_state`: a target network); else None

  def variables(self, ema=True):
    """Model variables for `model.apply`, with the EMA parameters by default."""
    return {**self.model_state, "params": self.ema_params if ema else self.params}

  def checkpoint_items(self):
    """The orbax items of a checkpoint of this state: `{item name: pytree}` (absent parts left out)."""
    items = {MODEL_ITEM: model_item(self.step, self.params, self.ema_params, self.model_state, self.power_ema),
             OPTIMIZER_ITEM: self.opt_state}
    if self.objective_state is not None:
      items[OBJECTIVE_ITEM] = self.objective_state
    return items

  def from_checkpoint_items(self, items):
    """This state with the restored `items` (of `checkpoint_items`' structure)."""
    model = items[MODEL_ITEM]
    return self.replace(step=model["step"], params=model["params"], ema_params=model["ema_params"],
                        model_state=model["model_state"], power_ema=model.get("power_ema"),
                        opt_state=items[OPTIMIZER_ITEM], objective_state=items.get(OBJECTIVE_ITEM))


def model_item(step, params, ema_params, model_state, power_ema=None):
  """The `model` item of a checkpoint: what `trained_model.load_model` reads."""
  item = {"step": step, "params": params, "ema_params": ema_params, "model_state": model_state}
  if power_ema is not None:
    item["power_ema"] = power_ema
  return item


def profile_names(sigma_rels):
  """The keys of the power EMAs in the state and its snapshots: `profile_0`, `profile_1`, ... (one per sigma_rel)."""
  return tuple(f"profile_{i}" for i in range(len(sigma_rels)))


def init_train_state(variables, optimizer, *, sigma_rels=None, objective_state=None):
  """The initial state from the model's `variables` (`params` and the other collections; a learned SDE's
  parameters are among the params): the optimizer's state, the EMA, the power EMAs of `sigma_rels` (EDM2's
  profiles; None for the fixed EMA) and the objective's own state (None when it has none)."""
  variables = dict(variables)
  params = variables.pop("params")
  power_ema = None if sigma_rels is None else {name: params for name in profile_names(sigma_rels)}
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, ema_params=params,
                    opt_state=optimizer.init(params), model_state=variables, power_ema=power_ema,
                    objective_state=objective_state)
