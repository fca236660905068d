"""`consistency_training`: improved consistency training (Song & Dhariwal 2024, "Improved techniques for training
consistency models"), on any SDE through its noise level.

With `training.consistency_schedule = "ict"` the noise levels of step k are Karras et al.'s rho = 7 grid of N(k) + 1 levels between sigma_min (the samplers'
end time) and sigma_max (the SDE's end), N(k) doubling from 10 to 1280 over training (`training.consistency_schedule
= "ict"`: N(k) = min(10 * 2^floor(k / K'), 1280), K' = floor(K / (log2(1280 / 10) + 1)) for K = `training.n_iters`).
Each example draws an interval (sigma_i, sigma_i+1) with the discretised log-normal of ln sigma ~ N(-1.1, 2^2)
and one noise z, and the network's consistency function f (the `consistency` parameterization, whose boundary
condition makes f the identity at sigma_min) is pulled towards its own value one level lower, held fixed (no EMA
target): loss lambda d(f(x_i+1, sigma_i+1), sg f(x_i, sigma_i)) with x_i = m (x0 + sigma_i z), lambda = 1 / (sigma_i+1
- sigma_i) and d the pseudo-Huber distance sqrt(|a - b|^2 + c^2) - c, c = 0.00054 sqrt(dim) (or the squared
distance, `training.consistency_loss = "l2"`). Both evaluations share the step's dropout key.

With `training.consistency_schedule = "ect"` (Geng et al. 2024, "Consistency models made easy", and
locuslab/ect's `ECMLoss`): t is drawn from the log-normal ln t ~ N(-1.1, 2^2) (truncated to [sigma_min,
sigma_max]), r = max(t (1 - q^-(s+1) (1 + k sigmoid(-b t))), 0) with q = 2, k = 8, b = 1 at stage s = 0 .. 7 (8
equal stages of `training.n_iters`: the gap t - r halves at each), the target the data itself where r <= sigma_min
(f's boundary) and sg f(x_r, r) elsewhere, and the weighting 1 / (t - r).
"""

import dataclasses
import math
from typing import Any, ClassVar

import jax
import jax.numpy as jnp

from absl import logging

from score_jax.models import parameterization_of
from score_jax.objectives.base import Objective, attached_teacher, normal_per_example, output, scalar_per_example
from score_jax.sampling.heun import karras_ode_step
from score_jax.sampling.schedules import karras_sigmas
from score_jax.utils import batch_mul, choice_error

P_MEAN, P_STD = -1.1, 2.0          # the discretised log-normal of the noise levels
START_STEPS, END_STEPS = 10, 1280   # the discretisation's N at the start and the end of training
SCHEDULES = ("ict", "ect")
LOSSES = ("pseudo_huber", "l2")
ECT_Q, ECT_K, ECT_B = 2.0, 8.0, 1.0  # ECT's mapping r(t) (locuslab/ect ct_train.py's defaults)
ECT_STAGES = 8                       # its stages over training (the gap t - r halves at each)
START_PARAMETERIZATIONS = ("edm", "consistency")  # a run whose weights can start a consistency function


def distance_of(name, default):
  """`training.consistency_loss`: `name`, or the objective's own `default` when it is empty."""
  return name or default


def squared_l2(a, b):
  """|a - b|^2 / dim per example: the squared l2 distance (Song et al. 2023), averaged over the dimensions."""
  return jnp.mean(jnp.square(a - b).reshape(a.shape[0], -1), axis=-1)


