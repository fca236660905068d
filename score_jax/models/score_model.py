"""A network with its parameterization, and the score / denoiser functions built from it.

This is the only place where SDE time meets a network: `get_score_fn` and `get_denoiser_fn` ask
the model's parameterization (`score_jax.parameterization`) for the network's inputs and for the
meaning of its output.
"""

import dataclasses
import math
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from score_jax import parameterization as parameterization_lib
from score_jax.utils import batch_mul


class LogVariance(nn.Module):
  """u(sigma): the learned log-variance of the loss at noise level sigma (`training.loss_weighting =
  "uncertainty"`; EDM2's Sec. 5): fixed random Fourier features of c_noise = ln(sigma) / 4 (frequencies
  N(0, 1), phases U[0, 1), EDM2's choice) and one dense layer, initialised to zero (u = 0: the unweighted loss)."""

  features: int = 128

  @nn.compact
  def __call__(self, noise_levels):
    draws = np.random.default_rng(0)  # constants of the architecture, the same in every run
    frequencies = jnp.asarray(draws.standard_normal(self.features), jnp.float32)
    phases = jnp.asarray(draws.uniform(size=self.features), jnp.float32)
    c_noise = jnp.log(noise_levels.astype(jnp.float32)) / 4.0
    embedding = math.sqrt(2.0) * jnp.cos(2 * math.pi * (c_noise[:, None] * frequencies + phases))
    return nn.Dense(1, kernel_init=nn.initializers.zeros)(embedding)[:, 0]


class RepaProjector(nn.Module):
  """h_phi of REPA (Yu et al. 2025, Sec. 3.2): three dense layers with SiLU between them, from the network's tokens
  to the frozen encoder's feature channels (`training.repa_hidden`, the paper's 2048)."""

  hidden: int
  channels: int

  @nn.compact
  def __call__(self, tokens):
    h = nn.silu(nn.Dense(self.hidden)(tokens))
    h = nn.silu(nn.Dense(self.hidden)(h))
    return nn.Dense(self.channels)(h)


class ScoreModel(nn.Module):
  """`network` with its `parameterization`; `apply(variables, x, labels, train, class_labels)` is the raw network.

  The network shares this module's scope, so the variables are the network's own (the reference's
  parameter names, unchanged by the wrapper). A model trained with the learned loss weighting also has its
  `LogVariance` head (`params["log_variance"]`, `apply(variables, sigma, method="log_variance")`), one trained with
  REPA its projector (`params["repa_projector"]`, `apply(variables, tokens, method="repa_projection")`;
  `repa_projector`: `(hidden, channels)`, None without REPA).
  """

  network: nn.Module
  parameterization: parameterization_lib.Parameterization
  learned_weighting: bool = False
  repa_projector: Any = None

  def setup(self):
    nn.share_scope(self, self.network)
    if self.learned_weighting:
      self.log_variance_head = LogVariance(name="log_variance")
    if self.repa_projector is not None:
      self.repa_head = RepaProjector(*self.repa_projector, name="repa_projector")

  def __call__(self, x, labels, train=False, class_labels=None, interval_labels=None):
    if self.parameterization.two_time and interval_labels is None:  # a flow map called at r = t: the velocity
      interval_labels = jnp.zeros(labels.shape, jnp.float32)
    if interval_labels is not None and not self.parameterization.two_time:
      raise ValueError("a second time (interval_labels) needs a two-time model (model.parameterization="
                       "'average_velocity', which training.objective='meanflow' trains)")
    if self.learned_weighting and self.is_initializing():  # its parameters are created with the network's
      self.log_variance(jnp.ones(x.shape[:1], jnp.float32))
    if self.repa_projector is not None and self.is_initializing():
      self.repa_projection(jnp.zeros((1, 1, self.network.hidden_size), jnp.float32))
    conditioning = {} if class_labels is None else {"class_labels": class_labels}  # None: every network, the
    if interval_labels is not None:                                                # null class of conditional ones
      conditioning["interval_labels"] = interval_labels
    return self.network(x, labels, train=train, **conditioning)

  def network_method(self, name, *args):
    """The network's own method `name` on `args` (an autoencoder's `encode` / `decode`), in this module's scope."""
    return getattr(self.network, name)(*args)

  def log_variance(self, noise_levels):
    """u(sigma), `(B,)`, of the learned loss weighting."""
    if not self.learned_weighting:
      raise ValueError("this model has no learned loss weighting (training.loss_weighting='uncertainty')")
    return self.log_variance_head(noise_levels)

  def repa_projection(self, tokens):
    """h_phi(tokens), `(B, N, channels)`, of REPA's projector."""
    if self.repa_projector is None:
      raise ValueError("this model has no REPA projector (training.repa_weight > 0)")
    return self.repa_head(tokens)


