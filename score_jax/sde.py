"""Forward SDEs of Song et al. 2021 (Section 3.4, Appendix B) and their reversals.

Every SDE-specific choice lives here, as a method, so that losses, samplers and
score wrappers never branch on the SDE type.
"""

import abc
import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from score_jax import noise_schedule
from score_jax.utils import batch_mul, choice_error, flat_sum


class SDE(abc.ABC):
  """dx = f(x, t) dt + g(t) dw on t in [0, T]; `N` is the number of discretisation steps."""

  N: int
  T = 1.0
  discrete_loss = None  # the discrete-time objective of `training.continuous=False`, if any
  prior_std = 1.0       # the prior p_T is N(0, prior_std^2 I)
  noisy_at_zero = False  # std(0) > 0: the ELBO starts at t = 0 (else at training.eps)
  learned_schedule = False  # the schedule is trained (by the ELBO's gradients: `objectives.vdm`)

  @abc.abstractmethod
  def sde(self, x, t):
    """Returns (drift shaped like x, diffusion `(B,)`)."""

  @abc.abstractmethod
  def marginal_prob(self, x0, t):
    """Returns the mean and `(B,)` std of the perturbation kernel p_0t(x(t) | x(0))."""

  @abc.abstractmethod
  def prior_sampling(self, rng, shape):
    """Draws x(T) from the prior p_T."""

  @abc.abstractmethod
  def prior_logp(self, z):
    """Log-density of the prior in nats, `(B,)`."""

  def discrete_index(self, t):
    """The reference's step index `int(t (N - 1) / T)` (truncated)."""
    return (t * (self.N - 1) / self.T).astype(jnp.int32)

  def discretize(self, x, t):
    """Euler-Maruyama discretisation x_{i+1} = x_i + f + G z (Eq. (45) of Song et al. 2021)."""
    dt = 1.0 / self.N
    drift, diffusion = self.sde(x, t)
    return drift * dt, diffusion * jnp.sqrt(dt)

  def langevin_alpha(self, t):
    """The per-sample factor alpha_i of the Langevin step size (Algorithms 4-5 of Song et al. 2021)."""
    return jnp.ones_like(t)

  def reverse(self, score_fn, probability_flow=False):
    """The reverse-time SDE (Eq. (6)) or, with `probability_flow`, the probability-flow ODE (Eq. (13))."""
    return ReverseSDE(self, score_fn, probability_flow)

  # For the fast samplers: x(t) = m(t) x(0) + std(t) z, noise level sigma(t) = std / m (Karras et al.
  # 2022, Sec. 4) and log-SNR lambda(t) = -log sigma(t) (Lu et al. 2022); all elementwise in `t`.

  def perturb(self, x0, t, z):
    """`(x(t), std(t))`: the point x(t) = m(t) x0 + std(t) z of the path from data `x0` and noise `z` (shaped like
    `x0`) at times `t` (`(B,)`), the one place the objectives draw their inputs from."""
    mean, std = self.marginal_prob(x0, t)
    return mean + batch_mul(std, z), std

  def marginal_coeffs(self, t):
    """(m(t), std(t)), each shaped like `t`: the perturbation kernel's mean scale and std."""
    return self.marginal_prob(jnp.ones_like(t), t)

  def marginal_rates(self, t):
    """(dm/dt, dstd/dt), each shaped like `t`: the perturbation kernel's time derivatives."""
    return jax.jvp(self.marginal_coeffs, (t,), (jnp.ones_like(t),))[1]

  def noise_level(self, t):
    """sigma(t) = std(t) / m(t), the noise level of the scaled variable x / m (Karras et al. 2022)."""
    mean_scale, std = self.marginal_coeffs(t)
    return std / mean_scale

  def noise_level_to_t(self, sigma):
    """The time t at which `noise_level(t) = sigma` (the inverse of `noise_level`)."""
    raise NotImplementedError(f"{type(self).__name__} does not invert its noise level")

  # For the ELBO (Kingma et al. 2021): the signal-to-noise ratio SNR(t) = m^2 / std^2 = sigma(t)^-2.

  def snr_decay(self, t):
    """-dSNR/dt, the weight of the continuous-time diffusion loss; elementwise in `t`."""
    def neg_log_snr(time):
      return 2.0 * jnp.log(self.noise_level(time))
    value, derivative = jax.jvp(neg_log_snr, (t,), (jnp.ones_like(t),))
    return jnp.exp(-value) * derivative

  # Learned schedules keep their parameters in the model's variables; fixed SDEs have none.

  def init_params(self, rng):
    """The SDE's trainable parameters, `{}` or `{"noise_schedule": ...}`, merged into the model's params."""
    del rng
    return {}

  def bind(self, variables):
    """This SDE with the parameters in `variables` (the model's); a fixed SDE returns itself."""
    del variables
    return self


