"""Network parameterizations: everything between an SDE and a raw network.

A parameterization decides what the network sees (its input scaling c_in and its noise
conditioning, the "labels") and what its output means: a denoised estimate D(x, t) = E[x(0) | x(t)],
a score, and the target a regression objective fits. Networks are plain functions
`network(x_in, labels, train) -> output` that know nothing about SDEs.

With x(t) = m(t) x(0) + std(t) z (`sde.marginal_coeffs`), Tweedie's formula ties the denoiser and
the score: D = (x + std^2 s) / m, s = (m D - x) / std^2. Conventions (`model.parameterization`):

* `reference`: the score_sde networks as trained by the reference (labels t * 999 for continuous VP
  and sub-VP, t * (N - 1) or the integer sigma index for discrete models, sigma itself for
  continuous VE; VP and sub-VP outputs are -std * score, VE outputs divided by sigma with
  `scale_by_sigma`; uncentered data mapped to 2x - 1 inside).
* `eps`, `x0`, `v`: the network predicts the noise, the data, or v = alpha z - sigma x0 (Salimans &
  Ho 2022), on inputs scaled to unit-variance-ish x / sqrt(m^2 + std^2), with the reference labels.
* `flow`: the network predicts the path's velocity dx(t)/dt = m' x(0) + std' z (z - x(0) on the linear
  path; the conditional flow-matching target, Lipman et al. 2023), on the scaled inputs of `eps`.
* `average_velocity`: `flow` with a second time r: the network predicts the average velocity over [r, t] (a flow
  map; MeanFlow, Geng et al. 2025), the velocity at r = t.
* `edm`: Karras et al. 2022, Table 1: D = c_skip x_hat + c_out F(c_in x_hat; c_noise) on
  x_hat = x / m at noise level sigma = std / m, c_noise = log(sigma) / 4.

The compute dtype is applied here, and only here: network inputs are cast to it and outputs back
to float32.
"""

import abc
import dataclasses
from typing import Callable, ClassVar, Optional

import jax
import jax.numpy as jnp
import numpy as np

from score_jax import sde as sde_lib
from score_jax.utils import append_dims, batch_mul, choice_error


def coefficients(sde, t):
  """(m(t), std(t), a(t) = sqrt(m^2 + std^2)), each `(B,)`."""
  mean_scale, std = sde.marginal_coeffs(t)
  return mean_scale, std, jnp.sqrt(mean_scale**2 + std**2)


# ------------------------------------------------------------------- the reference's conventions

def _vp_labels(sde, t, continuous):
  # Continuous models were trained on t * 999 whatever N is (the reference's constant).
  return t * 999 if continuous else t * (sde.N - 1)


def _vp_output_scale(sde, t, continuous):
  """The network predicts -std * score (the noise), at the continuous or the discrete std."""
  std = sde.marginal_coeffs(t)[1] if continuous else sde.sqrt_1m_alphas_cumprod[sde.discrete_index(t)]
  return -1.0 / std


def _continuous_labels(sde, t, continuous):
  del continuous  # The reference feeds t * 999 for discrete sub-VP models too.
  return t * 999


def _noise_prediction_scale(sde, t, continuous):
  del continuous
  return -1.0 / sde.marginal_coeffs(t)[1]


def _ve_labels(sde, t, continuous):
  if continuous:
    return sde.sigma(t)
  # Index into the descending table of `get_sigmas` (sigma_max first).
  return jnp.round((sde.T - t) * (sde.N - 1)).astype(jnp.int32)


def _ve_output_scale(sde, t, continuous):
  del sde, continuous  # The output is the score (after `scale_by_sigma`).
  return jnp.ones_like(t)


# Per SDE class: (labels(sde, t, continuous), output scale(sde, t, continuous)) with score = scale * output.
REFERENCE_CONVENTIONS = {
    sde_lib.VPSDE: (_vp_labels, _vp_output_scale),
    sde_lib.subVPSDE: (_continuous_labels, _noise_prediction_scale),
    sde_lib.VESDE: (_ve_labels, _ve_output_scale),
    sde_lib.GammaVPSDE: (_continuous_labels, _noise_prediction_scale),  # t * 999, the network predicts the noise
    sde_lib.GaussianPath: (_continuous_labels, _noise_prediction_scale),  # likewise on flow matching's paths
}


