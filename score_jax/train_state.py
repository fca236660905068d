"""The train state: everything a resumed run needs (the steps that update it are in `train_steps`)."""

import flax
import jax
import jax.numpy as jnp
import optax

from score_jax import sde as sde_lib
from score_jax.models import init_model


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


def profile_names(sigma_rels):
  """The keys of the power EMAs in the state and its snapshots: `profile_0`, `profile_1`, ... (one per sigma_rel)."""
  return tuple(f"profile_{i}" for i in range(len(sigma_rels)))


def init_train_state(rng, config, optimizer):
  """The initial state: the model's variables, and a learned SDE's parameters (`params["noise_schedule"]`)."""
  variables = init_model(rng, config)
  params = variables.pop("params")
  params = {**params, **sde_lib.get_sde(config)[0].init_params(jax.random.fold_in(rng, 1))}
  fields = dict(step=jnp.zeros((), jnp.int32), params=params, ema_params=params, opt_state=optimizer.init(params),
                model_state=variables)
  if config.model.get("ema_type", "fixed") != "power":
    return TrainState(**fields)
  names = profile_names(config.model.ema_sigma_rels)
  return PowerEMATrainState(**fields, power_ema={name: params for name in names})