@dataclasses.dataclass(frozen=True)
class ReverseSDE:
  """Reverse-time process of `forward`; drift and diffusion are expressed in forward time."""

  forward: SDE
  score_fn: object
  probability_flow: bool = False

  @property
  def N(self):
    return self.forward.N

  @property
  def T(self):
    return self.forward.T

  def _reverse(self, x, t, f, g):
    weight = 0.5 if self.probability_flow else 1.0
    f = f - batch_mul(g**2 * weight, self.score_fn(x, t))
    g = jnp.zeros_like(g) if self.probability_flow else g
    return f, g

  def sde(self, x, t):
    return self._reverse(x, t, *self.forward.sde(x, t))

  def discretize(self, x, t):
    return self._reverse(x, t, *self.forward.discretize(x, t))


def _vp_betas(sde):
  return np.linspace(sde.beta_min / sde.N, sde.beta_max / sde.N, sde.N, dtype=np.float64)


def _time_of_log_mean_coeff(sde, neg_log_mean_coeff):
  """Solves 1/4 t^2 (b1 - b0) + 1/2 t b0 = L for t >= 0 (Eq. (29)), in the cancellation-free form."""
  b0, db = sde.beta_min, sde.beta_max - sde.beta_min
  return 2 * neg_log_mean_coeff / (0.5 * b0 + jnp.sqrt(0.25 * b0**2 + db * neg_log_mean_coeff))


def _standard_normal_logp(z, scale=1.0):
  dim = np.prod(z.shape[1:])
  return -0.5 * dim * jnp.log(2 * jnp.pi * scale**2) - flat_sum(z**2) / (2 * scale**2)


