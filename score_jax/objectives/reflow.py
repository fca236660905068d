"""`reflow`: rectified flow's reflow (Liu et al. 2023, "Flow straight and fast", Sec. 2.3).

A trained model (the teacher, `training.teacher_workdir`) couples each noise z with the sample x(z) its
probability-flow ODE reaches from x(T) = std(T) z; the student learns the path between the pair, x_t =
m(t) x(z) + std(t) z, by the same regression as `dsm` (its parameterization's target: the velocity x(z)'s
path would have, for `flow`). The pairs of one ODE do not cross, so the new flow's paths are straighter and
few Euler steps follow them: on Gaussian data the student's flow is exactly straight and one step is exact.

The pairs are drawn in the training step from the step's noise: the teacher's ODE costs `training.teacher_steps`
levels of `training.teacher_solver` steps (Heun: 2 N - 1 evaluations) per training step, as in the paper's
online variant; the data only give the batch's shape.
"""

import dataclasses

import jax
import jax.numpy as jnp

from score_jax.objectives.base import attached_teacher
from score_jax.objectives.consistency import LearnsFromTeacher, teacher_step
from score_jax.sampling.schedules import karras_sigmas
from score_jax.objectives.dsm import DSM


def teacher_sample(denoiser_fn, sde, z, *, t_min, levels, solver):
  """x(z): the teacher's probability-flow ODE from x(T) = std(T) z over Karras's rho = 7 grid of `levels` noise
  levels from sigma(T) down to sigma(t_min), then its denoised value there (the last step to sigma = 0)."""
  sigma_min, sigma_max = sde.noise_level(jnp.float32(t_min)), sde.noise_level(jnp.float32(sde.T))
  batch = jnp.ones(z.shape[:1], jnp.float32)
  sigma = lambda i: batch * karras_sigmas(levels - 1 - i, levels - 1, sigma_min, sigma_max)  # noqa: E731
  x = sde.marginal_coeffs(jnp.float32(sde.T))[1] * z
  x = jax.lax.fori_loop(0, levels - 1, lambda i, x: teacher_step(denoiser_fn, sde, x, sigma(i), sigma(i + 1), solver), x)
  return denoiser_fn(x, jnp.full(z.shape[:1], t_min, jnp.float32))


@dataclasses.dataclass(frozen=True)
class Reflow(LearnsFromTeacher, DSM):
  """The `dsm` regression on the teacher's pairs (x(z), z) instead of the data's (x0, z)."""

  @classmethod
  def options(cls, config):
    return {**LearnsFromTeacher.options(config), **DSM.options(config)}

  def check(self):
    LearnsFromTeacher.check(self)
    if self.likelihood_weighting:
      raise ValueError("training.objective='reflow' regresses the teacher's pairs: training.likelihood_weighting "
                       "must be False")

  def loss(self, call, x, draws, inputs=None):
    teacher = attached_teacher(self)
    teacher_fn = teacher.denoiser_fn(inputs["teacher"], call.sde, class_labels=call.class_labels)
    pairs = jax.lax.stop_gradient(teacher_sample(teacher_fn, call.sde, draws["noise"], t_min=teacher.sampling_eps,
                                                 levels=self.teacher_steps, solver=self.teacher_solver))
    return DSM.loss(self, call, pairs.astype(x.dtype), draws, inputs)