def _convention(sde):
  for cls in type(sde).__mro__:
    if cls in REFERENCE_CONVENTIONS:
      return REFERENCE_CONVENTIONS[cls]
  raise ValueError(f"no reference labels are defined for {type(sde).__name__}; register it in "
                   f"parameterization.REFERENCE_CONVENTIONS")


def reference_labels(sde, t, continuous):
  """What the reference network receives as its second argument at SDE time `t`."""
  return _convention(sde)[0](sde, t, continuous)


def tweedie(sde, x, t, score):
  """Tweedie's formula E[x(0) | x(t)] = (x + std^2 s) / m for the score `s` at (x, t)."""
  mean_scale, std = sde.marginal_coeffs(t)
  return batch_mul(1.0 / mean_scale, x + batch_mul(std**2, score))


def tweedie_denoiser(score_fn, sde):
  """`denoiser_fn(x, t)`: Tweedie's formula on `score_fn`."""
  return lambda x, t: tweedie(sde, x, t, score_fn(x, t))


def score_of_denoised(sde, x, t, denoised):
  """Tweedie's formula read the other way: the score (m D - x) / std^2 of the denoised estimate `D`."""
  mean_scale, std = sde.marginal_coeffs(t)
  return batch_mul(1.0 / std**2, batch_mul(mean_scale, denoised) - x)


def tweedie_score(denoiser_fn, sde):
  """`score_fn(x, t)`: Tweedie's formula on `denoiser_fn`."""
  return lambda x, t: score_of_denoised(sde, x, t, denoiser_fn(x, t))


@dataclasses.dataclass(frozen=True)
class ScoreFunction:
  """A model's score with its own denoiser and cost: `score_fn(x, t)` calls `score(x, t)`.

  Any plain `score_fn(x, t)` works wherever a score function is taken; this one also brings
  `denoiser(x, t)` = E[x(0) | x(t)] as the model predicts it (None: Tweedie's formula on the score)
  and `network_evaluations`, the network evaluations per sample of one call (2 for classifier-free
  guidance). Frozen and compared by its fields, so an equal object hits the samplers' jit cache.
  """

  score: Callable
  denoiser: Optional[Callable] = None
  network_evaluations: int = 1
  average_velocity: Optional[Callable] = None  # u(x, r, t) of a flow map (`AverageVelocity`); None: a one-time model

  def __call__(self, x, t):
    return self.score(x, t)


def denoiser_of(score_fn, sde):
  """The denoiser that belongs to `score_fn`: a `ScoreFunction`'s own, else Tweedie's formula on the score."""
  if isinstance(score_fn, ScoreFunction) and score_fn.denoiser is not None:
    return score_fn.denoiser
  return tweedie_denoiser(score_fn, sde)


def average_velocity_of(score_fn, sde):
  """`u_fn(x, r, t)`: a flow map's average velocity over [r, t] (`ScoreFunction.average_velocity`), else the
  probability-flow ODE's velocity f - g^2 s / 2 at t (Song et al. 2021, Eq. (13)), which u(x, t, t) equals: a jump
  from t to r is then an Euler step."""
  if isinstance(score_fn, ScoreFunction) and score_fn.average_velocity is not None:
    return score_fn.average_velocity

  def velocity_fn(x, r, t):
    del r
    drift, diffusion = sde.sde(x, t)
    return drift - batch_mul(0.5 * diffusion**2, score_fn(x, t))

  return velocity_fn


def network_evaluations_of(score_fn):
  """Network evaluations per sample of one `score_fn(x, t)` call: a `ScoreFunction`'s count, else 1."""
  return score_fn.network_evaluations if isinstance(score_fn, ScoreFunction) else 1


# ----------------------------------------------------------------------------- parameterizations