@dataclasses.dataclass(frozen=True)
class VPSDE(SDE):
  """Variance-preserving SDE, the continuous limit of DDPM (Eq. (11))."""

  discrete_loss = "ddpm"

  beta_min: float = 0.1
  beta_max: float = 20.0
  N: int = 1000

  # DDPM tables (Ho et al. 2020), computed in float64 on the host, stored as float32.
  @property
  def discrete_betas(self):
    return jnp.asarray(_vp_betas(self), jnp.float32)

  @property
  def alphas(self):
    return jnp.asarray(1.0 - _vp_betas(self), jnp.float32)

  @property
  def alphas_cumprod(self):
    return jnp.asarray(np.cumprod(1.0 - _vp_betas(self)), jnp.float32)

  @property
  def sqrt_alphas_cumprod(self):
    if self.beta_max > self.N:  # some beta_i = beta / N > 1: prod(1 - beta_i) < 0 has no square root
      raise ValueError(f"the DDPM mean scales sqrt(prod(1 - beta_i)) need N={self.N} >= beta_max={self.beta_max} "
                       "(beta_i = beta / N <= 1)")
    return jnp.asarray(np.sqrt(np.cumprod(1.0 - _vp_betas(self))), jnp.float32)

  @property
  def sqrt_1m_alphas_cumprod(self):
    return jnp.asarray(np.sqrt(1.0 - np.cumprod(1.0 - _vp_betas(self))), jnp.float32)

  def beta(self, t):
    return self.beta_min + t * (self.beta_max - self.beta_min)

  def log_mean_coeff(self, t):
    """log of the marginal mean's scale: -1/4 t^2 (b1 - b0) - 1/2 t b0 (Eq. (29))."""
    return -0.25 * t**2 * (self.beta_max - self.beta_min) - 0.5 * t * self.beta_min

  def sde(self, x, t):
    beta_t = self.beta(t)
    return batch_mul(-0.5 * beta_t, x), jnp.sqrt(beta_t)

  def marginal_prob(self, x0, t):
    log_mean_coeff = self.log_mean_coeff(t)
    # std^2 = 1 - m^2 = -expm1(2 log m): no cancellation near t = 0 (the reference's 1 - exp loses digits).
    return batch_mul(jnp.exp(log_mean_coeff), x0), jnp.sqrt(-jnp.expm1(2.0 * log_mean_coeff))

  def prior_sampling(self, rng, shape):
    return jax.random.normal(rng, shape)

  def prior_logp(self, z):
    return _standard_normal_logp(z)

  def discretize(self, x, t):
    """DDPM ancestral form: x_{i+1} = sqrt(1 - beta_i) x_i + sqrt(beta_i) z."""
    i = self.discrete_index(t)
    beta = self.discrete_betas[i]
    return batch_mul(jnp.sqrt(1.0 - beta), x) - x, jnp.sqrt(beta)

  def langevin_alpha(self, t):
    return self.alphas[self.discrete_index(t)]

  def noise_level(self, t):
    # sigma^2 = 1 / m^2 - 1 = expm1(-2 log m), accurate near t = 0.
    return jnp.sqrt(jnp.expm1(-2.0 * self.log_mean_coeff(t)))

  def noise_level_to_t(self, sigma):
    return _time_of_log_mean_coeff(self, 0.5 * jnp.log1p(sigma**2))

  def ancestral_step(self, x, t, score):
    """DDPM ancestral step (Eq. (4) of Song et al. 2021); returns (x_mean, noise std `(B,)`).

    x_{i-1} = (x_i + beta_i s) / sqrt(1 - beta_i) + sqrt(beta_i) z.
    """
    beta = self.discrete_betas[self.discrete_index(t)]
    return batch_mul(1.0 / jnp.sqrt(1.0 - beta), x + batch_mul(beta, score)), jnp.sqrt(beta)


@dataclasses.dataclass(frozen=True)
class subVPSDE(SDE):  # noqa: N801 -- the paper's and the reference's name
  """Sub-VP SDE (Eq. (16)): its variance is bounded by the VP SDE's at every t."""

  beta_min: float = 0.1
  beta_max: float = 20.0
  N: int = 1000

  def beta(self, t):
    return self.beta_min + t * (self.beta_max - self.beta_min)

  def log_mean_coeff(self, t):
    return -0.25 * t**2 * (self.beta_max - self.beta_min) - 0.5 * t * self.beta_min

  def sde(self, x, t):
    beta_t = self.beta(t)
    discount = -jnp.expm1(-2 * self.beta_min * t - (self.beta_max - self.beta_min) * t**2)
    return batch_mul(-0.5 * beta_t, x), jnp.sqrt(beta_t * discount)

  def marginal_prob(self, x0, t):
    log_mean_coeff = self.log_mean_coeff(t)
    # The sub-VP std is 1 - exp(2 lmc): no square root (Eq. (29)); expm1 keeps its digits near t = 0.
    return batch_mul(jnp.exp(log_mean_coeff), x0), -jnp.expm1(2.0 * log_mean_coeff)

  def prior_sampling(self, rng, shape):
    return jax.random.normal(rng, shape)

  def prior_logp(self, z):
    return _standard_normal_logp(z)

  def langevin_alpha(self, t):
    # The reference reads `sde.alphas`, which sub-VP lacks, and crashes (docs/differences.md#subvp-langevin).
    # The sub-VP SDE shares the VP beta schedule, so the VP alphas are the natural choice.
    return jnp.asarray(1.0 - _vp_betas(self), jnp.float32)[self.discrete_index(t)]

  def noise_level(self, t):
    # sigma = (1 - m^2) / m with std = 1 - m^2.
    log_mean_coeff = self.log_mean_coeff(t)
    return -jnp.expm1(2.0 * log_mean_coeff) * jnp.exp(-log_mean_coeff)

  def noise_level_to_t(self, sigma):
    # m^2 + sigma m - 1 = 0, so -log m = log((sigma + sqrt(sigma^2 + 4)) / 2) = asinh(sigma / 2).
    return _time_of_log_mean_coeff(self, jnp.arcsinh(0.5 * sigma))