def parameterization_of(model):
  """The model's parameterization; a bare network is read with the reference's defaults."""
  return getattr(model, "parameterization", None) or parameterization_lib.Reference()


def project_parameters(model, params):
  """`params` after the network's own constraint, applied by the training step after each optimiser step (EDM2's
  forced weight normalisation: `models.edm2.project_parameters`); unchanged for networks without one."""
  project = getattr(type(getattr(model, "network", model)), "project_parameters", None)
  return project(params) if project is not None else params


def num_classes_of(model):
  """The class count of a class-conditional model (`model.num_classes`), 0 for an unconditional one."""
  return getattr(getattr(model, "network", model), "num_classes", 0)


def get_network_fn(model, variables, *, train=False, rng=None, class_labels=None):
  """Returns `network_fn(x_in, labels) -> raw output`; `rng` drives dropout when `train`.

  `class_labels`: `(B,)` int classes of a class-conditional model (None: the null class).
  """
  conditioning = {} if class_labels is None else {"class_labels": class_labels}  # any network takes none

  def network_fn(x, labels, interval_labels=None):
    rngs = {"dropout": rng} if train and rng is not None else {}
    second = {} if interval_labels is None else {"interval_labels": interval_labels}  # a flow map's second time
    return model.apply(variables, x, labels, train=train, rngs=rngs, **conditioning, **second)
  return network_fn


def guided_network_fn(model, variables, class_labels, guidance_scale, *, train=False, rng=None):
  """`network_fn(x_in, labels, active)`: classifier-free guidance (Ho & Salimans 2022) on the raw output,
  (1 + w) F(x, c) - w F(x, null) where `active` (`(B,)` bool), F(x, c) elsewhere.

  Every parameterization maps the output affinely to D and to the score at fixed (x, t), so guiding
  the output guides both alike. Both predictions come from one network call on twice the batch
  (conditional half first): a guided evaluation costs two network evaluations per sample.
  """
  batch_labels = jnp.asarray(class_labels, jnp.int32)
  null = jnp.full_like(batch_labels, num_classes_of(model))
  network_fn = get_network_fn(model, variables, train=train, rng=rng,
                              class_labels=jnp.concatenate([batch_labels, null]))

  def guided_fn(x, labels, active, interval_labels=None):
    twice = None if interval_labels is None else jnp.concatenate([interval_labels, interval_labels])
    both = network_fn(jnp.concatenate([x, x]), jnp.concatenate([labels, labels]), twice)
    conditional, unconditional = jnp.split(both, 2)
    weight = jnp.where(active, guidance_scale, 0.0).astype(both.dtype)
    return conditional + batch_mul(weight, conditional - unconditional)

  return guided_fn


def get_model_fn(model, variables, *, train=False, rng=None, class_labels=None):
  """Returns `model_fn(x, labels) -> output` of the reference's network convention.

  This is the reference network as score_sde defines it (its input centering and `scale_by_sigma`
  included), fed the labels directly: what the discrete SMLD / DDPM losses train and what released
  checkpoints compute. Defined for the `reference` parameterization only.
  """
  parameterization = parameterization_of(model)
  if not isinstance(parameterization, parameterization_lib.Reference):
    raise ValueError("the reference's network convention (discrete training, raw labels) needs "
                     "model.parameterization='reference'")
  network_fn = get_network_fn(model, variables, train=train, rng=rng, class_labels=class_labels)
  return lambda x, labels: parameterization.reference_output(network_fn, x, labels)


@dataclasses.dataclass(frozen=True)
class GuidingModel:
  """A second model that guides the first (autoguidance, Karras et al. 2024b): its model, its variables, and
  whether it was trained with continuous time labels. The guided denoiser is (1 + w) D_main - w D_guide."""

  model: Any
  variables: Any
  continuous: bool = True


