"""The train state: everything a resumed run needs (the steps that update it are in `train_steps`)."""

import flax
import jax
import jax.numpy as jnp
import optax

from score_jax import objectives, sde as sde_lib
from score_jax.models import get_model, init_model


@flax.struct.dataclass
class TrainState:
  """Everything a resumed run needs; no RNG (it is derived from the step)."""

  step: jax.Array
  params: dict
  ema_params: dict
  opt_state: optax.OptState
  model_state: dict  # non-trained collections, e.g. the Fourier features' "constants"

  def variables(self, ema=True):
    """Model variables for `model.apply`, with the EMA parameters by default."""
    return {**self.model_state, "params": self.ema_params if ema else self.params}


@flax.struct.dataclass
class PowerEMATrainState(TrainState):
  """The state of a `model.ema_type='power'` run: also EDM2's power EMAs, `{profile_i: params}` for the
  sigma_rels of `model.ema_sigma_rels` (`score_jax.ema`); `ema_params` is the first of them.

  Fixed-EMA runs keep `TrainState`, so their checkpoints are unchanged."""

  power_ema: dict


@flax.struct.dataclass
class ObjectiveTrainState(TrainState):
  """The state of a run whose objective needs more than the batch (`objectives.Objective.needs`: a
  frozen teacher's variables, a target network): `objective_state`, checkpointed with the rest."""

  objective_state: dict


@flax.struct.dataclass
class PowerEMAObjectiveTrainState(PowerEMATrainState):
  """`PowerEMATrainState` with an objective's state (see `ObjectiveTrainState`)."""

  objective_state: dict


def objective_state(state):
  """The objective's state carried by `state`, or None for objectives that need none."""
  return state.objective_state if isinstance(state, (ObjectiveTrainState, PowerEMAObjectiveTrainState)) else None


def profile_names(sigma_rels):
  """The keys of the power EMAs in the state and its snapshots: `profile_0`, `profile_1`, ... (one per sigma_rel)."""
  return tuple(f"profile_{i}" for i in range(len(sigma_rels)))


def init_train_state(rng, config, optimizer, *, components=None, initial_params=None):
  """The initial state: the model's variables, a learned SDE's parameters (`params["noise_schedule"]`),
  the power EMAs of `model.ema_type='power'` and the objective's own state, if it has one.

  `components`: the run's `run_setup.RunComponents` (its model, SDE and objective), built from `config`
  already; None builds them here. `initial_params`: parameters to start from instead of the random
  initialisation (`training.init_workdir`), of the same structure.
  """
  if components is None:
    sde = sde_lib.get_sde(config)[0]
    model = get_model(config)
    objective = objectives.get_objective(sde, model, objectives.LossConfig.from_config(config))
  else:
    sde, model, objective = components.sde, components.model, components.objective
  variables = init_model(rng, config, model=model)
  params = variables.pop("params")
  params = {**params, **sde.init_params(jax.random.fold_in(rng, 1))}
  if initial_params is not None:
    params = initial_params
  fields = dict(step=jnp.zeros((), jnp.int32), params=params, ema_params=params, opt_state=optimizer.init(params),
                model_state=variables)
  power = config.model.ema_type == "power"
  if power:
    fields["power_ema"] = {name: params for name in profile_names(config.model.ema_sigma_rels)}
  extra = objective.init_state(params)
  if extra is None:
    return (PowerEMATrainState if power else TrainState)(**fields)
  return (PowerEMAObjectiveTrainState if power else ObjectiveTrainState)(**fields, objective_state=extra)
