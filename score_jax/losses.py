"""Training objectives (`training.objective`), each a per-example loss at given randomness.

* `dsm`: denoising score matching (Song et al. 2021, Eq. (7)) with lambda(t) = std^2, or g(t)^2
  (`likelihood_weighting`, Song et al. 2021b), optionally with t importance-sampled; models of a
  non-reference parameterization regress their own target instead (`regression_loss`: noise, data,
  v or EDM's F-target). `training.continuous=False`: the reference's SMLD / DDPM losses.
* `edm`: Karras et al. 2022, Sec. 5: log-normal noise levels, lambda(sigma) = (sigma^2 + sigma_data^2)
  / (sigma sigma_data)^2 on the denoiser, for any SDE through its noise level.
* `vdm`: the continuous-time ELBO of Kingma et al. 2021 (`score_jax.elbo`) with antithetic times; on a
  learned schedule (`learned_vpsde`) the times are uniform and the schedule's shape follows the gradient
  of the diffusion loss's variance (VDM Sec. 5.1), its endpoints and the network that of the bound; on
  a fixed schedule the times are importance-sampled in log-SNR (`elbo.importance_times`).
* `ssm`: sliced score matching (Song et al. 2019) on noise-perturbed data, in the variance-reduced
  form |s|^2 + 2 v^T (ds/dx) v, with lambda(t) = std^2.

Randomness is drawn per example from `fold_in(rng, example_index)`, so a batch's
loss does not depend on how the batch is split over devices.
"""

import dataclasses

import flax
import jax
import jax.numpy as jnp

from score_jax import elbo, noise_schedule, sde as sde_lib
from score_jax.models import get_denoiser_fn, get_model_fn, get_output_fn, get_score_fn, parameterization_of
from score_jax.parameterization import Reference
from score_jax.rng import per_example
from score_jax.utils import batch_mul, choice_error


@flax.struct.dataclass
class LossOutput:
  loss: jax.Array          # scalar, the batch mean
  per_example: jax.Array   # (B,)


def _reduce(x, reduce_mean):
  """Per-example reduction: mean over dims, or the reference's 0.5 * sum (B20)."""
  x = x.reshape(x.shape[0], -1)
  return jnp.mean(x, axis=-1) if reduce_mean else 0.5 * jnp.sum(x, axis=-1)


def _perturb(sde, x0, t, z):
  mean, std = sde.marginal_prob(x0, t)
  return mean + batch_mul(std, z), std


def dsm_loss(score_fn, sde, x0, t, z, *, reduce_mean=True, likelihood_weighting=False, time_weight=None):
  """Denoising score matching at given times `t` and noise `z` (Eq. (7); Song et al. 2021b Eq. (9)).

  `time_weight` (`(B,)`) multiplies each example's loss: the importance weight of its time.
  """
  perturbed, std = _perturb(sde, x0, t, z)
  score = score_fn(perturbed, t)
  if likelihood_weighting:
    g2 = sde.sde(jnp.zeros_like(x0), t)[1] ** 2
    losses = _reduce(jnp.square(score + batch_mul(1.0 / std, z)), reduce_mean) * g2
  else:  # lambda(t) = std^2
    losses = _reduce(jnp.square(batch_mul(std, score) + z), reduce_mean)
  if time_weight is not None:
    losses = losses * time_weight
  return LossOutput(jnp.mean(losses), losses)


def regression_loss(output_fn, parameterization, sde, x0, t, z, *, reduce_mean=True):
  """|F(x_t, t) - target|^2: the network output against its parameterization's target (noise, data, v, ...)."""
  perturbed, _ = _perturb(sde, x0, t, z)
  losses = _reduce(jnp.square(output_fn(perturbed, t) - parameterization.target(sde, x0, z, t)), reduce_mean)
  return LossOutput(jnp.mean(losses), losses)


def edm_weight(sigma, sigma_data):
  """lambda(sigma) = (sigma^2 + sigma_data^2) / (sigma sigma_data)^2 (Karras et al. 2022, Table 1)."""
  return (sigma**2 + sigma_data**2) / (sigma * sigma_data) ** 2


