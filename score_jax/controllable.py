"""Controllable generation (Section 5 and Appendix I of Song et al. 2021): inpainting, colorization, conditioning.

Inpainting and colorization are the PC sampler (Algorithm 1) with a *projection* after every corrector and
predictor update: the known entries are replaced by the data perturbed to the current time,
`m(t) data + std(t) z` (`sde.marginal_prob`, fresh per-sample noise). Colorization is inpainting in a
latent space where the gray image is one channel: `decouple(x) = x M` over the channel axis, with `M`
orthonormal and its first column `1 / sqrt(C)`, so latent channel 0 is `sqrt(C) * gray`.

This "replacement" method is approximate: the unknown entries follow the score at a freshly noised
copy of the known ones, not the score of p_t(x_unknown | x_known(0)). On a 5-D Gaussian with two known
coordinates (tests/test_controllable.py, in closed form), the predictor alone leaves the conditional
mean off by up to 1 std however large N; with the Langevin corrector (the default) the samples come
within ~0.1 std of the conditional mean and ~10% of its variances (sampling error included).

Class-conditional and inverse-problem sampling instead add grad log p(y | x(t)) to the score
(Eq. (14)), which is exact when that gradient is.

Per-sample keys as in `score_jax.sampling`: at step i the corrector, the predictor and the two
projections draw from `fold_in(keys_i, 0..3)`, so with nothing known the samplers reproduce `pc_sample`.

Deviations from the reference, on purpose:
* The projection's `x_mean`: the reference set `x_mean = x (1 - mask) + mean mask` after each projection,
  from the *noisy* projected `x`, so `denoise=True` never removed the last noise from the unknown
  entries; and colorization masked the prior in RGB space before decoupling, which made the initial
  known latent channel a mixture of gray and prior (and dropped the prior's first RGB channel from the
  others). Here `x_mean` keeps the update's `x_mean` for unknown entries and the mask acts in latent
  space. `reference_projection=True` restores the reference (used to replay its recorded runs).
* The classifier's input: the reference's class-conditional sampler normalised it twice (CIFAR
  mean/std in `get_logit_fn`, then per-image standardisation inside the WideResNet). Here
  `log_prob_grad_fn(x, t, labels)` receives the sampler's `x` and `t` and the classifier does its own
  normalisation, once.
* `nfe` counts network evaluations actually made, as `pc_sample` (a `none` predictor or corrector costs
  nothing); a classifier costs none, a classifier-free-guided score (`models.get_score_fn(...,
  guidance_scale=w)`) two per evaluation.

Classifier-free guidance needs nothing here: a guided `score_fn` of a class-conditional model inpaints,
colorizes and samples conditionally like any other.
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from score_jax import sampling
from score_jax.rng import fold_in, per_sample_keys
from score_jax.sampling.common import count_network_evaluations, takes_options
from score_jax.sampling.pc import PCSampler
from score_jax.utils import batch_mul

# The reference's decoupling matrix for RGB (rows: RGB channel, columns: latent channel).
_RGB_DECOUPLING = np.array([[5.7735014e-01, -8.1649649e-01, 4.7008697e-08],
                            [5.7735026e-01, 4.0824834e-01, 7.0710671e-01],
                            [5.7735026e-01, 4.0824822e-01, -7.0710683e-01]], np.float32)


def decoupling_matrix(channels):
  """(M, M^-1) for `channels` colours: M orthonormal with first column 1/sqrt(C) (the reference's for C = 3)."""
  if channels < 2:
    raise ValueError(f"colorization needs at least 2 channels, got {channels}")
  if channels == 3:
    matrix = _RGB_DECOUPLING.astype(np.float64)
  else:  # Gram-Schmidt (QR) of [1/sqrt(C), e_2, ..., e_C]
    basis = np.eye(channels)
    basis[:, 0] = 1.0 / math.sqrt(channels)
    matrix, r = np.linalg.qr(basis)
    matrix = matrix * np.sign(np.diag(r))
  return jnp.asarray(matrix, jnp.float32), jnp.asarray(np.linalg.inv(matrix), jnp.float32)


def conditional_score_fn(score_fn, log_likelihood_grad_fn):
  """The posterior score s(x, t) + grad_x log p(y | x(t)) (Eq. (14)); both functions take `(x, t)`."""
  return lambda x, t: score_fn(x, t) + log_likelihood_grad_fn(x, t)


def classifier_log_prob_grad_fn(logit_fn):
  """`log_prob_grad_fn(x, t, labels)` = grad_x log softmax(logit_fn(x, t))[labels], for `(B,)` int labels."""
  def log_prob_grad_fn(x, t, labels):
    def log_prob(x):
      log_probs = jax.nn.log_softmax(logit_fn(x, t), axis=-1)
      return jnp.sum(jnp.take_along_axis(log_probs, labels[:, None], axis=-1))  # samples are independent
    return jax.grad(log_prob)(x)
  return log_prob_grad_fn

# ------------------------------------------------------------------------------------- the loop


@functools.partial(jax.jit, static_argnames=("sampler", "score_fn", "sde", "reference_projection"))
def _projected_sample(rng, z, known, mask, decoupling, *, sampler, score_fn, sde, reference_projection):
  """Replacement sampling in latent space: `known` and `mask` are latent, `decoupling` (M, M^-1) or None."""
  to_latent, from_latent = (lambda x: x), (lambda x: x)
  if decoupling is not None:
    to_latent = lambda x: jnp.einsum("...i,ij->...j", x, decoupling[0])
    from_latent = lambda x: jnp.einsum("...i,ij->...j", x, decoupling[1])

  def project_fn(keys, x, x_mean, t):
    mean, std = sde.marginal_prob(known, t)
    x = from_latent(to_latent(x) * (1 - mask) + (mean + batch_mul(std, sampler.noise_fn(keys, x))) * mask)
    x_mean = from_latent(to_latent(x if reference_projection else x_mean) * (1 - mask) + mean * mask)
    return x, x_mean

  keys = per_sample_keys(rng, known.shape[0])
  prior = sampling.initial_state(fold_in(keys, 0), sde, known.shape, z)
  # Start from the clean known entries; the reference masked the prior before decoupling.
  prior = to_latent(prior * (1 - mask)) if reference_projection else to_latent(prior) * (1 - mask)
  x = from_latent(known * mask + prior)
  x, x_mean = sampling.pc_loop(keys, x, sampler, score_fn, sde, project_fn=project_fn)
  return x_mean if sampler.denoise else x


def _output(samples, sampler, score_fn, sde):
  nfe = sampling.pc_nfe(sde, sampler.predictor, sampler.corrector, sampler.n_steps)
  return count_network_evaluations(sampling.SampleOutput(samples=samples, nfe=nfe), score_fn)

# ----------------------------------------------------------------------------------- public API


@takes_options(PCSampler)
def pc_inpaint(rng, score_fn, sde, data, mask, *, reference_projection=False, z=None, **options):
  """Inpainting by PC sampling with replacement of the known entries (Appendix I.2 of Song et al. 2021).

  Args:
    rng: PRNG key; sample i uses keys derived from (rng, i) only (see `pc_sample` for `langevin_norm`).
    score_fn: `score_fn(x, t)`, static (reuse the object to avoid retracing).
    sde: the forward SDE; `sde.N` steps on `linspace(T, eps, N)`.
    data: `(B, ...)` data in the model's space; only its known entries are read.
    mask: broadcastable to `data`; 1 marks known entries, which the output keeps (up to `m(eps)`).
    reference_projection: True reproduces the reference's projection, whose `x_mean` keeps the last
      noise in the unknown entries (so `denoise` removes none).
    z: optional prior draw x_T; its known entries are ignored.
    **options: those of `pc_sample` (the fields of `PCSampler`: predictor, corrector, snr, n_steps,
      probability_flow, denoise, eps, langevin_norm, noise_fn); `denoise` returns the last step's
      noise-free mean (unknown entries: the predictor's `x_mean`).

  Returns:
    `SampleOutput(samples shaped like data, nfe)`.
  """
  sampler = PCSampler(**options)
  sampler.check()
  data = jnp.asarray(data, jnp.float32)
  try:
    np.broadcast_to(np.empty(np.shape(mask), np.bool_), data.shape)
  except ValueError:
    raise ValueError(f"mask of shape {np.shape(mask)} does not broadcast to data of shape {data.shape}") from None
  mask = jnp.broadcast_to(jnp.asarray(mask, jnp.float32), data.shape)
  samples = _projected_sample(rng, z, data, mask, None, sampler=sampler, score_fn=score_fn, sde=sde,
                              reference_projection=reference_projection)
  return _output(samples, sampler, score_fn, sde)


@takes_options(PCSampler)
def pc_colorize(rng, score_fn, sde, gray, *, channels=None, reference_projection=False, z=None, **options):
  """Colorization: inpainting of latent channel 0 = sqrt(C) mean_c(gray) after decoupling (Appendix I.3).

  Args:
    gray: `(B, H, W, C)` (the gray image replicated over the C channels, as the reference takes it;
      otherwise its channel mean is the gray value) or `(B, H, W, 1)` (expanded to `channels`).
    channels: the colour channels C of the output when `gray` has one channel (default 3).
    Others: as `pc_inpaint`. The output's channel mean equals the gray image (times m(eps)).

  Returns:
    `SampleOutput(samples (B, H, W, C), nfe)`.
  """
  sampler = PCSampler(**options)
  sampler.check()
  gray = jnp.asarray(gray, jnp.float32)
  given = gray.shape[-1]
  if channels is None:
    channels = 3 if given == 1 else given
  if given not in (1, channels):
    raise ValueError(f"gray has {given} channels; expected 1 or channels={channels}")
  gray = jnp.broadcast_to(gray, gray.shape[:-1] + (channels,))
  matrix, inverse = decoupling_matrix(channels)
  known = jnp.einsum("...i,ij->...j", gray, matrix)
  mask = jnp.zeros((channels,)).at[0].set(1.0)
  samples = _projected_sample(rng, z, known, mask, (matrix, inverse), sampler=sampler, score_fn=score_fn, sde=sde,
                              reference_projection=reference_projection)
  return _output(samples, sampler, score_fn, sde)


@functools.partial(jax.jit, static_argnames=("sampler", "score_fn", "log_prob_grad_fn", "sde", "shape"))
def _conditional_sample(rng, z, labels, scale, *, sampler, score_fn, log_prob_grad_fn, sde, shape):
  guided_fn = conditional_score_fn(score_fn, lambda x, t: scale * log_prob_grad_fn(x, t, labels))
  keys = per_sample_keys(rng, shape[0])
  x = sampling.initial_state(fold_in(keys, 0), sde, shape, z)
  x, x_mean = sampling.pc_loop(keys, x, sampler, guided_fn, sde)
  return x_mean if sampler.denoise else x


@takes_options(PCSampler)
def pc_conditional_sample(rng, score_fn, log_prob_grad_fn, sde, labels, shape, *, scale=1.0, z=None, **options):
  """Class-conditional PC sampling with the score s(x, t) + scale grad_x log p(labels | x(t)) (Eq. (14)).

  Args:
    log_prob_grad_fn: `log_prob_grad_fn(x, t, labels) -> shaped like x`, static; e.g.
      `classifier_log_prob_grad_fn(logit_fn)` for a noise-conditional classifier, which gets the sampler's
      `x` and `t` and normalises its input itself (the reference normalised it twice). For a VE SDE its
      noise level is `sde.marginal_prob(x, t)[1]`.
    labels: per-sample labels (any array with leading dimension B), passed through to `log_prob_grad_fn`.
    shape: `(B, ...)` of the samples.
    scale: guidance weight (1 samples p(x | y); larger sharpens the classifier's preference).
    Others: as `pc_sample` (its options are the fields of `PCSampler`).

  Returns:
    `SampleOutput(samples, nfe)`; `nfe` counts score-model evaluations (the classifier's are extra).
  """
  sampler = PCSampler(**options)
  sampler.check()
  samples = _conditional_sample(rng, z, labels, jnp.asarray(scale, jnp.float32), sampler=sampler, score_fn=score_fn,
                                log_prob_grad_fn=log_prob_grad_fn, sde=sde, shape=tuple(shape))
  return _output(samples, sampler, score_fn, sde)
