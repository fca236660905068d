"""`meanflow`: MeanFlow (Geng et al. 2025, "Mean flows for one-step generative modeling") and its improved form
(Geng et al. 2025b, "Improved mean flows"; github:Lyy-iiis/imeanflow) on the rectified-flow path x_t = (1 - t) x + t z
(`training.sde = "rectified_flow"`), whose velocity is v = z - x.

The network is a flow map (the `average_velocity` parameterization, which refines `flow`): u(z, r, t), the average
velocity over [r, t], so z_r = z_t - (t - r) u(z_t, r, t) (`sampling.method = "flow_map"`). Differentiating
(t - r) u = integral of v over [r, t] in t gives the MeanFlow identity (Eq. (6))

  u(z_t, r, t) = v(z_t, t) - (t - r) du/dt,   du/dt = v d_z u + d_t u   (dr/dt = 0),

the total derivative taken by one `jax.jvp` through the network with tangent (v, 0, 1) for (z, r, t)
(`scm.velocity_tangent` with r held). The loss regresses u on the stop-gradient target (Eq. (10))

  u_tgt = sg(v - clip(t - r, 0, 1) du/dt),   loss = |u - u_tgt|^2 / sg(|u - u_tgt|^2 + c)^p,

with the adaptive weighting of Sec. 4.3 (power p: `training.meanflow_weight_power`, c = 0.01; p = 1 weighs every
example's gradient to about |u - u_tgt|^-1, so no example's jvp dominates a step). Times (Sec. 4.3, Table 1): t and r
are two logit-normal draws, logit ~ N(`training.edm_p_mean`, `training.edm_p_std`^2) (on this path logit(t) = ln sigma,
EDM's log-normal noise levels), sorted; a share `training.meanflow_r_equals_t` of the examples has r = t, where the
loss is flow matching (the paper's 75%; improved MeanFlow's 50%).

Classifier-free guidance folded into the target (Sec. 4.2 and App. B.1; the released code's `guidance_eq = "cfg"`):
with w = `training.meanflow_guidance_scale` and kappa = `training.meanflow_guidance_mix`,

  v_g = a v + kappa u(z_t, t, t | c) + (1 - a - kappa) u(z_t, t, t | null),   a = (1 + w) (1 - kappa),

the network's own predictions at r = t held fixed; its fixed point is the guided velocity (1 + w) v_c - w v_null,
so one-step samples are guided (w as `sampling.guidance_scale` means it). Examples whose label was dropped
(`training.class_dropout`, needed) keep v_g = v.

`training.meanflow_form = "improved"` builds improved MeanFlow's change to the objective: the jvp's tangent is the
model's own velocity u(z_t, t, t | c) (held fixed) instead of the conditional z - x (or v_g), so the total derivative,
and with it the target, no longer carries the conditional velocity's variance (its "v-loss" V = u + (t - r) sg(du/dt)
against v_g has the same gradient as the loss above). Its guidance form is kappa = w / (1 + w) (then a = 1). Not
built: its auxiliary v-head (here u(z, t, t) is the velocity), its conditioning on the guidance scale and interval,
its t-free conditioning (on t - r alone), and its in-context-token transformer.

Stability: the target is stop-gradient; the jvp's primal is the prediction (one forward-mode pass); the adaptive
weighting bounds each example's gradient; t - r is clipped to [0, 1]; the network's output is float32 whatever
`model.dtype` (`parameterization.call_network`).
"""

import dataclasses
import inspect
from typing import ClassVar

import jax
import jax.numpy as jnp

from score_jax import sde as sde_lib
from score_jax.models import parameterization_of
from score_jax.objectives.base import Objective, normal_per_example, output, per_example, reduce_per_example
from score_jax.objectives.scm import refuse_cudnn_attention, velocity_tangent
from score_jax.utils import batch_mul, choice_error

FORMS = ("original", "improved")
WEIGHT_CONSTANT = 0.01  # c of the adaptive weighting (the released code's norm_eps)


def average_velocity_target(velocity, du_dt, r, t):
  """u_tgt = v - clip(t - r, 0, 1) du/dt (Eq. (10)), not yet stop-gradient; `(B, ...)`, `(B,)` times."""
  return velocity - batch_mul(jnp.clip(t - r, 0.0, 1.0), du_dt)


def adaptively_weighted(squared, power):
  """squared / sg(squared + c)^p per example (Sec. 4.3)."""
  return squared / jax.lax.stop_gradient((squared + WEIGHT_CONSTANT) ** power)


def _time_draws(key):
  """Two standard normals (the logits of t and r) and a uniform (whether r = t) of one example."""
  normal_key, share_key = jax.random.split(key)
  return jnp.concatenate([jax.random.normal(normal_key, (2,)), jax.random.uniform(share_key, (1,))])