def edm_loss(denoiser_fn, sde, x0, sigma, z, *, sigma_data=0.5, reduce_mean=True):
  """lambda(sigma) |D(x, t) - x0|^2 at the noise levels `sigma`, x = m(t) (x0 + sigma z), t = t(sigma).

  With the `edm` parameterization this is |F - F_target|^2 exactly (lambda c_out^2 = 1).
  """
  t = sde.noise_level_to_t(sigma)
  mean_scale = sde.marginal_coeffs(t)[0]
  x = batch_mul(mean_scale, x0 + batch_mul(sigma, z))
  losses = _reduce(jnp.square(denoiser_fn(x, t) - x0), reduce_mean) * edm_weight(sigma, sigma_data)
  return LossOutput(jnp.mean(losses), losses)


def ssm_loss(score_fn, sde, x0, t, z, v, *, reduce_mean=True):
  """Sliced score matching (Song et al. 2019, variance-reduced) at x_t = m x0 + std z with projections `v`.

  std^2 (|s|^2 + 2 v^T (ds/dx) v) per example: in expectation the DSM loss (lambda = std^2) minus
  the dimension (1 per dimension with `reduce_mean`), whatever the score model (Hyvarinen 2005).
  """
  perturbed, std = _perturb(sde, x0, t, z)
  score, jacobian_v = jax.jvp(lambda x: score_fn(x, t), (perturbed,), (v,))
  losses = _reduce(jnp.square(score) + 2.0 * v * jacobian_v, reduce_mean) * std**2
  return LossOutput(jnp.mean(losses), losses)


def smld_loss(model_fn, sde, x0, labels, z, *, reduce_mean=False):
  """NCSN's discrete loss on the descending sigma table; the network gets integer labels."""
  sigmas = sde.discrete_sigmas[::-1][labels]
  noise = batch_mul(sigmas, z)
  score = model_fn(x0 + noise, labels)
  target = -batch_mul(1.0 / sigmas**2, noise)
  losses = _reduce(jnp.square(score - target), reduce_mean) * sigmas**2
  return LossOutput(jnp.mean(losses), losses)


def ddpm_loss(model_fn, sde, x0, labels, z, *, reduce_mean=True):
  """DDPM's epsilon-prediction loss (Ho et al. 2020, Eq. (14)); the network gets integer labels."""
  perturbed = batch_mul(sde.sqrt_alphas_cumprod[labels], x0) + batch_mul(sde.sqrt_1m_alphas_cumprod[labels], z)
  losses = _reduce(jnp.square(model_fn(perturbed, labels) - z), reduce_mean)
  return LossOutput(jnp.mean(losses), losses)


@dataclasses.dataclass(frozen=True)
class LossConfig:
  """The loss settings of `config.training` (and `model.sigma_data`), as a typed value."""

  continuous: bool = True
  likelihood_weighting: bool = False
  reduce_mean: bool = True
  eps: float = 1e-5
  objective: str = "dsm"
  importance_sampling: bool = False
  edm_p_mean: float = -1.2     # log-normal noise levels of the edm objective (Karras et al. 2022, Table 1)
  edm_p_std: float = 1.2
  sigma_data: float = 0.5
  ssm_projection: str = "rademacher"
  pixel_levels: elbo.PixelLevels = None  # 8-bit data: the decoder of the vdm objective; None: continuous data
  num_classes: int = 0        # class-conditional model (`model.num_classes`): batches are (x, class labels)
  class_dropout: float = 0.0  # probability of the null class in training (classifier-free guidance)

  @classmethod
  def from_config(cls, config):
    t = config.training
    return cls(t.continuous, t.likelihood_weighting, t.reduce_mean, t.get("eps", 1e-5),
               objective=t.get("objective", "dsm"), importance_sampling=t.get("importance_sampling", False),
               edm_p_mean=t.get("edm_p_mean", -1.2), edm_p_std=t.get("edm_p_std", 1.2),
               sigma_data=config.model.get("sigma_data", 0.5),
               ssm_projection=t.get("ssm_projection", "rademacher"), pixel_levels=pixel_levels(config),
               num_classes=config.model.get("num_classes", 0), class_dropout=t.get("class_dropout", 0.0))


def pixel_levels(config):
  """The 8-bit pixel levels of image data in model space (after the data scaler); None for flat data."""
  if config.data.get("dim", None):
    return None
  low, high = (-1.0, 1.0) if config.data.centered else (0.0, 1.0)
  return elbo.PixelLevels(low, high, 256)