def check_guidance(model, class_labels, guidance_scale, guidance_interval=None, guide=None):
  """Raises a `ValueError` for class labels or guidance a model cannot take (before any compile)."""
  num_classes = num_classes_of(model)
  if class_labels is not None and not num_classes:
    raise ValueError("class_labels need a class-conditional model (model.num_classes > 0)")
  if guidance_scale and class_labels is None and guide is None:
    raise ValueError(f"guidance_scale={guidance_scale} needs class_labels (classifier-free guidance of a "
                     "class-conditional model) or a guiding model (autoguidance: sampling.guidance_workdir)")
  if guidance_interval is not None:
    low, high = guidance_interval
    if not 0.0 <= low < high:
      raise ValueError(f"guidance_interval={tuple(guidance_interval)} must be noise levels (low, high) with "
                       "0 <= low < high")


def _in_interval(sde, t, guidance_interval):
  """`(B,)` bool: the noise level sigma(t) = std / m lies in (low, high] (Kynkaanniemi et al. 2024)."""
  if guidance_interval is None:
    return jnp.ones(t.shape, bool)
  sigma = sde.noise_level(t)
  return (sigma > guidance_interval[0]) & (sigma <= guidance_interval[1])


def _get_output_fn(sde, model, variables, train, continuous, rng, convert, class_labels=None, guidance_scale=0.0,
                   guidance_interval=None, guide=None):
  check_guidance(model, class_labels, guidance_scale, guidance_interval, guide)
  sde = sde.bind(variables)  # a learned schedule takes its parameters from the model's
  parameterization = parameterization_of(model)
  if guidance_scale and guide is not None:
    # Autoguidance: D and the score are affine in each model's output at fixed (x, t), so mixing the converted
    # outputs mixes both alike, whatever each model's parameterization.
    main_fn = _get_output_fn(sde, model, variables, train, continuous, rng, convert, class_labels)
    guide_labels = class_labels if num_classes_of(guide.model) else None
    guide_fn = _get_output_fn(sde, guide.model, guide.variables, train, guide.continuous, rng, convert, guide_labels)

    def output_fn(x, t):
      main = main_fn(x, t)
      weight = jnp.where(_in_interval(sde, t, guidance_interval), guidance_scale, 0.0).astype(main.dtype)
      return main + batch_mul(weight, main - guide_fn(x, t))

    return output_fn
  if guidance_scale:
    guided_fn = guided_network_fn(model, variables, class_labels, guidance_scale, train=train, rng=rng)

    def output_fn(x, t):
      active = _in_interval(sde, t, guidance_interval)
      network_fn = lambda x_in, labels: guided_fn(x_in, labels, active)  # noqa: E731
      output = parameterization.apply_network(network_fn, sde, x, t, continuous)
      return convert(parameterization, sde, output, x, t, continuous)

    return output_fn

  network_fn = get_network_fn(model, variables, train=train, rng=rng, class_labels=class_labels)

  def output_fn(x, t):
    output = parameterization.apply_network(network_fn, sde, x, t, continuous)
    return convert(parameterization, sde, output, x, t, continuous)

  return output_fn


def get_score_fn(sde, model, variables, *, train=False, continuous=True, rng=None, class_labels=None,
                 guidance_scale=0.0, guidance_interval=None, guide=None):
  """Returns `score_fn(x, t) -> score shaped like x` of `model` under `sde`: a `ScoreFunction` that also
  carries the model's own denoiser (`get_denoiser_fn`, which the data-prediction samplers use) and its
  network evaluations per call.

  Args:
    sde: the forward SDE the model was trained with.
    model: `get_model(config)` (a bare network is read with the reference's defaults).
    variables: the model's variables. train, rng: dropout on, with this key.
    continuous: the model was trained with continuous time labels (`training.continuous`).
    class_labels: `(B,)` int classes of a class-conditional model (`model.num_classes`); None: the
      null class, i.e. the unconditional model.
    guidance_scale: classifier-free guidance weight w: the score of (1 + w) D(x, c) - w D(x, null)
      (0: the conditional model itself). A guided score evaluation costs two network evaluations
      (`score_fn.network_evaluations == 2`), made as one call on twice the batch.
    guidance_interval: `(low, high)`: guide only where the noise level sigma(t) = std / m lies in
      (low, high] (Kynkaanniemi et al. 2024); None: everywhere.
    guide: a `GuidingModel`: autoguidance (Karras et al. 2024b) instead of classifier-free guidance, the
      score of (1 + w) D_main(x, c) - w D_guide(x, c) (the guide given the classes when it has them), for
      unconditional and class-conditional models alike; also two network evaluations per call.
  """
  guidance = dict(class_labels=class_labels, guidance_scale=guidance_scale, guidance_interval=guidance_interval,
                  guide=guide)
  score = _get_output_fn(sde, model, variables, train, continuous, rng, lambda p, *args: p.score(*args), **guidance)
  denoiser = get_denoiser_fn(sde, model, variables, train=train, continuous=continuous, rng=rng, **guidance)
  average_velocity = None  # a flow map's u(x, r, t) (`sampling.method = "flow_map"`)
  if parameterization_of(model).two_time and guide is None:
    average_velocity = get_average_velocity_fn(sde, model, variables, train=train, continuous=continuous, rng=rng,
                                               class_labels=class_labels, guidance_scale=guidance_scale,
                                               guidance_interval=guidance_interval)
  # A guided evaluation is one network call on twice the batch: two network evaluations per sample.
  return parameterization_lib.ScoreFunction(score, denoiser, network_evaluations=2 if guidance_scale else 1,
                                            average_velocity=average_velocity)


