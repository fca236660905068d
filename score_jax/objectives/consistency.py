"""`consistency_training`: improved consistency training (Song & Dhariwal 2024, "Improved techniques for training
consistency models"), on any SDE through its noise level.

The noise levels of step k are Karras et al.'s rho = 7 grid of N(k) + 1 levels between sigma_min (the samplers'
end time) and sigma_max (the SDE's end), N(k) doubling from 10 to 1280 over training (`training.consistency_schedule
= "ict"`: N(k) = min(10 * 2^floor(k / K'), 1280), K' = floor(K / (log2(1280 / 10) + 1)) for K = `training.n_iters`).
Each example draws an interval (sigma_i, sigma_i+1) with the discretised log-normal of ln sigma ~ N(-1.1, 2^2)
and one noise z, and the network's consistency function f (the `consistency` parameterization, whose boundary
condition makes f the identity at sigma_min) is pulled towards its own value one level lower, held fixed (no EMA
target): loss lambda d(f(x_i+1, sigma_i+1), sg f(x_i, sigma_i)) with x_i = m (x0 + sigma_i z), lambda = 1 / (sigma_i+1
- sigma_i) and d the pseudo-Huber distance sqrt(|a - b|^2 + c^2) - c, c = 0.00054 sqrt(dim) (or the squared
distance, `training.consistency_loss = "l2"`). Both evaluations share the step's dropout key.
"""

import dataclasses
import math
from typing import Any, ClassVar

import jax
import jax.numpy as jnp

from score_jax.models import parameterization_of
from score_jax.objectives.base import Objective, attached_teacher, normal_per_example, output, scalar_per_example
from score_jax.sampling.heun import karras_ode_step
from score_jax.sampling.schedules import karras_sigmas
from score_jax.utils import batch_mul, choice_error

P_MEAN, P_STD = -1.1, 2.0          # the discretised log-normal of the noise levels
START_STEPS, END_STEPS = 10, 1280   # the discretisation's N at the start and the end of training
SCHEDULES = ("ict",)
LOSSES = ("pseudo_huber", "l2")


