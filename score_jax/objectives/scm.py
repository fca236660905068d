"""`scm`: continuous-time consistency models (sCM; Lu & Song 2025, "Simplifying, stabilizing and scaling
continuous-time consistency models", Algorithm 1) on TrigFlow's path, `training.sde = "cosine"`.

On x = cos(theta) x0 + sin(theta) z, theta = pi t / 2, the `flow` parameterization's denoiser is TrigFlow's
consistency function f(x, theta) = cos(theta) x - sin(theta) F(x, theta), with F = dx/dtheta = (2 / pi) v the
network's velocity in angle units; f(x, 0) = x exactly. Consistency asks df/dtheta = 0 along the probability-flow
ODE; sCM follows the gradient of that condition, with the tangent through the network taken by `jax.jvp`:

  g = cos(theta) df/dtheta = -cos^2 (F- - dx/dtheta) - r cos sin (x + dF-/dtheta),
  loss = |F - sg(F-) - g / (rms(g) + c)|^2 / D,

F- the network held fixed (same weights, same dropout), dx/dtheta the path's own velocity cos z - sin x0
(consistency training) or a teacher's (distillation: `training.teacher_workdir` set), and the paper's three
stabilisers: the tangent's second term ramped in, r = min(1, step / `training.scm_warmup_steps`); the tangent
normalised per example (c = 0.1; by its root mean square, so the constant means the same at any image size);
and the adaptive weighting, a learned u(sigma) (`training.loss_weighting = "uncertainty"`, set by the scm
configs). Noise levels sigma = tan(theta) are log-normal (`training.edm_p_mean`, `training.edm_p_std`).

Units: the path's noise has unit variance, so TrigFlow's sigma_d is 1 here and data of std 0.5 (images in
[-1, 1]) meet the paper's signal-to-noise ratios at the same sigma (tan(theta) = sigma).
"""

import dataclasses
import math
from typing import Any, ClassVar

import jax
import jax.numpy as jnp

from score_jax import sde as sde_lib
from score_jax.objectives.base import Objective, attached_teacher, normal_per_example, output, scalar_per_example
from score_jax.utils import batch_mul

TANGENT_NORM_CONSTANT = 0.1  # c of the tangent normalisation (Lu & Song 2025, Sec. 4.3)
ANGLE_RATE = 0.5 * math.pi   # dtheta / dt on the cosine path


def velocity_tangent(velocity_fn, x, t, dx_dt):
  """(v(x, t), dv/dt): the network's velocity and its total derivative along a path with velocity `dx_dt`
  (`(B, ...)`) at times `t` (`(B,)`), by one `jax.jvp` (forward-mode) through the network."""
  return jax.jvp(velocity_fn, (x, t), (dx_dt, jnp.ones_like(t)))


def refuse_cudnn_attention(model, objective):
  """Raises a `ValueError` for a network with cuDNN's attention, which `jax.jvp` cannot go through (before any
  compile); `objective` names the `training.objective` that takes the jvp."""
  if getattr(getattr(model, "network", model), "attention", None) == "cudnn":
    raise ValueError(f"training.objective={objective!r} takes jax.jvp through the network, which cuDNN's attention "
                     "(model.attention='cudnn', reverse-mode only) refuses: use 'xla' or 'chunked'")


def consistency_tangent(velocity, velocity_rate, x, t, dx_dt, warmup=1.0):
  """g = cos(theta) df/dtheta in angle units from the velocity v = dx/dt predicted at (x, t), its total derivative
  `velocity_rate` along the ODE, the ODE's velocity `dx_dt` and the warm-up factor r of the second term; zero
  where f(x, theta) = cos x - sin F is constant along the ODE."""
  theta = ANGLE_RATE * t
  cos, sin = jnp.cos(theta), jnp.sin(theta)
  prediction, rate = velocity / ANGLE_RATE, velocity_rate / ANGLE_RATE**2   # F and dF/dtheta
  ode_velocity = dx_dt / ANGLE_RATE
  return (batch_mul(-cos**2, prediction - ode_velocity)
          - warmup * batch_mul(cos * sin, x + rate))