@dataclasses.dataclass(frozen=True)
class Parameterization(abc.ABC):
  """Maps (sde, x, t) to the network's inputs and its output to D(x, t), the score and a target.

  Every method is pure and elementwise in the batch; `t` is `(B,)`.
  """

  dtype: str = "float32"  # compute dtype of the network
  denoises: ClassVar[bool] = True  # gives D(x, t) (False: `autoencoder`, whose network encodes and decodes)
  two_time: ClassVar[bool] = False  # the network also takes a second time r (`AverageVelocity`: a flow map)

  @classmethod
  def from_config(cls, config, network=None):
    """This parameterization for `config.model` and its `network` (a new one with settings overrides this)."""
    del network
    return cls(dtype=config.model.dtype)

  @abc.abstractmethod
  def network_inputs(self, sde, x, t, continuous):
    """Returns `(x_in, labels)`: the network's input and its noise conditioning."""

  @abc.abstractmethod
  def denoised(self, sde, output, x, t, continuous):
    """D(x, t) = E[x(0) | x(t)] from the network's output."""

  @abc.abstractmethod
  def target(self, sde, x0, noise, t):
    """The output that gives D = x0 exactly at x = m x0 + std noise (the regression target)."""

  @abc.abstractmethod
  def output_from_denoised(self, sde, denoised, x, t, continuous):
    """The network output whose `denoised(...)` is `denoised` (the inverse of `denoised` in the output)."""

  def score(self, sde, output, x, t, continuous):
    """The score (m D - x) / std^2 (Tweedie's formula)."""
    return score_of_denoised(sde, x, t, self.denoised(sde, output, x, t, continuous))

  def call_network(self, network_fn, x_in, labels):
    """`network_fn(x_in, labels)` in the compute dtype, the output back in float32 (the only cast)."""
    return network_fn(x_in.astype(self.dtype), labels).astype(jnp.float32)

  def apply_network(self, network_fn, sde, x, t, continuous):
    """`network_fn` on this parameterization's inputs at (x, t)."""
    return self.call_network(network_fn, *self.network_inputs(sde, x, t, continuous))


@dataclasses.dataclass(frozen=True)
class Reference(Parameterization):
  """The score_sde networks' own convention (the default): reproduces the reference bit for bit."""

  centered: bool = True         # data already in [-1, 1]; else the input is mapped to 2x - 1
  scale_by_sigma: bool = False  # divide the output by sigma (VE networks)
  labels_are_sigmas: bool = False  # labels are sigma itself (Fourier embeddings), else indices into `sigmas`
  sigmas: tuple = ()            # the descending sigma table of `scale_by_sigma` with index labels

  @classmethod
  def from_config(cls, config, network=None):
    """The network's own settings: `data.centered`, `model.scale_by_sigma`, the sigma table."""
    model = config.model
    sigmas = ()
    if model.scale_by_sigma:
      sigmas = tuple(float(s) for s in sigma_table(model.sigma_min, model.sigma_max, model.num_scales))
    return cls(dtype=model.dtype, centered=config.data.centered, scale_by_sigma=model.scale_by_sigma,
               labels_are_sigmas=getattr(network, "embedding_type", None) == "fourier", sigmas=sigmas)

  def scale_input(self, x):
    return x if self.centered else 2 * x - 1.0

  def scale_output(self, output, labels):
    """`scale_by_sigma`: the output divided by the sigma of its labels, as the reference network does."""
    if not self.scale_by_sigma:
      return output
    used_sigmas = labels if self.labels_are_sigmas else \
        jnp.asarray(np.asarray(self.sigmas, np.float32))[labels.astype(jnp.int32)]
    return output / append_dims(used_sigmas.astype(output.dtype), output.ndim)

  def network_inputs(self, sde, x, t, continuous):
    return self.scale_input(x), reference_labels(sde, t, continuous)

  def reference_output(self, network_fn, x, labels):
    """The reference network's output `network(x, labels)` (input centering and `scale_by_sigma` included)."""
    return self.scale_output(self.call_network(network_fn, self.scale_input(x), labels), labels)

  def score(self, sde, output, x, t, continuous):
    labels = reference_labels(sde, t, continuous)
    return batch_mul(_convention(sde)[1](sde, t, continuous), self.scale_output(output, labels))

  def denoised(self, sde, output, x, t, continuous):
    return tweedie(sde, x, t, self.score(sde, output, x, t, continuous))

  def output_from_denoised(self, sde, denoised, x, t, continuous):
    score = score_of_denoised(sde, x, t, denoised)
    labels = reference_labels(sde, t, continuous)
    output = batch_mul(1.0 / _convention(sde)[1](sde, t, continuous), score)
    return output * (self.scale_output(jnp.ones_like(output), labels) ** -1)

  def target(self, sde, x0, noise, t):
    raise ValueError("model.parameterization='reference' has no regression target: it is trained by the "
                     "reference's score-matching losses (training.objective='dsm')")