OBJECTIVES = ("dsm", "edm", "vdm", "ssm")
SSM_PROJECTIONS = ("rademacher", "gaussian")


def check_loss_config(loss_config, sde):
  """Raises a `ValueError` for a combination of settings no objective defines (before any compile)."""
  if loss_config.objective not in OBJECTIVES:
    raise choice_error("training.objective", loss_config.objective, OBJECTIVES)
  if loss_config.ssm_projection not in SSM_PROJECTIONS:
    raise choice_error("training.ssm_projection", loss_config.ssm_projection, SSM_PROJECTIONS)
  if not loss_config.continuous:
    if loss_config.objective != "dsm":
      raise ValueError(f"training.objective={loss_config.objective!r} needs training.continuous=True")
    if loss_config.likelihood_weighting:
      raise ValueError("training.likelihood_weighting=True needs training.continuous=True")
    if sde.discrete_loss is None:
      raise ValueError(f"training.continuous=False is defined for vesde (SMLD) and vpsde (DDPM), "
                       f"not {type(sde).__name__}")
  if loss_config.importance_sampling and not (loss_config.likelihood_weighting and loss_config.objective == "dsm"):
    raise ValueError("training.importance_sampling=True samples t for training.likelihood_weighting=True "
                     "with training.objective='dsm'")
  if not 0.0 <= loss_config.class_dropout < 1.0:
    raise ValueError(f"training.class_dropout={loss_config.class_dropout} must lie in [0, 1)")
  if loss_config.class_dropout and not loss_config.num_classes:
    raise ValueError(f"training.class_dropout={loss_config.class_dropout} needs a class-conditional model "
                     "(model.num_classes > 0)")
  if isinstance(sde, sde_lib.LearnedVPSDE) and loss_config.objective != "vdm":
    raise ValueError("training.sde='learned_vpsde' is trained by training.objective='vdm' (its schedule "
                     "follows the ELBO)")


def elbo_start(sde, loss_config):
  """t0 of the ELBO: 0 for SDEs with std(0) > 0 (VDM's schedules), else `training.eps`."""
  return 0.0 if sde.noisy_at_zero else loss_config.eps


def learned_schedule_elbo(model, sde, variables, x0, t, z_t, z_0, levels, *, train, rng, class_labels=None):
  """Per-example ELBO on a learned schedule, `(total, diffusion)`, with VDM's gradients.

  The network and the endpoints gamma_0, gamma_1 get the gradient of the bound; the schedule's shape u
  (to which the bound is invariant, VDM Sec. 5.1) gets that of the diffusion loss's second moment,
  E[2 L_diff dL_diff / du], which minimises its variance. One backward pass: u(t_i), u'(t_i) are
  per-example inputs of the loss, so their cotangents, scaled by 2 L_diff_i, pass on to the shape.
  """
  times = lambda shape_params: noise_schedule.shape_and_rate(shape_params, t)

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


def split_batch(batch, num_classes):
  """`(x, class_labels)` of a training batch: `x` alone for an unconditional model (labels None), the pair
  `(x, int labels)` for a class-conditional one (`model.num_classes > 0`)."""
  if not num_classes:
    return batch, None
  if not isinstance(batch, (tuple, list)) or len(batch) != 2:
    raise ValueError("a class-conditional model (model.num_classes > 0) trains on (x, class labels) batches")
  return batch[0], jnp.asarray(batch[1], jnp.int32)