def discretisation_steps(step, total_steps):
  """N(k) of the iCT schedule: 10 doubling to 1280 in log2(128) + 1 = 8 equal stages of training."""
  stages = math.floor(math.log2(END_STEPS / START_STEPS)) + 1
  stage_length = max(total_steps // stages, 1)
  return jnp.minimum(START_STEPS * 2 ** (step // stage_length), END_STEPS)


def interval_index(uniform, num_steps, sigma_min, sigma_max):
  """The interval i in [0, N) with probability proportional to erf((ln sigma_i+1 - P_MEAN) / (sqrt 2 P_STD)) -
  erf((ln sigma_i - P_MEAN) / (sqrt 2 P_STD)), by inverting the CDF at `uniform` (`(B,)` in [0, 1))."""
  edges = karras_sigmas(jnp.arange(END_STEPS + 1), num_steps, sigma_min, sigma_max)
  cdf = jax.scipy.special.erf((jnp.log(edges) - P_MEAN) / (math.sqrt(2.0) * P_STD))
  weights = jnp.where(jnp.arange(END_STEPS) < num_steps, cdf[1:] - cdf[:-1], 0.0)
  cumulative = jnp.cumsum(weights)
  index = jnp.searchsorted(cumulative, uniform * cumulative[-1], side="right")
  return jnp.minimum(index, num_steps - 1)


def pseudo_huber(a, b):
  """sqrt(|a - b|^2 + c^2) - c per example, c = 0.00054 sqrt(dim) (Song & Dhariwal 2024, Sec. 3.3)."""
  dim = math.prod(a.shape[1:])
  c = 0.00054 * math.sqrt(dim)
  return jnp.sqrt(jnp.sum(jnp.square(a - b).reshape(a.shape[0], -1), axis=-1) + c**2) - c


@dataclasses.dataclass(frozen=True)
class ConsistencyTraining(Objective):
  """iCT on the `consistency` parameterization; the train step's counter sets the discretisation."""

  schedule: str = "ict"         # `training.consistency_schedule`: the discretisation curriculum
  distance: str = "pseudo_huber"  # `training.consistency_loss`: pseudo_huber | l2
  total_steps: int = 1          # `training.n_iters`: the run's length (the curriculum's stages)

  parameterization: ClassVar[str] = "consistency"
  refines: ClassVar[tuple] = ("reference", "edm")

  @classmethod
  def options(cls, config):
    return dict(schedule=config.training.consistency_schedule, distance=config.training.consistency_loss,
                total_steps=config.training.n_iters)

  def check(self):
    if self.schedule not in SCHEDULES:
      raise choice_error("training.consistency_schedule", self.schedule, SCHEDULES)
    if self.distance not in LOSSES:
      raise choice_error("training.consistency_loss", self.distance, LOSSES)

  def draw(self, keys, x):
    return {"noise": normal_per_example(keys["noise"], x), "time": scalar_per_example(keys["time"], x.shape[0])}

  def noise_levels(self, sde):
    """(sigma_min, sigma_max): the noise levels of the samplers' end time and of the SDE's end T."""
    t_min = parameterization_of(self.model).t_min
    return sde.noise_level(jnp.float32(t_min)), sde.noise_level(jnp.float32(sde.T))

  def loss(self, call, x, draws, inputs=None):
    sde = call.sde
    num_steps = discretisation_steps(inputs["step"], self.total_steps)
    sigma_min, sigma_max = self.noise_levels(sde)
    index = interval_index(draws["time"], num_steps, sigma_min, sigma_max)
    sigma, sigma_next = (karras_sigmas(i, num_steps, sigma_min, sigma_max) for i in (index, index + 1))
    consistency_fn = call.denoiser_fn()

    def f(level):
      t = sde.noise_level_to_t(level)
      return consistency_fn(sde.perturb(x, t, draws["noise"])[0], t)

    target = jax.lax.stop_gradient(f(sigma))
    prediction = f(sigma_next)
    if self.distance == "pseudo_huber":
      distance = pseudo_huber(prediction, target)
    else:
      distance = jnp.mean(jnp.square(prediction - target).reshape(x.shape[0], -1), axis=-1)
    return output(distance / (sigma_next - sigma))


# ------------------------------------------------------------------------------------ distillation

TEACHER_SOLVERS = ("euler", "heun")
TARGET_EMA = 0.95  # the target network's decay (Song et al. 2023's CIFAR-10 consistency distillation)


@dataclasses.dataclass(frozen=True)
class LearnsFromTeacher(Objective):
  """An objective that learns from a frozen teacher's ODE steps (`training.teacher_workdir`, read by the driver
  and passed in as `teacher`: a `trained_model.TrainedRun`; its variables reach the step as `inputs["teacher"]`)."""

  teacher_workdir: str = ""     # `training.teacher_workdir`
  teacher_solver: str = "heun"  # `training.teacher_solver`: euler | heun
  teacher_steps: int = 18       # `training.teacher_steps`: the levels of its grid
  teacher: Any = None           # the loaded teacher

  @classmethod
  def options(cls, config):
    training = config.training
    return dict(teacher_workdir=training.teacher_workdir, teacher_solver=training.teacher_solver,
                teacher_steps=training.teacher_steps)

  def check(self):
    if not self.teacher_workdir:
      raise ValueError(f"training.objective={self.settings.objective!r} needs training.teacher_workdir (a trained "
                       "run's workdir)")
    if self.teacher_solver not in TEACHER_SOLVERS:
      raise choice_error("training.teacher_solver", self.teacher_solver, TEACHER_SOLVERS)
    if self.teacher_steps < 2:
      raise ValueError(f"training.teacher_steps={self.teacher_steps} must be at least 2 (the levels of its grid)")

  def frozen_variables(self):
    return {"teacher": attached_teacher(self).variables}


def teacher_step(denoiser_fn, sde, x, sigma, sigma_next, solver):
  """One step of the probability-flow ODE from noise level `sigma` down to `sigma_next` (`(B,)` each) of the
  denoiser `denoiser_fn(x, t)` under `sde`: Karras et al.'s step in the scaled variable x / m
  (`sampling.heun.karras_ode_step`), Euler's (which is DDIM's) or Heun's. Returns x at the time of `sigma_next`."""
  mean_scale = lambda level: sde.marginal_coeffs(sde.noise_level_to_t(level))[0]  # noqa: E731

  def denoiser(x_hat, level):
    return denoiser_fn(batch_mul(mean_scale(level), x_hat), sde.noise_level_to_t(level))

  x_hat = batch_mul(1.0 / mean_scale(sigma), x)
  return batch_mul(mean_scale(sigma_next), karras_ode_step(denoiser, x_hat, sigma, sigma_next, solver == "heun"))


@dataclasses.dataclass(frozen=True)
class ConsistencyDistillation(LearnsFromTeacher):
  """Consistency distillation (Song et al. 2023, Algorithm 2): on Karras's rho = 7 grid of `training.teacher_steps`
  levels (18, the paper's CIFAR-10 setting) between sigma_min and sigma_max, an interval (sigma_n, sigma_n+1) uniformly per example, x at sigma_n+1
  from the data, the teacher's ODE step (`training.teacher_solver`) down to sigma_n, and the distance
  (`training.consistency_loss`) between the student's f at sigma_n+1 and its EMA target's f at the teacher's
  point (decay `TARGET_EMA`). The target is the objective's state."""

  distance: str = "pseudo_huber"  # `training.consistency_loss`: pseudo_huber | l2

  parameterization: ClassVar[str] = "consistency"
  refines: ClassVar[tuple] = ("reference", "edm")

  @classmethod
  def options(cls, config):
    return dict(super().options(config), distance=config.training.consistency_loss)

  def check(self):
    super().check()
    if self.distance not in LOSSES:
      raise choice_error("training.consistency_loss", self.distance, LOSSES)

  def init_state(self, params):
    return {"target": params}

  def update_state(self, state, params):
    return {"target": jax.tree_util.tree_map(lambda a, b: TARGET_EMA * a + (1 - TARGET_EMA) * b, state["target"],
                                             params)}

  def draw(self, keys, x):
    return {"noise": normal_per_example(keys["noise"], x), "time": scalar_per_example(keys["time"], x.shape[0])}

  def loss(self, call, x, draws, inputs=None):
    sde = call.sde
    num_steps = self.teacher_steps - 1
    sigma_min = sde.noise_level(jnp.float32(parameterization_of(self.model).t_min))
    sigma_max = sde.noise_level(jnp.float32(sde.T))
    index = jnp.minimum((draws["time"] * num_steps).astype(jnp.int32), num_steps - 1)
    sigma, sigma_next = (karras_sigmas(i, num_steps, sigma_min, sigma_max) for i in (index, index + 1))
    t_next = sde.noise_level_to_t(sigma_next)
    noisy, _ = sde.perturb(x, t_next, draws["noise"])
    teacher_fn = attached_teacher(self).denoiser_fn(inputs["teacher"], sde, class_labels=call.class_labels)
    stepped = jax.lax.stop_gradient(teacher_step(teacher_fn, sde, noisy, sigma_next, sigma, self.teacher_solver))
    target_call = dataclasses.replace(call, variables={**call.variables, "params": inputs["target"]})
    target = jax.lax.stop_gradient(target_call.denoiser_fn()(stepped, sde.noise_level_to_t(sigma)))
    prediction = call.denoiser_fn()(noisy, t_next)
    if self.distance == "pseudo_huber":
      return output(pseudo_huber(prediction, target))
    return output(jnp.mean(jnp.square(prediction - target).reshape(x.shape[0], -1), axis=-1))