@dataclasses.dataclass(frozen=True)
class _Scaled(Parameterization):
  """Inputs x / sqrt(m^2 + std^2) (unit variance for unit-variance data), the reference labels."""

  def network_inputs(self, sde, x, t, continuous):
    return batch_mul(1.0 / coefficients(sde, t)[2], x), reference_labels(sde, t, continuous)


@dataclasses.dataclass(frozen=True)
class Epsilon(_Scaled):
  """The network predicts the noise z (Ho et al. 2020): D = (x - std F) / m."""

  def denoised(self, sde, output, x, t, continuous):
    mean_scale, std = sde.marginal_coeffs(t)
    return batch_mul(1.0 / mean_scale, x - batch_mul(std, output))

  def score(self, sde, output, x, t, continuous):
    return batch_mul(-1.0 / sde.marginal_coeffs(t)[1], output)  # s = -z / std, without Tweedie's cancellation

  def target(self, sde, x0, noise, t):
    return noise

  def output_from_denoised(self, sde, denoised, x, t, continuous):
    mean_scale, std = sde.marginal_coeffs(t)
    return batch_mul(1.0 / std, x - batch_mul(mean_scale, denoised))


@dataclasses.dataclass(frozen=True)
class Data(_Scaled):
  """The network predicts x(0) itself: D = F."""

  def denoised(self, sde, output, x, t, continuous):
    return output

  def target(self, sde, x0, noise, t):
    return x0

  def output_from_denoised(self, sde, denoised, x, t, continuous):
    return denoised


@dataclasses.dataclass(frozen=True)
class Velocity(_Scaled):
  """v-prediction (Salimans & Ho 2022, Sec. 4): with alpha = m / a, sigma = std / a on x / a,
  v = alpha z - sigma x0 and D = alpha x / a - sigma F."""

  def denoised(self, sde, output, x, t, continuous):
    mean_scale, std, a = coefficients(sde, t)
    return batch_mul(mean_scale / a**2, x) - batch_mul(std / a, output)

  def target(self, sde, x0, noise, t):
    mean_scale, std, a = coefficients(sde, t)
    return batch_mul(mean_scale / a, noise) - batch_mul(std / a, x0)

  def output_from_denoised(self, sde, denoised, x, t, continuous):
    mean_scale, std, a = coefficients(sde, t)
    return batch_mul(a / std, batch_mul(mean_scale / a**2, x) - denoised)


@dataclasses.dataclass(frozen=True)
class Flow(_Scaled):
  """The network predicts the velocity v = m' x(0) + std' z of x(t) = m x(0) + std z along the SDE's
  path (flow matching; z - x(0) on `rectified_flow`). Solving x = m D + std z, F = m' D + std' z for D:
  D = (std' x - std F) / (m std' - std m'), the determinant positive on every SDE here."""

  def _rates(self, sde, t):
    """(m, std, m', std', m std' - std m'), each `(B,)`."""
    (mean_scale, std), (mean_rate, std_rate) = jax.jvp(sde.marginal_coeffs, (t,), (jnp.ones_like(t),))
    return mean_scale, std, mean_rate, std_rate, mean_scale * std_rate - std * mean_rate

  def denoised(self, sde, output, x, t, continuous):
    _, std, _, std_rate, det = self._rates(sde, t)
    return batch_mul(1.0 / det, batch_mul(std_rate, x) - batch_mul(std, output))

  def target(self, sde, x0, noise, t):
    _, _, mean_rate, std_rate, _ = self._rates(sde, t)
    return batch_mul(mean_rate, x0) + batch_mul(std_rate, noise)

  def output_from_denoised(self, sde, denoised, x, t, continuous):
    _, std, _, std_rate, det = self._rates(sde, t)
    return batch_mul(1.0 / std, batch_mul(std_rate, x) - batch_mul(det, denoised))