def get_loss_fn(sde, model, loss_config, *, train):
  """Returns `loss_fn(rng, variables, batch) -> LossOutput` for `loss_config.objective`.

  Continuous DSM uses the score loss for the `reference` parameterization and the regression on the
  parameterization's target otherwise (the score loss whenever `likelihood_weighting`); discrete
  training uses the SMLD loss for VE and the DDPM loss for VP (the reference's `get_step_fn`).
  The `vdm` loss is the ELBO per dimension in nats. A class-conditional model (`num_classes`) takes
  `(x, class labels)` batches; in training each label becomes the null class with probability
  `class_dropout` (one draw per example), so one network learns D(x, t, c) and D(x, t, null).
  """
  check_loss_config(loss_config, sde)
  parameterization = parameterization_of(model)
  objective = loss_config.objective

  def loss_fn(rng, variables, batch):
    batch, class_labels = split_batch(batch, loss_config.num_classes)
    bound_sde = sde.bind(variables)
    batch_size = batch.shape[0]
    noise_rng, dropout_rng = jax.random.split(rng)
    draw = lambda i, sampler: per_example(jax.random.fold_in(noise_rng, i), batch_size, sampler)
    z = per_example(noise_rng, batch_size, lambda key: jax.random.normal(key, batch.shape[1:]))
    uniform = draw(1, lambda key: jax.random.uniform(key, ()))
    if train and loss_config.class_dropout:
      dropped = draw(5, lambda key: jax.random.uniform(key, ())) < loss_config.class_dropout
      class_labels = jnp.where(dropped, loss_config.num_classes, class_labels)
    fns = dict(train=train, continuous=True, rng=dropout_rng, class_labels=class_labels)
    if not loss_config.continuous:
      labels = draw(1, lambda key: jax.random.randint(key, (), 0, sde.N))
      model_fn = get_model_fn(model, variables, train=train, rng=dropout_rng, class_labels=class_labels)
      discrete_loss = {"smld": smld_loss, "ddpm": ddpm_loss}[sde.discrete_loss]
      return discrete_loss(model_fn, sde, batch, labels, z, reduce_mean=loss_config.reduce_mean)
    t = loss_config.eps + uniform * (sde.T - loss_config.eps)
    if objective == "edm":
      sigma = jnp.exp(loss_config.edm_p_mean + loss_config.edm_p_std * draw(1, lambda key: jax.random.normal(key, ())))
      return edm_loss(get_denoiser_fn(bound_sde, model, variables, **fns), bound_sde, batch, sigma, z,
                      sigma_data=loss_config.sigma_data, reduce_mean=loss_config.reduce_mean)
    if objective == "ssm":
      if loss_config.ssm_projection == "gaussian":
        v = draw(2, lambda key: jax.random.normal(key, batch.shape[1:]))
      else:
        v = draw(2, lambda key: jax.random.rademacher(key, batch.shape[1:], jnp.float32))
      return ssm_loss(get_score_fn(bound_sde, model, variables, **fns), bound_sde, batch, t, z, v,
                      reduce_mean=loss_config.reduce_mean)
    if objective == "vdm":
      t0 = elbo_start(sde, loss_config)
      u = elbo.antithetic_uniforms(jax.random.fold_in(noise_rng, 3), batch_size)
      z_0 = draw(4, lambda key: jax.random.normal(key, batch.shape[1:]))
      if isinstance(sde, sde_lib.LearnedVPSDE):  # uniform times: the learned shape is what reduces the variance
        t = t0 + u * (sde.T - t0)
        total, _ = learned_schedule_elbo(model, sde, variables, batch, t, z, z_0, loss_config.pixel_levels,
                                         train=train, rng=dropout_rng, class_labels=class_labels)
      else:  # a fixed schedule: times importance-sampled in log-SNR
        t, inverse_density = elbo.importance_times(u, bound_sde, t0)
        denoiser_fn = get_denoiser_fn(bound_sde, model, variables, **fns)
        total = sum(elbo.elbo_terms(denoiser_fn, bound_sde, batch, t, z, z_0, t0, loss_config.pixel_levels,
                                    inverse_density))
      losses = elbo.per_dim(total, batch.shape[1:])
      return LossOutput(jnp.mean(losses), losses)
    if loss_config.likelihood_weighting:
      time_weight = None
      if loss_config.importance_sampling:
        t, inverse_density = elbo.importance_times(uniform, bound_sde, loss_config.eps)
        time_weight = inverse_density / (sde.T - loss_config.eps)  # the plain weighting's expectation
      return dsm_loss(get_score_fn(bound_sde, model, variables, **fns), bound_sde, batch, t, z,
                      reduce_mean=loss_config.reduce_mean, likelihood_weighting=True, time_weight=time_weight)
    if isinstance(parameterization, Reference):
      return dsm_loss(get_score_fn(bound_sde, model, variables, **fns), bound_sde, batch, t, z,
                      reduce_mean=loss_config.reduce_mean)
    return regression_loss(get_output_fn(bound_sde, model, variables, **fns), parameterization, bound_sde,
                           batch, t, z, reduce_mean=loss_config.reduce_mean)

  return loss_fn
