"""The variational bound of a diffusion model, in the form of Kingma et al. 2021 (VDM), for any SDE.

For data x and x_t = m(t) x + std(t) z on [t0, T],

    -log p(x) <= KL(q(x_T | x) || p_T)                      (prior)
               + E[-log p(x | x_t0)]                         (reconstruction)
               + 1/2 int_t0^T -SNR'(t) E|x - D(x_t, t)|^2 dt  (diffusion)

with SNR = m^2 / std^2 and D the model's denoiser (VDM Eq. (17) in x-space; Song et al. 2021b's
likelihood-weighted DSM is the same integral, g^2 |s - grad log p_0t|^2 = -SNR' |x - D|^2). The
decoder p(x | x_t0) is N(x_t0 / m, sigma(t0)^2) for continuous data, and for 8-bit data the
discretised decoder of VDM (Appendix C): a softmax over the pixel levels. Every term is in nats per
example; `per_dim` / `bits_per_dim` convert.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from score_jax.models import get_denoiser_fn
from score_jax.rng import per_example, purpose_keys
from score_jax.utils import append_dims, batch_mul, flat_sum


@dataclasses.dataclass(frozen=True)
class PixelLevels:
  """The values 8-bit data takes in model space: `count` levels evenly spaced from `low` to `high`."""

  low: float = -1.0
  high: float = 1.0
  count: int = 256

  def values(self):
    return jnp.linspace(self.low, self.high, self.count)

  def index(self, x):
    return jnp.round((x - self.low) / (self.high - self.low) * (self.count - 1)).astype(jnp.int32)


def prior_kl(sde, x0):
  """KL(q(x_T | x0) || N(0, prior_std^2)) in nats, `(B,)`."""
  t = jnp.full((x0.shape[0],), sde.T)
  mean_scale, std = sde.marginal_coeffs(t)
  variance_ratio = append_dims(std**2 / sde.prior_std**2, x0.ndim)
  mean_sq = jnp.square(batch_mul(mean_scale, x0)) / sde.prior_std**2
  return 0.5 * flat_sum(variance_ratio + mean_sq - 1.0 - jnp.log(variance_ratio))


def reconstruction_nll(sde, x0, t0, z, levels=None):
  """E[-log p(x0 | x_t0)] in nats, `(B,)`: at x_t0 = m (x0 + sigma z), sigma = sigma(t0).

  Continuous data (`levels` None): the Gaussian decoder's expectation 1/2 D (log(2 pi sigma^2) + 1);
  8-bit data: -log softmax_k(-(x0 + sigma z - v_k)^2 / (2 sigma^2)) at x0's level k.
  """
  sigma = sde.noise_level(jnp.full((x0.shape[0],), t0))
  if levels is None:
    dim = np.prod(x0.shape[1:])
    return 0.5 * dim * (jnp.log(2 * np.pi * sigma**2) + 1.0)
  noisy = x0 + batch_mul(sigma, z)
  inv_sigma = append_dims(1.0 / sigma, x0.ndim + 1)
  logits = -0.5 * jnp.square((noisy[..., None] - levels.values()) * inv_sigma)
  log_probs = jax.nn.log_softmax(logits, axis=-1)
  chosen = jnp.take_along_axis(log_probs, levels.index(x0)[..., None], axis=-1)[..., 0]
  return -flat_sum(chosen)


def diffusion_loss(denoiser_fn, sde, x0, t, z):
  """1/2 (-SNR'(t)) |x0 - D(x_t, t)|^2 in nats, `(B,)`: the integrand of the diffusion term at `t`."""
  mean_scale, std = sde.marginal_coeffs(t)
  x = batch_mul(mean_scale, x0) + batch_mul(std, z)
  return 0.5 * sde.snr_decay(t) * flat_sum(jnp.square(x0 - denoiser_fn(x, t)))


def importance_times(u, sde, t0):
  """Times drawn with density q(t) proportional to d/dt log sigma(t)^2 from uniforms `u`: `(t, 1 / q(t))`.

  log sigma(t)^2 = (1 - u) log sigma(t0)^2 + u log sigma(T)^2. For the VP and VE SDEs q is
  proportional to g^2 / std^2, so the likelihood-weighted DSM integrand has constant weight (Song et
  al. 2021b's importance sampling); in the bound, -SNR'(t) / q(t) = Z / sigma(t)^2 with Z the log-SNR
  range, which keeps the diffusion term's estimate bounded where uniform times make it heavy-tailed
  near t0. The returned 1 / q(t) keeps any estimate unbiased, for any SDE.
  """
  def log_variance(time):
    return 2.0 * jnp.log(sde.noise_level(time))
  ends = log_variance(jnp.array([t0, sde.T], jnp.float32))
  sigma = jnp.exp(0.5 * ((1.0 - u) * ends[0] + u * ends[1]))
  t = sde.noise_level_to_t(sigma)
  _, rate = jax.jvp(log_variance, (t,), (jnp.ones_like(t),))
  return t, (ends[1] - ends[0]) / rate


def antithetic_uniforms(rng, batch_size):
  """VDM's low-discrepancy uniforms frac(u + i / B) for one uniform u."""
  return jnp.mod(jax.random.uniform(rng, ()) + jnp.arange(batch_size) / batch_size, 1.0)


def antithetic_times(rng, batch_size, t0, t1):
  """VDM's low-discrepancy times: t_i = t0 + (t1 - t0) frac(u + i / B) for one uniform u."""
  return t0 + (t1 - t0) * antithetic_uniforms(rng, batch_size)


def elbo_terms(denoiser_fn, sde, x0, t, z_t, z_0, t0, levels=None, inverse_density=None):
  """The bound's three terms `(prior, reconstruction, diffusion)`, each `(B,)` nats, with the diffusion
  integral estimated at one time `t` in [t0, T] per example (noise `z_t`; `z_0` for the decoder): a
  uniform time, or one of density q with `inverse_density` 1 / q(t) (`importance_times`)."""
  weight = sde.T - t0 if inverse_density is None else inverse_density
  diffusion = weight * diffusion_loss(denoiser_fn, sde, x0, t, z_t)
  return prior_kl(sde, x0), reconstruction_nll(sde, x0, t0, z_0, levels), diffusion


def get_elbo_fn(sde, model, *, t0, levels=None):
  """Returns `elbo_fn(rng, variables, x0) -> (B,)` nats: the bound with one importance-sampled,
  antithetic time per example (`importance_times` of VDM's low-discrepancy uniforms).

  Averaging `elbo_fn` over independent keys converges to the bound (each call is unbiased).
  """
  def elbo_fn(rng, variables, x0):
    bound_sde = sde.bind(variables)
    denoiser_fn = get_denoiser_fn(bound_sde, model, variables)
    batch_size = x0.shape[0]
    normal = lambda key: jax.random.normal(key, x0.shape[1:])  # noqa: E731
    keys = purpose_keys(rng)
    t, inverse_density = importance_times(antithetic_uniforms(keys["time"], batch_size), bound_sde, t0)
    z_t = per_example(keys["noise"], batch_size, normal)
    z_0 = per_example(keys["decoder_noise"], batch_size, normal)
    return sum(elbo_terms(denoiser_fn, bound_sde, x0, t, z_t, z_0, t0, levels, inverse_density))
  return elbo_fn


def per_dim(nats, shape):
  """Nats per example -> nats per dimension of a datum of `shape` (without the batch axis)."""
  return nats / np.prod(shape)


def bits_per_dim(nats, shape):
  return per_dim(nats, shape) / np.log(2.0)