@dataclasses.dataclass(frozen=True)
class AverageVelocity(Flow):
  """A flow map (MeanFlow, Geng et al. 2025): the network also takes a second time r <= t and predicts the average
  velocity u(x, r, t) = (x(t) - x(r)) / (t - r) of the probability-flow ODE over [r, t], so x(r) = x(t) - (t - r) u
  in one evaluation (`sampling.method = "flow_map"`). At r = t, u is the velocity: this is `flow` (its inputs, its
  output's meaning, its denoiser and target), and the network's one-time calls are those at r = t.

  The network's time label is t itself (MeanFlow's; not `flow`'s 999 t): the objective follows the total derivative
  du/dt through the network (`objectives.meanflow`), and a label that moves 999 per unit of t makes it, and with it
  the target, some 100 times larger than u on a toy network, which then does not learn r (measured on 1-D Gaussian
  data; the reason TrigFlow feeds its angle). The second time enters as the label gap t - r (zero at r = t), which
  every network family embeds beside t, zero-initialised (`networks.layers.add_interval_embedding`): `two_time`
  tells `models.ScoreModel` to create that embedding."""

  two_time: ClassVar[bool] = True
  time_scale: ClassVar[float] = 1.0  # labels = time_scale * t

  def network_inputs(self, sde, x, t, continuous):
    return batch_mul(1.0 / coefficients(sde, t)[2], x), self.time_scale * t

  def apply_two_time_network(self, network_fn, sde, x, r, t, continuous):
    """u(x, r, t): `network_fn(x_in, labels, interval_labels)` on the inputs at t and the gap to the labels at r."""
    x_in, labels = self.network_inputs(sde, x, t, continuous)
    interval_labels = labels - self.network_inputs(sde, x, r, continuous)[1]
    return network_fn(x_in.astype(self.dtype), labels, interval_labels).astype(jnp.float32)


def _scaled_input_options(config, network):
  """What EDM's and TrigFlow's input scaling read: the dtype, `model.sigma_data`, and whether the network embeds
  the log of its noise label (NCSN++'s Fourier features)."""
  return dict(dtype=config.model.dtype, sigma_data=config.model.sigma_data,
              log_embedding=getattr(network, "embedding_type", None) == "fourier")


@dataclasses.dataclass(frozen=True)
class TrigFlow(Flow):
  """`flow`'s velocity with TrigFlow's network inputs (Lu & Song 2025, Sec. 3 and 4.1): x / sqrt(m^2 sigma_data^2 +
  std^2) (unit variance for data of std sigma_data) and the angle arctan(sigma) itself as the time label (pi t / 2
  on the cosine path), not 999 t: a smooth time embedding keeps the network's time derivative, which continuous-
  time consistency training follows (`objectives.scm`), of the order of its other terms."""

  sigma_data: float = 0.5
  log_embedding: bool = False  # the network embeds log(labels) (NCSN++'s Fourier features): feed exp(angle)

  @classmethod
  def from_config(cls, config, network=None):
    return cls(**_scaled_input_options(config, network))

  def network_inputs(self, sde, x, t, continuous):
    mean_scale, std = sde.marginal_coeffs(t)
    angle = jnp.arctan(sde.noise_level(t))
    return (batch_mul(1.0 / jnp.sqrt((mean_scale * self.sigma_data) ** 2 + std**2), x),
            jnp.exp(angle) if self.log_embedding else angle)


@dataclasses.dataclass(frozen=True)
class EDM(Parameterization):
  """Karras et al. 2022, Table 1 ("Ours"), on x_hat = x / m at sigma = std / m (Sec. 4 for any SDE)."""

  sigma_data: float = 0.5
  log_embedding: bool = False  # the network embeds log(labels) (NCSN++'s Fourier features): feed exp(c_noise)

  @classmethod
  def from_config(cls, config, network=None):
    return cls(**_scaled_input_options(config, network))

  def _preconditioning(self, sde, t):
    """(m, sigma, c_skip, c_out, c_in, c_noise), each `(B,)`."""
    mean_scale = sde.marginal_coeffs(t)[0]
    sigma = sde.noise_level(t)
    total = sigma**2 + self.sigma_data**2
    return (mean_scale, sigma, self.sigma_data**2 / total, sigma * self.sigma_data / jnp.sqrt(total),
            1.0 / jnp.sqrt(total), 0.25 * jnp.log(sigma))

  def network_inputs(self, sde, x, t, continuous):
    mean_scale, _, _, _, c_in, c_noise = self._preconditioning(sde, t)
    return batch_mul(c_in / mean_scale, x), jnp.exp(c_noise) if self.log_embedding else c_noise

  def denoised(self, sde, output, x, t, continuous):
    mean_scale, _, c_skip, c_out, _, _ = self._preconditioning(sde, t)
    return batch_mul(c_skip / mean_scale, x) + batch_mul(c_out, output)

  def target(self, sde, x0, noise, t):
    _, sigma, c_skip, c_out, _, _ = self._preconditioning(sde, t)
    return batch_mul(1.0 / c_out, x0 - batch_mul(c_skip, x0 + batch_mul(sigma, noise)))

  def output_from_denoised(self, sde, denoised, x, t, continuous):
    mean_scale, _, c_skip, c_out, _, _ = self._preconditioning(sde, t)
    return batch_mul(1.0 / c_out, denoised - batch_mul(c_skip / mean_scale, x))


