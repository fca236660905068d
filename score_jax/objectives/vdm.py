"""`vdm`: the continuous-time ELBO of Kingma et al. 2021 (`score_jax.elbo`) with antithetic times.

On a learned schedule (`learned_vpsde`) the times are uniform and the schedule's shape follows the
gradient of the diffusion loss's variance (VDM Sec. 5.1), its endpoints and the network that of the
bound; on a fixed schedule the times are importance-sampled in log-SNR (`elbo.importance_times`). The
loss is the bound per dimension in nats; its three terms come back in `LossOutput.terms`.
"""

import dataclasses

import jax

from score_jax import elbo, noise_schedule, sde as sde_lib
from score_jax.models import get_denoiser_fn
from score_jax.objectives.base import Objective, normal_per_example, output, pixel_levels


def elbo_start(sde, settings):
  """t0 of the ELBO: 0 for SDEs with std(0) > 0 (VDM's schedules), else `training.eps`."""
  return 0.0 if sde.noisy_at_zero else settings.eps


def learned_schedule_elbo(model, sde, variables, x0, t, z_t, z_0, levels, *, train, rng, class_labels=None):
  """Per-example ELBO on a learned schedule, `(total, diffusion)`, with VDM's gradients.

  The network and the endpoints gamma_0, gamma_1 get the gradient of the bound; the schedule's shape u
  (to which the bound is invariant, VDM Sec. 5.1) gets that of the diffusion loss's second moment,
  E[2 L_diff dL_diff / du], which minimises its variance. One backward pass: u(t_i), u'(t_i) are
  per-example inputs of the loss, so their cotangents, scaled by 2 L_diff_i, pass on to the shape.
  """
  times = lambda shape_params: noise_schedule.shape_and_rate(shape_params, t)  # noqa: E731

  def per_example(params, shape_values):
    bound = sde.bind({"params": params})
    gamma_t = noise_schedule.gamma_from_shape(params["noise_schedule"], *shape_values)
    pinned = sde_lib.GammaVPSDE(gamma_fn=lambda _: gamma_t, N=sde.N)  # the schedule at t_i, as inputs
    denoiser_fn = get_denoiser_fn(pinned, model, {**variables, "params": params}, train=train, rng=rng,
                                  class_labels=class_labels)
    diffusion = sde.T * elbo.diffusion_loss(denoiser_fn, pinned, x0, t, z_t)
    return elbo.prior_kl(bound, x0) + elbo.reconstruction_nll(bound, x0, 0.0, z_0, levels) + diffusion, diffusion

  @jax.custom_vjp
  def bound_terms(params, shape_params):
    return per_example(params, times(shape_params))

  def forward(params, shape_params):
    shape_values, shape_vjp = jax.vjp(times, shape_params)
    (total, diffusion), loss_vjp = jax.vjp(per_example, params, shape_values)
    return (total, diffusion), (loss_vjp, shape_vjp, diffusion)

  def backward(residuals, cotangents):
    loss_vjp, shape_vjp, diffusion = residuals
    params_grad, shape_values_grad = loss_vjp(cotangents)
    variance_grad = jax.tree_util.tree_map(lambda g: 2.0 * diffusion * g, shape_values_grad)
    return params_grad, shape_vjp(variance_grad)[0]

  bound_terms.defvjp(forward, backward)
  params = variables["params"]
  return bound_terms(params, params["noise_schedule"]["shape"])


@dataclasses.dataclass(frozen=True)
class VDM(Objective):
  """The bound at one antithetic time per example: t_i from frac(u + i / B), one u per batch."""

  pixel_levels: elbo.PixelLevels = None  # 8-bit data: the decoder's levels in model space; None: continuous data
  uniform_dequantization: bool = False   # refused with pixel levels (`data.uniform_dequantization`)

  @classmethod
  def options(cls, config):
    return dict(pixel_levels=pixel_levels(config), uniform_dequantization=config.data.uniform_dequantization)

  def check(self):
    if self.pixel_levels is not None and self.uniform_dequantization:
      raise ValueError("training.objective='vdm' scores 8-bit pixels with a discrete decoder; "
                       "data.uniform_dequantization=True moves them off their levels: set it to False")

  def draw(self, keys, x):
    # One uniform for the batch, sampled from the time key itself (not a parent of other keys).
    return {"noise": normal_per_example(keys["noise"], x),
            "decoder_noise": normal_per_example(keys["decoder_noise"], x),
            "time": elbo.antithetic_uniforms(keys["time"], x.shape[0])}

  def loss(self, call, x, draws, inputs=None):
    sde, levels = call.sde, self.pixel_levels
    t0 = elbo_start(sde, self.settings)
    if sde.learned_schedule:  # uniform times: the learned shape is what reduces the variance
      t = t0 + draws["time"] * (sde.T - t0)
      total, diffusion = learned_schedule_elbo(self.model, self.sde, call.variables, x, t, draws["noise"],
                                               draws["decoder_noise"], levels, train=call.train, rng=call.rng,
                                               class_labels=call.class_labels)
      terms = {"diffusion": diffusion}
    else:  # a fixed schedule: times importance-sampled in log-SNR
      t, inverse_density = elbo.importance_times(draws["time"], sde, t0)
      prior, reconstruction, diffusion = elbo.elbo_terms(call.denoiser_fn(), sde, x, t, draws["noise"],
                                                         draws["decoder_noise"], t0, levels, inverse_density)
      total = prior + reconstruction + diffusion
      terms = {"prior": prior, "reconstruction": reconstruction, "diffusion": diffusion}
    per_dim = lambda nats: elbo.per_dim(nats, x.shape[1:])  # noqa: E731
    return output(per_dim(total), {name: per_dim(value) for name, value in terms.items()})
