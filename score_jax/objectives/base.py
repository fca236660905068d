"""What every training objective shares: its settings, the loss struct, the model calls it makes, and
the `Objective` interface the registry (`score_jax.objectives`) builds.

Randomness. A step's key is split once into one key per purpose (`rng.purpose_keys`: the noise, the
times, the network's dropout, the class-label dropout, the projections, the decoder's noise); an
objective draws example i's value of a purpose from `fold_in(purpose_key, i)` (`rng.per_example`), or
one value for the batch from the purpose key itself, so a purpose key is either a parent of per-example
keys or sampled from, never both, and no two purposes share a key.
"""

import dataclasses
from typing import Any, ClassVar, Optional

import flax
import jax
import jax.numpy as jnp

from score_jax import elbo
from score_jax.base_config import BASE
from score_jax.models import (get_average_velocity_fn, get_denoiser_fn, get_model_fn, get_output_fn,
                              get_score_fn)
from score_jax.objectives.repa import RepaConfig
from score_jax.rng import PURPOSES, per_example, purpose_keys  # noqa: F401 -- the purposes, named here too


@flax.struct.dataclass
class LossOutput:
  loss: jax.Array          # scalar, the batch mean
  per_example: jax.Array   # (B,)
  terms: Any = None        # objectives with named parts (the `vdm` bound's prior, reconstruction, diffusion)
  noise_levels: Any = None  # (B,) each example's noise level sigma = std / m, where a learned weighting may read it


def reduce_per_example(x, reduce_mean):
  """Per-example reduction: mean over dims, or the reference's 0.5 * sum (docs/differences.md)."""
  x = x.reshape(x.shape[0], -1)
  return jnp.mean(x, axis=-1) if reduce_mean else 0.5 * jnp.sum(x, axis=-1)


def output(per_example_losses, terms=None, noise_levels=None):
  return LossOutput(jnp.mean(per_example_losses), per_example_losses, terms, noise_levels)


def normal_per_example(key, x):
  """N(0, I) shaped like one example of `x`, for each example from `fold_in(key, i)`."""
  return per_example(key, x.shape[0], lambda k: jax.random.normal(k, x.shape[1:]))


def scalar_per_example(key, batch_size, sampler=jax.random.uniform):
  """One scalar `sampler(key_i, ())` per example (default U[0, 1)), from `key_i = fold_in(key, i)`."""
  return per_example(key, batch_size, lambda k: sampler(k, ()))


_TRAINING = BASE.training


@dataclasses.dataclass(frozen=True)
class LossConfig:
  """What every objective's loss shares (`config.training`, `model.num_classes`), typed; each objective reads
  its own keys (`Objective.options`). The defaults are the base configuration's (`base_config.BASE`)."""

  objective: str = _TRAINING.objective
  continuous: bool = _TRAINING.continuous
  reduce_mean: bool = _TRAINING.reduce_mean
  eps: float = _TRAINING.eps
  num_classes: int = BASE.model.num_classes     # class-conditional model: batches are (x, class labels)
  class_dropout: float = _TRAINING.class_dropout  # probability of the null class in training
  loss_weighting: str = _TRAINING.loss_weighting    # none | uncertainty (`weigh_by_uncertainty`)
  repa: Any = None  # REPA's settings (`repa.RepaConfig`), None when `training.repa_weight` is 0

  @classmethod
  def from_config(cls, config):
    training = config.training
    return cls(objective=training.objective, continuous=training.continuous, reduce_mean=training.reduce_mean,
               eps=training.eps, num_classes=config.model.num_classes, class_dropout=training.class_dropout,
               loss_weighting=training.loss_weighting, repa=RepaConfig.from_config(config))


def pixel_levels(config):
  """The 8-bit pixel levels of image data in model space (after the data scaler); None for flat data."""
  if config.data.dim:
    return None
  low, high = (-1.0, 1.0) if config.data.centered else (0.0, 1.0)
  return elbo.PixelLevels(low, high, 256)


