"""What every training objective shares: its settings, the loss struct, the model calls it makes, and
the `Objective` interface the registry (`score_jax.objectives`) builds.

Randomness. A step's key is split once into one key per purpose (`rng.purpose_keys`: the noise, the
times, the network's dropout, the class-label dropout, the projections, the decoder's noise); an
objective draws example i's value of a purpose from `fold_in(purpose_key, i)` (`rng.per_example`), or
one value for the batch from the purpose key itself, so a purpose key is either a parent of per-example
keys or sampled from, never both, and no two purposes share a key.
"""

import dataclasses
from typing import Any, ClassVar

import flax
import jax
import jax.numpy as jnp

from score_jax import elbo
from score_jax.base_config import BASE
from score_jax.models import get_denoiser_fn, get_model_fn, get_output_fn, get_score_fn
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
  """The loss settings of a run (`config.training`, `model.sigma_data`, `model.num_classes`), typed.

  The defaults are the base configuration's (`score_jax.configuration.BASE`), written once there.
  """

  continuous: bool = _TRAINING.continuous
  likelihood_weighting: bool = _TRAINING.likelihood_weighting
  reduce_mean: bool = _TRAINING.reduce_mean
  eps: float = _TRAINING.eps
  objective: str = _TRAINING.objective
  importance_sampling: bool = _TRAINING.importance_sampling
  edm_p_mean: float = _TRAINING.edm_p_mean   # log-normal noise levels of `edm` (Karras et al. 2022, Table 1)
  edm_p_std: float = _TRAINING.edm_p_std
  sigma_data: float = BASE.model.sigma_data
  ssm_projection: str = _TRAINING.ssm_projection
  pixel_levels: elbo.PixelLevels = None  # 8-bit data: the decoder of the vdm objective; None: continuous data
  uniform_dequantization: bool = BASE.data.uniform_dequantization
  num_classes: int = BASE.model.num_classes     # class-conditional model: batches are (x, class labels)
  class_dropout: float = _TRAINING.class_dropout  # probability of the null class in training
  consistency_schedule: str = _TRAINING.consistency_schedule  # consistency training's discretisation curriculum
  consistency_loss: str = _TRAINING.consistency_loss          # its distance: pseudo_huber | l2
  n_iters: int = _TRAINING.n_iters              # the run's length (the curriculum's stages)
  teacher_workdir: str = _TRAINING.teacher_workdir  # consistency distillation's trained teacher
  teacher_solver: str = _TRAINING.teacher_solver    # its ODE step: euler | heun
  teacher_steps: int = _TRAINING.teacher_steps      # the levels of its grid
  scm_warmup_steps: int = _TRAINING.scm_warmup_steps  # scm's tangent warm-up
  loss_weighting: str = _TRAINING.loss_weighting    # none | uncertainty (`weigh_by_uncertainty`)

  @classmethod
  def from_config(cls, config):
    training = config.training
    return cls(training.continuous, training.likelihood_weighting, training.reduce_mean, training.eps,
               objective=training.objective, importance_sampling=training.importance_sampling,
               edm_p_mean=training.edm_p_mean, edm_p_std=training.edm_p_std, sigma_data=config.model.sigma_data,
               ssm_projection=training.ssm_projection, pixel_levels=pixel_levels(config),
               uniform_dequantization=config.data.uniform_dequantization,
               num_classes=config.model.num_classes, class_dropout=training.class_dropout,
               consistency_schedule=training.consistency_schedule, consistency_loss=training.consistency_loss,
               n_iters=training.n_iters, teacher_workdir=training.teacher_workdir,
               teacher_solver=training.teacher_solver, teacher_steps=training.teacher_steps,
               scm_warmup_steps=training.scm_warmup_steps, loss_weighting=training.loss_weighting)


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

  def log_variance(self, noise_levels):
    """u(sigma), `(B,)`: the model's learned log-variance of the loss at `noise_levels` (`training.loss_weighting
    = "uncertainty"`)."""
    return self.model.apply(self.variables, noise_levels, method="log_variance")

  def model_fn(self):
    return get_model_fn(self.model, self.variables, train=self.train, rng=self.rng,
                        class_labels=self.class_labels)


def attached_teacher(objective):
  """The teacher attached to `objective` (its `teacher` field, a `trained_model.Teacher`); a `ValueError` when
  none is: runs attach it from `training.teacher_workdir`."""
  if getattr(objective, "teacher", None) is None:
    raise ValueError(f"training.objective={objective.settings.objective!r} has no teacher attached: runs attach it "
                     "from training.teacher_workdir (score_jax.trained_model.attach_teacher)")
  return objective.teacher


@dataclasses.dataclass(frozen=True)
class Objective:
  """A training objective. Subclasses are frozen dataclasses of their settings, registered by name in
  `score_jax.objectives.OBJECTIVES`, and implement `draw` and `loss`.

  An objective whose step needs more than the batch and the trained parameters (a frozen teacher's
  variables, a target network) names it in `needs`, builds it in `init_state` and advances it in
  `update_state`; the train state carries it (`train_state.ObjectiveTrainState`) and checkpoints it.
  """

  sde: Any
  model: Any
  settings: LossConfig

  needs: ClassVar[tuple] = ()
  discrete_time: ClassVar[bool] = False  # trained with integer labels (`training.continuous=False`)
  reports_noise_levels: ClassVar[bool] = False  # its `LossOutput.noise_levels` are set: a learned weighting applies

  @classmethod
  def check(cls, settings, sde):
    """Raises a `ValueError` for settings this objective does not define (before any compile)."""

  def draw(self, keys, x):
    """`{name: array}`: the step's random draws for the batch `x`, from `purpose_keys(rng)`."""
    raise NotImplementedError

  def loss(self, call, x, draws, state=None):
    """`LossOutput` of the batch `x` (model space) for the model `call` (`ModelCall`) at `draws`."""
    raise NotImplementedError

  def init_state(self, params):
    """The objective's own state (`needs`), from the initial parameters; None when it needs none."""
    del params
    return None

  def update_state(self, state, params):
    """The objective's state after an optimizer step that produced `params`."""
    del params
    return state