@dataclasses.dataclass(frozen=True)
class VESDE(SDE):
  """Variance-exploding SDE, the continuous limit of SMLD / NCSN (Eq. (9))."""

  discrete_loss = "smld"

  sigma_min: float = 0.01
  sigma_max: float = 50.0
  N: int = 1000

  @property
  def discrete_sigmas(self):
    """Ascending noise levels sigma_0 < ... < sigma_{N-1}."""
    return jnp.asarray(np.exp(np.linspace(math.log(self.sigma_min), math.log(self.sigma_max), self.N)),
                       jnp.float32)

  def sigma(self, t):
    return self.sigma_min * (self.sigma_max / self.sigma_min) ** t

  def sde(self, x, t):
    diffusion = self.sigma(t) * math.sqrt(2 * (math.log(self.sigma_max) - math.log(self.sigma_min)))
    return jnp.zeros_like(x), diffusion

  def marginal_prob(self, x0, t):
    return x0, self.sigma(t)

  @property
  def prior_std(self):
    return self.sigma_max

  def prior_sampling(self, rng, shape):
    return jax.random.normal(rng, shape) * self.sigma_max

  def prior_logp(self, z):
    return _standard_normal_logp(z, self.sigma_max)

  def adjacent_sigmas(self, t):
    """(sigma_i, sigma_{i-1}) at the step index of `t`, with sigma_{-1} = 0."""
    i = self.discrete_index(t)
    sigmas = self.discrete_sigmas
    return sigmas[i], jnp.where(i == 0, 0.0, sigmas[jnp.maximum(i - 1, 0)])

  def discretize(self, x, t):
    """SMLD form: x_{i+1} = x_i + sqrt(sigma_{i+1}^2 - sigma_i^2) z."""
    sigma, adjacent_sigma = self.adjacent_sigmas(t)
    return jnp.zeros_like(x), jnp.sqrt(sigma**2 - adjacent_sigma**2)

  def ancestral_step(self, x, t, score):
    """SMLD ancestral step (Appendix F of Song et al. 2021); returns (x_mean, noise std `(B,)`).

    x_{i-1} = x_i + (sigma_i^2 - sigma_{i-1}^2) s + sqrt(sigma_{i-1}^2 (sigma_i^2 - sigma_{i-1}^2) / sigma_i^2) z.
    """
    sigma, adjacent_sigma = self.adjacent_sigmas(t)
    variance_step = sigma**2 - adjacent_sigma**2
    return x + batch_mul(variance_step, score), jnp.sqrt(adjacent_sigma**2 * variance_step / sigma**2)

  def noise_level(self, t):
    return self.sigma(t)

  def noise_level_to_t(self, sigma):
    return jnp.log(sigma / self.sigma_min) / math.log(self.sigma_max / self.sigma_min)