@dataclasses.dataclass(frozen=True)
class Consistency(EDM):
  """A consistency function (Song et al. 2023, Sec. 3 and App. C): EDM's preconditioning with
  c_skip = sigma_data^2 / ((sigma - sigma_min)^2 + sigma_data^2) and c_out = sigma_data (sigma - sigma_min) /
  sqrt(sigma_data^2 + sigma^2), so that at the last time t_min (noise level sigma_min) D(x, t_min) = x / m(t_min)
  whatever the network outputs: the boundary condition f(x, t_min) = x in the scaled variable x / m. The
  consistency objectives train it; `sampling.method = "consistency"` samples it."""

  t_min: float = 1e-3  # the samplers' end time: the SDE's sampling eps (`sde.get_sde`)

  @classmethod
  def from_config(cls, config, network=None):
    return cls(dtype=config.model.dtype, sigma_data=config.model.sigma_data,
               log_embedding=getattr(network, "embedding_type", None) == "fourier",
               t_min=sde_lib.get_sde(config)[1])

  def _preconditioning(self, sde, t):
    mean_scale = sde.marginal_coeffs(t)[0]
    sigma = sde.noise_level(t)
    sigma_min = sde.noise_level(jnp.full_like(t, self.t_min))
    above = sigma - sigma_min
    c_skip = self.sigma_data**2 / (above**2 + self.sigma_data**2)
    c_out = self.sigma_data * above / jnp.sqrt(self.sigma_data**2 + sigma**2)
    return mean_scale, sigma, c_skip, c_out, 1.0 / jnp.sqrt(sigma**2 + self.sigma_data**2), 0.25 * jnp.log(sigma)


@dataclasses.dataclass(frozen=True)
class Autoencoder(Parameterization):
  """`training.objective = "autoencoder"`: the network is called as itself (its `encode` and `decode`,
  `objectives.ModelCall.network_method`), never at a noise level, so it has no D(x, t), score or target."""

  denoises: ClassVar[bool] = False

  def _no_denoiser(self, *args):
    raise ValueError("an autoencoder (model.parameterization='autoencoder') has no denoiser D(x, t): it encodes "
                     "and decodes (score_jax.autoencoder.load_autoencoder)")

  network_inputs = denoised = target = output_from_denoised = score = _no_denoiser


PARAMETERIZATIONS = {"reference": Reference, "eps": Epsilon, "x0": Data, "v": Velocity, "flow": Flow,
                     "average_velocity": AverageVelocity, "trigflow": TrigFlow, "edm": EDM, "consistency": Consistency,
                     "autoencoder": Autoencoder}
DTYPES = ("float32", "bfloat16", "float16")


def get_parameterization(config, network=None):
  """The parameterization of `config.model` (`parameterization`, `dtype`, and what each one reads of the
  config and the network: `Parameterization.from_config`). An objective that trains its own has set it at
  the entry (`run_setup.prepare_config`)."""
  model = config.model
  if model.parameterization not in PARAMETERIZATIONS:
    raise choice_error("model.parameterization", model.parameterization, PARAMETERIZATIONS)
  if model.dtype not in DTYPES:
    raise choice_error("model.dtype", model.dtype, DTYPES)
  return PARAMETERIZATIONS[model.parameterization].from_config(config, network)


def sigma_table(sigma_min, sigma_max, num_scales):
  """The reference's descending noise levels (`get_sigmas`), float64 numpy; index 0 is sigma_max."""
  return np.exp(np.linspace(np.log(sigma_max), np.log(sigma_min), num_scales))