@dataclasses.dataclass(frozen=True)
class ModelCall:
  """The model at one step: its variables, dropout key and class labels, read as the function an
  objective needs (the score, the denoiser, the raw output, or the reference's network convention)."""

  model: Any
  sde: Any                 # bound to the variables (a learned schedule's parameters are the model's)
  variables: Any
  train: bool
  rng: Any = None          # the dropout key
  class_labels: Any = None

  def _options(self):
    return dict(train=self.train, continuous=True, rng=self.rng, class_labels=self.class_labels)

  def score_fn(self):
    return get_score_fn(self.sde, self.model, self.variables, **self._options())

  def denoiser_fn(self, sde=None):
    return get_denoiser_fn(self.sde if sde is None else sde, self.model, self.variables, **self._options())

  def output_fn(self):
    return get_output_fn(self.sde, self.model, self.variables, **self._options())

  def average_velocity_fn(self):
    """`u_fn(x, r, t)`: a flow map's average velocity over [r, t] (`models.get_average_velocity_fn`)."""
    return get_average_velocity_fn(self.sde, self.model, self.variables, **self._options())

  def log_variance(self, noise_levels):
    """u(sigma), `(B,)`: the model's learned log-variance of the loss at `noise_levels` (`training.loss_weighting
    = "uncertainty"`)."""
    return self.model.apply(self.variables, noise_levels, method="log_variance")

  def network_method(self, name):
    """`fn(*args)`: the raw network's method `name` with the variables, e.g. an autoencoder's `encode` / `decode`."""
    return lambda *args: self.model.apply(self.variables, name, *args, method="network_method")

  def model_fn(self):
    return get_model_fn(self.model, self.variables, train=self.train, rng=self.rng,
                        class_labels=self.class_labels)


def attached_teacher(objective):
  """The frozen teacher an objective was built with (its `teacher` field, a `trained_model.TrainedRun`); a
  `ValueError` when none is: the drivers load it from `training.teacher_workdir`."""
  if getattr(objective, "teacher", None) is None:
    raise ValueError(f"training.objective={objective.settings.objective!r} was built without its teacher: the "
                     "drivers load it from training.teacher_workdir (score_jax.trained_model.load_teacher)")
  return objective.teacher


@dataclasses.dataclass(frozen=True)
class Objective:
  """A training objective. Subclasses are frozen dataclasses of their own settings (read from the config by
  `options`, checked by `check`), registered by name in `score_jax.objectives.OBJECTIVES`, and implement
  `draw` and `loss`.

  `loss(call, x, draws, inputs)` receives, beyond the batch, `inputs`: `{"step": the train step's counter}`,
  the objective's own state (`init_state`: a target network, advanced by `update_state` and checkpointed with
  the train state) and the variables of its frozen companions by role (`frozen_variables`: a teacher's, passed
  to the step by the driver, never checkpointed). An objective that trains a parameterization of its own
  names it in `parameterization` (the config's `model.parameterization` is set to it at the entry).
  """

  sde: Any
  model: Any
  settings: LossConfig

  discrete_time: ClassVar[bool] = False  # trained with integer labels (`training.continuous=False`)
  reports_noise_levels: ClassVar[bool] = False  # its `LossOutput.noise_levels` are set: a learned weighting applies
  parameterization: ClassVar[Optional[str]] = None  # the parameterization it trains, whatever the config says
  refines: ClassVar[tuple] = ()  # `model.parameterization` values that give way to it (it refines them)
  generative: ClassVar[bool] = True  # trains a model that samples (False: an autoencoder, which has no sampler)

  @classmethod
  def options(cls, config):
    """`{field: value}`: this objective's own settings, read from the (completed) config."""
    del config
    return {}

  def check(self):
    """Raises a `ValueError` naming the key for settings this objective does not define (before any compile)."""

  def draw(self, keys, x):
    """`{name: array}`: the step's random draws for the batch `x`, from `purpose_keys(rng)`."""
    raise NotImplementedError

  def loss(self, call, x, draws, inputs=None):
    """`LossOutput` of the batch `x` (model space) for the model `call` (`ModelCall`) at `draws`."""
    raise NotImplementedError

  def frozen_variables(self):
    """`{role: variables}` of the frozen companions the step needs (a teacher's); empty for most objectives."""
    return {}

  def start_from(self):
    """`(workdir, key)`: the trained run whose EMA weights the run starts from ("" for random weights) and the
    config key that names it; None: `training.init_workdir`, as for most objectives."""
    return None

  def init_state(self, params):
    """The objective's own checkpointed state, from the initial parameters; None when it has none."""
    del params
    return None

  def update_state(self, state, params):
    """The objective's state after an optimizer step that produced `params`."""
    del params
    return state