def ect_stage(step, total_steps):
  """ECT's stage s in [0, 8): `total_steps` in 8 equal stages."""
  return jnp.minimum(step // max(total_steps // ECT_STAGES, 1), ECT_STAGES - 1)


def ect_r(t, stage):
  """ECT's r(t) = max(t (1 - q^-(s+1) (1 + k sigmoid(-b t))), 0) with q = 2, k = 8, b = 1 at stage `stage`."""
  ratio = 1.0 - ECT_Q ** (-(stage + 1.0)) * (1.0 + ECT_K * jax.nn.sigmoid(-ECT_B * t))
  return jnp.maximum(t * ratio, 0.0)


def truncated_log_normal(uniform, sigma_min, sigma_max):
  """ln sigma ~ N(P_MEAN, P_STD^2) restricted to [sigma_min, sigma_max], by inverting its CDF at `uniform`."""
  low, high = (jax.scipy.special.ndtr((jnp.log(s) - P_MEAN) / P_STD) for s in (sigma_min, sigma_max))
  return jnp.exp(P_MEAN + P_STD * jax.scipy.special.ndtri(low + uniform * (high - low)))


@dataclasses.dataclass(frozen=True)
class StartingPoint:
  """What decides the run a consistency objective may start from: `training.init_workdir` and the settings that
  run must share with this one (read once, with the objective's other options)."""

  init_workdir: str = ""
  sigma_data: float = 0.5
  sde: str = "vesde"

  @classmethod
  def from_config(cls, config):
    return cls(init_workdir=config.training.init_workdir, sigma_data=float(config.model.sigma_data),
               sde=config.training.sde)


def start_mismatch(source_config, start):
  """Why the weights of the run of `source_config` cannot start the consistency function of a run whose
  `StartingPoint` is `start` (one phrase), or "" when they can: the source must have EDM's preconditioning (`edm`
  or `consistency`: the consistency function's c_in, c_noise and, up to sigma_min, c_skip and c_out are EDM's),
  the same `model.sigma_data` and the same path; the network's shapes are checked when the weights are read."""
  theirs = source_config.model.parameterization
  if theirs not in START_PARAMETERIZATIONS:
    return (f"its model.parameterization={theirs!r} is not EDM's preconditioning (one of "
            f"{', '.join(START_PARAMETERIZATIONS)})")
  if float(source_config.model.sigma_data) != start.sigma_data:
    return f"its model.sigma_data={source_config.model.sigma_data} is not this run's {start.sigma_data}"
  if source_config.training.sde != start.sde:
    return f"its training.sde={source_config.training.sde!r} is not this run's {start.sde!r}"
  return ""


def consistency_start(start):
  """`(training.init_workdir, its key)`, refused in one line when that run cannot start a consistency function."""
  from score_jax import trained_model  # noqa: PLC0415 (trained_model builds objectives)

  workdir = start.init_workdir
  if workdir:
    reason = start_mismatch(trained_model.run_config(workdir), start)
    if reason:
      raise ValueError(f"training.init_workdir={workdir!r} cannot start a consistency function: {reason}")
  return workdir, "training.init_workdir"


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

  schedule: str = "ict"         # `training.consistency_schedule`: ict (the discretisation curriculum) | ect
  distance: str = "pseudo_huber"  # `training.consistency_loss`: pseudo_huber | l2 ("" = pseudo_huber)
  total_steps: int = 1          # `training.n_iters`: the run's length (the curriculum's stages)
  start: StartingPoint = StartingPoint()  # `training.init_workdir` and what it must share with this run

  parameterization: ClassVar[str] = "consistency"
  refines: ClassVar[tuple] = ("reference", "edm")

  @classmethod
  def options(cls, config):
    return dict(schedule=config.training.consistency_schedule,
                distance=distance_of(config.training.consistency_loss, "pseudo_huber"),
                total_steps=config.training.n_iters, start=StartingPoint.from_config(config))

  def check(self):
    if self.schedule not in SCHEDULES:
      raise choice_error("training.consistency_schedule", self.schedule, SCHEDULES)
    if self.distance not in LOSSES:
      raise choice_error("training.consistency_loss", self.distance, LOSSES)

  def start_from(self):
    return consistency_start(self.start)

  def draw(self, keys, x):
    return {"noise": normal_per_example(keys["noise"], x), "time": scalar_per_example(keys["time"], x.shape[0])}

  def noise_levels(self, sde):
    """(sigma_min, sigma_max): the noise levels of the samplers' end time and of the SDE's end T."""
    t_min = parameterization_of(self.model).t_min
    return sde.noise_level(jnp.float32(t_min)), sde.noise_level(jnp.float32(sde.T))

  def distance_fn(self, a, b):
    return pseudo_huber(a, b) if self.distance == "pseudo_huber" else squared_l2(a, b)

  def loss(self, call, x, draws, inputs=None):
    if self.schedule == "ect":
      return self.ect_loss(call, x, draws, inputs)
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
    return output(self.distance_fn(prediction, target) / (sigma_next - sigma))

  def ect_loss(self, call, x, draws, inputs):
    """ECT: f at t against sg f at r(t) (the data where r <= sigma_min), weighted by 1 / (t - r)."""
    sde = call.sde
    sigma_min, sigma_max = self.noise_levels(sde)
    t = truncated_log_normal(draws["time"], sigma_min, sigma_max)
    r = ect_r(t, ect_stage(inputs["step"], self.total_steps))
    consistency_fn = call.denoiser_fn()

    def f(level):
      time = sde.noise_level_to_t(level)
      return consistency_fn(sde.perturb(x, time, draws["noise"])[0], time)

    on_data = r <= sigma_min
    target = jnp.where(on_data.reshape((-1,) + (1,) * (x.ndim - 1)), x,
                       jax.lax.stop_gradient(f(jnp.maximum(r, sigma_min))))
    return output(self.distance_fn(f(t), target) / (t - r))


# ------------------------------------------------------------------------------------ distillation

TEACHER_SOLVERS = ("euler", "heun")


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
  levels (18, the paper's CIFAR-10 setting) between sigma_min and sigma_max, an interval (sigma_n, sigma_n+1)
  uniformly per example, x at sigma_n+1 from the data, the teacher's ODE step (`training.teacher_solver`) down to sigma_n, and the distance
  (`training.consistency_loss`) between the student's f at sigma_n+1 and its EMA target's f at the teacher's
  point. As the paper: the squared l2 distance by default, the target the current weights (mu = 0: its CIFAR-10
  setting; `training.consistency_target_ema`, 0.95 its ImageNet-64 / LSUN one, then the target is the objective's
  state), and the student started from the teacher's weights where they can start a consistency function
  (`start_mismatch`; `training.init_from_teacher`)."""

  distance: str = "l2"          # `training.consistency_loss`: l2 | pseudo_huber ("" = l2)
  target_ema: float = 0.0       # `training.consistency_target_ema`: the target's decay mu in [0, 1)
  init_from_teacher: bool = True  # `training.init_from_teacher`
  start: StartingPoint = StartingPoint()  # `training.init_workdir` and what the teacher's run must share with it

  parameterization: ClassVar[str] = "consistency"
  refines: ClassVar[tuple] = ("reference", "edm")

  @classmethod
  def options(cls, config):
    training = config.training
    return dict(super().options(config), distance=distance_of(training.consistency_loss, "l2"),
                target_ema=float(training.consistency_target_ema), init_from_teacher=bool(training.init_from_teacher),
                start=StartingPoint.from_config(config))

  def check(self):
    super().check()
    if self.distance not in LOSSES:
      raise choice_error("training.consistency_loss", self.distance, LOSSES)
    if not 0.0 <= self.target_ema < 1.0:
      raise ValueError(f"training.consistency_target_ema={self.target_ema} must lie in [0, 1) (0: the current "
                       "weights as target)")

  def start_from(self):
    """`training.init_workdir` when set; else the teacher's run where its weights can start the student
    (`start_mismatch`), said in one log line where they cannot."""
    if self.start.init_workdir or not self.init_from_teacher:
      return consistency_start(self.start)
    reason = start_mismatch(attached_teacher(self).config, self.start)
    if reason:
      logging.info("consistency_distillation starts from random weights: training.teacher_workdir=%r %s",
                   self.teacher_workdir, reason)
      return "", "training.teacher_workdir"
    return self.teacher_workdir, "training.teacher_workdir"

  def init_state(self, params):
    return {"target": params} if self.target_ema else None

  def update_state(self, state, params):
    mu = self.target_ema
    return {"target": jax.tree_util.tree_map(lambda a, b: mu * a + (1 - mu) * b, state["target"], params)}

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
    target_call = call
    if self.target_ema:
      target_call = dataclasses.replace(call, variables={**call.variables, "params": inputs["target"]})
    target = jax.lax.stop_gradient(target_call.denoiser_fn()(stepped, sde.noise_level_to_t(sigma)))
    prediction = call.denoiser_fn()(noisy, t_next)
    if self.distance == "pseudo_huber":
      return output(pseudo_huber(prediction, target))
    return output(squared_l2(prediction, target))