def normalised(g):
  """g / (rms(g) + c) per example."""
  rms = jnp.sqrt(jnp.mean(jnp.square(g).reshape(g.shape[0], -1), axis=-1))
  return batch_mul(1.0 / (rms + TANGENT_NORM_CONSTANT), g)


@dataclasses.dataclass(frozen=True)
class SCM(Objective):
  """sCT (no teacher) or sCD (`training.teacher_workdir`: a trained model on the same cosine path); the train
  step's counter sets the tangent warm-up."""

  p_mean: float = -1.0          # ln sigma ~ N(p_mean, p_std^2) (`training.edm_p_mean`, `training.edm_p_std`)
  p_std: float = 1.4
  warmup_steps: int = 10000     # `training.scm_warmup_steps`
  teacher_workdir: str = ""     # `training.teacher_workdir`: "" for sCT
  teacher: Any = None           # sCD's loaded teacher

  reports_noise_levels: ClassVar[bool] = True
  parameterization: ClassVar[str] = "trigflow"
  refines: ClassVar[tuple] = ("reference", "flow")

  @classmethod
  def options(cls, config):
    training = config.training
    return dict(p_mean=training.edm_p_mean, p_std=training.edm_p_std, warmup_steps=training.scm_warmup_steps,
                teacher_workdir=training.teacher_workdir)

  def check(self):
    if not isinstance(self.sde, sde_lib.CosinePath):
      raise ValueError(f"training.objective='scm' trains on TrigFlow's path: set training.sde='cosine', not "
                       f"{type(self.sde).__name__}")
    if self.warmup_steps < 0:
      raise ValueError(f"training.scm_warmup_steps={self.warmup_steps} must be >= 0")
    refuse_cudnn_attention(self.model, "scm")

  def frozen_variables(self):
    return {"teacher": attached_teacher(self).variables} if self.teacher_workdir else {}

  def draw(self, keys, x):
    return {"noise": normal_per_example(keys["noise"], x),
            "time": scalar_per_example(keys["time"], x.shape[0], jax.random.normal)}

  def loss(self, call, x, draws, inputs=None):
    sde = call.sde
    sigma = jnp.exp(self.p_mean + self.p_std * draws["time"])
    t = jnp.minimum(sde.noise_level_to_t(sigma), sde.T)
    mean_scale, std = sde.marginal_coeffs(t)
    z = draws["noise"]
    x_t, _ = sde.perturb(x, t, z)
    if self.teacher_workdir:
      teacher_fn = attached_teacher(self).denoiser_fn(inputs["teacher"], sde, class_labels=call.class_labels)
      denoised = teacher_fn(x_t, t)
      noise = batch_mul(1.0 / std, x_t - batch_mul(mean_scale, denoised))
      dx_dt = ANGLE_RATE * (batch_mul(mean_scale, noise) - batch_mul(std, denoised))
    else:
      dx_dt = ANGLE_RATE * (batch_mul(mean_scale, z) - batch_mul(std, x))
    dx_dt = jax.lax.stop_gradient(dx_dt)
    held = dataclasses.replace(call, variables=jax.lax.stop_gradient(call.variables)).output_fn()
    velocity, velocity_rate = velocity_tangent(lambda y, s: held(y, s).astype(jnp.float32), x_t, t, dx_dt)
    warmup = jnp.minimum(1.0, inputs["step"] / self.warmup_steps) if self.warmup_steps else 1.0
    g = jax.lax.stop_gradient(normalised(consistency_tangent(velocity, velocity_rate, x_t, t, dx_dt, warmup)))
    prediction = call.output_fn()(x_t, t).astype(jnp.float32) / ANGLE_RATE
    held_prediction = jax.lax.stop_gradient(velocity) / ANGLE_RATE
    per_example = jnp.mean(jnp.square(prediction - held_prediction - g).reshape(x.shape[0], -1), axis=-1)
    return output(per_example, noise_levels=sde.noise_level(t))