@dataclasses.dataclass(frozen=True, eq=False)
class GammaVPSDE(SDE):
  """The VP SDE of a noise schedule gamma(t) = log(std^2 / m^2) = -log SNR(t) (Kingma et al. 2021).

  m^2 = sigmoid(-gamma), std^2 = sigmoid(gamma), and beta(t) = sigmoid(gamma) gamma'(t) in
  dx = -beta x / 2 dt + sqrt(beta) dw. `gamma_fn(t) -> (gamma(t), gamma'(t))`, increasing in t.
  Compared by identity (its `gamma_fn` may close over parameters).
  """

  gamma_fn: object = None
  N: int = 1000
  noisy_at_zero = True

  def gamma_and_rate(self, t):
    """(gamma(t), gamma'(t)), each shaped like `t`."""
    if self.gamma_fn is None:
      raise ValueError(f"{type(self).__name__} has no schedule yet: a learned SDE needs its parameters, "
                       "sde.bind(variables) with the model's variables")
    return self.gamma_fn(t)

  def gamma(self, t):
    return self.gamma_and_rate(t)[0]

  def sde(self, x, t):
    gamma, gamma_rate = self.gamma_and_rate(t)
    beta = jax.nn.sigmoid(gamma) * gamma_rate
    return batch_mul(-0.5 * beta, x), jnp.sqrt(beta)

  def marginal_prob(self, x0, t):
    gamma = self.gamma(t)
    return batch_mul(jnp.sqrt(jax.nn.sigmoid(-gamma)), x0), jnp.sqrt(jax.nn.sigmoid(gamma))

  def prior_sampling(self, rng, shape):
    return jax.random.normal(rng, shape)

  def prior_logp(self, z):
    return _standard_normal_logp(z)

  def noise_level(self, t):
    return jnp.exp(0.5 * self.gamma(t))

  def snr_decay(self, t):
    gamma, gamma_rate = self.gamma_and_rate(t)
    return jnp.exp(-gamma) * gamma_rate

  def noise_level_to_t(self, sigma, iterations=40):
    """Bisection on the increasing gamma over [0, T] (clipped to the ends outside gamma's range)."""
    target = 2.0 * jnp.log(sigma)
    low, high = jnp.zeros_like(target), jnp.full_like(target, self.T)

    def halve(_, bounds):
      low, high = bounds
      middle = 0.5 * (low + high)
      below = self.gamma(middle) < target
      return jnp.where(below, middle, low), jnp.where(below, high, middle)

    low, high = jax.lax.fori_loop(0, iterations, halve, (low, high))
    return 0.5 * (low + high)


@dataclasses.dataclass(frozen=True, eq=False)
class LearnedVPSDE(GammaVPSDE):
  """VDM's learned schedule (Kingma et al. 2021, Sec. 5.1 and Appendix H): gamma(t) = gamma_0 +
  |gamma_1 - gamma_0| u(t), u a monotone network normalised to u(0) = 0, u(1) = 1, its endpoints
  gamma_0, gamma_1 learned. Its parameters live in the model's params (`"noise_schedule"`);
  `bind(variables)` gives the SDE of those parameters.
  """

  gamma_min: float = -13.3   # initial gamma_0 (log SNR(0) = 13.3)
  gamma_max: float = 5.0     # initial gamma_1
  features: int = 1024       # width of the monotone network
  params: object = None      # set by `bind`
  learned_schedule = True

  def __post_init__(self):
    if self.gamma_fn is None and self.params is not None:
      object.__setattr__(self, "gamma_fn", functools.partial(noise_schedule.gamma_and_rate, self.params))

  def init_params(self, rng):
    return {"noise_schedule": noise_schedule.init_params(rng, self.gamma_min, self.gamma_max, self.features)}

  def bind(self, variables):
    return dataclasses.replace(self, params=variables["params"]["noise_schedule"], gamma_fn=None)


@dataclasses.dataclass(frozen=True)
class GaussianPath(SDE):
  """An interpolation x(t) = m(t) x(0) + std(t) z from the data (m = 1, std = 0 at t = 0) to pure noise
  (m = 0, std = 1 at t = 1): flow matching's Gaussian probability paths, as the SDE with these marginals,
  dx = (m'/m) x dt + g dw with g^2 = 2 std^2 (std'/std - m'/m) (the drift and diffusion that keep
  x(t) ~ m x(0) + std z; Song et al. 2021, Eq. (5), and Kingma et al. 2021, App. A). Its probability-flow
  ODE is the path's marginal velocity E[m' x(0) + std' z | x(t)], what flow matching learns.

  Drift and diffusion diverge where the signal coefficient m vanishes (t = 1), so the process stops at
  T = 1 - `end_eps`: there m(T) is of order `end_eps` and the prior N(0, std(T)^2 I) neglects m(T) x(0)
  (mean 1e-3 x(0) at the default), and every sampler, the probability-flow ODE and its likelihood run on
  [eps, T] as on the other SDEs. A subclass gives `mean_std(t) -> (m, std)` and its inverse noise level.
  """

  N: int = 1000
  end_eps: float = 1e-3

  @property
  def T(self):  # noqa: N802 -- the SDE's end time, as on every SDE
    return 1.0 - self.end_eps

  @abc.abstractmethod
  def mean_std(self, t):
    """(m(t), std(t)), elementwise in `t`."""

  def sde(self, x, t):
    (mean_scale, std), (mean_rate, std_rate) = jax.jvp(self.mean_std, (t,), (jnp.ones_like(t),))
    log_rate = mean_rate / mean_scale
    return batch_mul(log_rate, x), jnp.sqrt(jnp.maximum(2.0 * std * std_rate - 2.0 * std**2 * log_rate, 0.0))

  def marginal_prob(self, x0, t):
    mean_scale, std = self.mean_std(t)
    return batch_mul(mean_scale, x0), std

  def marginal_coeffs(self, t):
    return self.mean_std(t)

  def discretize(self, x, t):
    dt = self.T / self.N  # the samplers' grid spans [eps, T]
    drift, diffusion = self.sde(x, t)
    return drift * dt, diffusion * jnp.sqrt(dt)

  @property
  def prior_std(self):
    """std(T), a Python float (also under jit)."""
    raise NotImplementedError

  def prior_sampling(self, rng, shape):
    return self.prior_std * jax.random.normal(rng, shape)

  def prior_logp(self, z):
    return _standard_normal_logp(z, self.prior_std)