@dataclasses.dataclass(frozen=True)
class MeanFlow(Objective):
  """MeanFlow's average-velocity objective (original or improved form) with guidance folded into the target."""

  p_mean: float = -0.4           # logit(t), logit(r) ~ N(p_mean, p_std^2) (`training.edm_p_mean`, `edm_p_std`)
  p_std: float = 1.0
  r_equals_t: float = 0.75       # share of examples with r = t (`training.meanflow_r_equals_t`)
  weight_power: float = 1.0      # p of the adaptive weighting (`training.meanflow_weight_power`)
  guidance_scale: float = 0.0    # w (`training.meanflow_guidance_scale`)
  guidance_mix: float = 0.0      # kappa (`training.meanflow_guidance_mix`)
  form: str = "original"         # `training.meanflow_form`

  parameterization: ClassVar[str] = "average_velocity"
  refines: ClassVar[tuple] = ("reference", "flow")

  @classmethod
  def options(cls, config):
    training = config.training
    return dict(p_mean=training.edm_p_mean, p_std=training.edm_p_std, r_equals_t=training.meanflow_r_equals_t,
                weight_power=training.meanflow_weight_power, guidance_scale=training.meanflow_guidance_scale,
                guidance_mix=training.meanflow_guidance_mix, form=training.meanflow_form)

  def check(self):
    if not isinstance(self.sde, sde_lib.RectifiedFlow):
      raise ValueError(f"training.objective='meanflow' trains on the rectified-flow path: set "
                       f"training.sde='rectified_flow', not {type(self.sde).__name__}")
    if self.form not in FORMS:
      raise choice_error("training.meanflow_form", self.form, FORMS)
    if not 0.0 <= self.r_equals_t <= 1.0:
      raise ValueError(f"training.meanflow_r_equals_t={self.r_equals_t} must lie in [0, 1]")
    if self.weight_power < 0.0:
      raise ValueError(f"training.meanflow_weight_power={self.weight_power} must be >= 0")
    if self.p_std <= 0.0:
      raise ValueError(f"training.edm_p_std={self.p_std} must be positive")
    if self.guidance_scale < 0.0:
      raise ValueError(f"training.meanflow_guidance_scale={self.guidance_scale} must be >= 0")
    if not 0.0 <= self.guidance_mix < 1.0:
      raise ValueError(f"training.meanflow_guidance_mix={self.guidance_mix} must lie in [0, 1)")
    if self.guidance_scale and not (self.settings.num_classes and self.settings.class_dropout):
      raise ValueError(f"training.meanflow_guidance_scale={self.guidance_scale} folds classifier-free guidance into "
                       "the target: it needs a class-conditional model (model.num_classes > 0) trained with "
                       "training.class_dropout > 0 (the null class)")
    network = getattr(self.model, "network", self.model)
    if "interval_labels" not in inspect.signature(type(network).__call__).parameters:
      raise ValueError(f"training.objective='meanflow' needs a network that takes a second time: model.name "
                       f"{type(network).__name__} does not (mlp, ncsnpp, ddpm, edm2 and dit do)")
    refuse_cudnn_attention(self.model, "meanflow")

  def draw(self, keys, x):
    return {"noise": normal_per_example(keys["noise"], x), "time": per_example(keys["time"], x.shape[0], _time_draws)}

  def times(self, draws):
    """(r, t), each `(B,)`: sorted logit-normal draws, r = t for a share `r_equals_t` of the examples."""
    first, second = (jax.nn.sigmoid(self.p_mean + self.p_std * draws["time"][:, i]) for i in (0, 1))
    t, r = jnp.maximum(first, second), jnp.minimum(first, second)
    return jnp.where(draws["time"][:, 2] < self.r_equals_t, t, r), t

  def velocities(self, call, x_t, t, velocity):
    """(v_g, the jvp's tangent): the guided target velocity and the tangent of the form, from the path's
    velocity z - x and the model's own predictions at r = t (held fixed, without dropout)."""
    if not self.guidance_scale and self.form == "original":
      return velocity, velocity
    held = dataclasses.replace(call, variables=jax.lax.stop_gradient(call.variables), train=False)
    if not self.guidance_scale:
      return velocity, held.average_velocity_fn()(x_t, t, t)
    labels = call.class_labels
    null = jnp.full_like(labels, self.settings.num_classes)
    both = dataclasses.replace(held, class_labels=jnp.concatenate([labels, null])).average_velocity_fn()(
        jnp.concatenate([x_t, x_t]), jnp.concatenate([t, t]), jnp.concatenate([t, t]))
    conditional, unconditional = jnp.split(both, 2)
    kappa = self.guidance_mix
    a = (1.0 + self.guidance_scale) * (1.0 - kappa)
    guided = a * velocity + kappa * conditional + (1.0 - a - kappa) * unconditional
    guided = jnp.where((labels == self.settings.num_classes).reshape((-1,) + (1,) * (velocity.ndim - 1)),
                       velocity, guided)
    return guided, conditional if self.form == "improved" else guided

  def loss(self, call, x, draws, inputs=None):
    sde, z = call.sde, draws["noise"]
    r, t = self.times(draws)
    x_t, _ = sde.perturb(x, t, z)
    velocity = parameterization_of(self.model).target(sde, x, z, t)  # z - x
    target_velocity, tangent = self.velocities(call, x_t, t, velocity)
    u_fn = call.average_velocity_fn()
    u, du_dt = velocity_tangent(lambda y, s: u_fn(y, r, s), x_t, t, jax.lax.stop_gradient(tangent))
    target = jax.lax.stop_gradient(average_velocity_target(target_velocity, du_dt, r, t))
    squared = reduce_per_example(jnp.square(u - target), self.settings.reduce_mean)
    return output(adaptively_weighted(squared, self.weight_power), terms={"unweighted": jnp.mean(squared)})