def get_average_velocity_fn(sde, model, variables, *, train=False, continuous=True, rng=None, class_labels=None,
                            guidance_scale=0.0, guidance_interval=None):
  """Returns `u_fn(x, r, t) -> the average velocity shaped like x` of a flow map (`model.parameterization =
  "average_velocity"`): (x(t) - x(r)) / (t - r) along the probability-flow ODE as the model predicts it, so
  x(r) = x - (t - r) u; at r = t the velocity. Same arguments as `get_score_fn` (classifier-free guidance mixes
  the conditional and null predictions of u, (1 + w) u(x, r, t, c) - w u(x, r, t, null), where the noise level at
  t lies in `guidance_interval`; autoguidance is not defined for flow maps).

  Raises:
    ValueError: the model is not a two-time model, or the guidance does not fit it (before any compile).
  """
  parameterization = parameterization_of(model)
  if not parameterization.two_time:
    raise ValueError("an average velocity u(x, r, t) needs a flow map: model.parameterization='average_velocity' "
                     f"(training.objective='meanflow'), not {type(parameterization).__name__}")
  check_guidance(model, class_labels, guidance_scale, guidance_interval)
  sde = sde.bind(variables)
  if guidance_scale:
    guided_fn = guided_network_fn(model, variables, class_labels, guidance_scale, train=train, rng=rng)

    def u_fn(x, r, t):
      active = _in_interval(sde, t, guidance_interval)
      network_fn = lambda x_in, labels, gap: guided_fn(x_in, labels, active, gap)  # noqa: E731
      return parameterization.apply_two_time_network(network_fn, sde, x, r, t, continuous)

    return u_fn
  network_fn = get_network_fn(model, variables, train=train, rng=rng, class_labels=class_labels)
  return lambda x, r, t: parameterization.apply_two_time_network(network_fn, sde, x, r, t, continuous)


def get_output_fn(sde, model, variables, *, train=False, continuous=True, rng=None, class_labels=None):
  """Returns `output_fn(x, t) -> the raw network output` on the parameterization's inputs at (x, t)
  (what the regression objectives compare with `parameterization.target`)."""
  return _get_output_fn(sde, model, variables, train, continuous, rng, lambda p, sde, output, *args: output,
                        class_labels=class_labels)


def get_denoiser_fn(sde, model, variables, *, train=False, continuous=True, rng=None, class_labels=None,
                    guidance_scale=0.0, guidance_interval=None, guide=None):
  """Returns `denoiser_fn(x, t) -> x0_hat`, D(x, t) = E[x(0) | x(t)] under the model.

  Same arguments as `get_score_fn`; for score-predicting parameterizations D is Tweedie's
  (x + std^2 s) / m. With `guidance_scale` w: (1 + w) D(x, t, c) - w D(x, t, null), or with a `guide`
  (autoguidance) (1 + w) D(x, t, c) - w D_guide(x, t, c).
  """
  denoiser_fn = _get_output_fn(sde, model, variables, train, continuous, rng, lambda p, *args: p.denoised(*args),
                               class_labels=class_labels, guidance_scale=guidance_scale,
                               guidance_interval=guidance_interval, guide=guide)
  return denoiser_fn