@dataclasses.dataclass(frozen=True)
class RectifiedFlow(GaussianPath):
  """The linear path x(t) = (1 - t) x(0) + t z (rectified flow, Liu et al. 2023; conditional flow matching's
  optimal-transport path, Lipman et al. 2023): velocity z - x(0), noise level t / (1 - t)."""

  def mean_std(self, t):
    return 1.0 - t, t

  @property
  def prior_std(self):
    return self.T

  def noise_level_to_t(self, sigma):
    return sigma / (1.0 + sigma)


@dataclasses.dataclass(frozen=True)
class CosinePath(GaussianPath):
  """The trigonometric path x(t) = cos(pi t / 2) x(0) + sin(pi t / 2) z (TrigFlow, Lu & Song 2025, with
  its angle pi t / 2): variance preserving for unit-variance data, noise level tan(pi t / 2)."""

  def mean_std(self, t):
    angle = 0.5 * math.pi * t
    return jnp.cos(angle), jnp.sin(angle)

  @property
  def prior_std(self):
    return math.sin(0.5 * math.pi * self.T)

  def noise_level_to_t(self, sigma):
    return jnp.arctan(sigma) / (0.5 * math.pi)


SDES = {"vpsde": VPSDE, "subvpsde": subVPSDE, "vesde": VESDE, "learned_vpsde": LearnedVPSDE,
        "rectified_flow": RectifiedFlow, "cosine": CosinePath}


def get_sde(config):
  """Builds the SDE named by `config.training.sde`; returns `(sde, sampling_eps)`.

  The sampling eps is the reference's: 1e-3 for VP and sub-VP, 1e-5 for VE; 1e-3 for the Gaussian paths.
  `config` is complete (every config in configs/ is; `base_config.complete` fills a partial one, e.g. the
  reference's own, with the base configuration's defaults).
  """
  name = config.training.sde.lower()
  if name not in SDES:
    raise choice_error("training.sde", config.training.sde, SDES)
  model = config.model
  if model.sigma_max <= model.sigma_min:
    raise ValueError(f"model.sigma_max={model.sigma_max} must exceed model.sigma_min={model.sigma_min}")
  if name == "vesde":
    return VESDE(sigma_min=model.sigma_min, sigma_max=model.sigma_max, N=model.num_scales), 1e-5
  if name in ("rectified_flow", "cosine"):
    return SDES[name](N=model.num_scales), 1e-3
  if name == "learned_vpsde":
    if model.gamma_max <= model.gamma_min:
      raise ValueError(f"model.gamma_max={model.gamma_max} must exceed model.gamma_min={model.gamma_min}")
    return LearnedVPSDE(gamma_min=model.gamma_min, gamma_max=model.gamma_max, features=model.schedule_features,
                        N=model.num_scales), 1e-3
  if model.beta_max < model.beta_min:
    raise ValueError(f"model.beta_max={model.beta_max} must be at least model.beta_min={model.beta_min}")
  return SDES[name](beta_min=model.beta_min, beta_max=model.beta_max, N=model.num_scales), 1e-3
