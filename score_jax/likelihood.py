"""Exact likelihoods through the probability-flow ODE (Sec. 4.3 and Appendix D.2 of Song et al. 2021).

The instantaneous change of variables (Chen et al. 2018) gives, along dx/dt = f(x, t) (Eq. (13)),

    log p_0(x(0)) = log p_T(x(T)) + int_0^T div f(x(t), t) dt,

integrated from `eps` to `T` with the adaptive solver of `score_jax.ode`, inside jit. The
divergence is the Skilling-Hutchinson estimate eps^T (df/dx) eps with one probe eps per sample,
drawn once per call and held along the trajectory (one forward-mode Jacobian-vector product per
evaluation), or the exact trace of the Jacobian (D JVPs; for small D).

`bits_per_dim` converts to bits/dim of 8-bit data as the reference does (+8 bits for data in
[0, 1], +7 for data centred to [-1, 1]), but, unlike the reference, dequantises first:
x = (255 img + u) / 256 with u ~ U[0, 1)^D. Then -E_u log2 p(x) / D + 8 bounds the discrete
negative log-likelihood -log2 P(img) / D from above (Jensen), as in Theis et al. 2016; the
reference fed the 256 grid points themselves, whose density can be arbitrarily large, so it could
report negative bits/dim.
"""

import math

import flax
import jax
import jax.numpy as jnp
import numpy as np

from score_jax import ode, parallel
from score_jax.models import get_score_fn
from score_jax.sampling import per_sample_keys
from score_jax.utils import choice_error, flat_sum


@flax.struct.dataclass
class LikelihoodOutput:
  """`logp` `(B,)` in nats, the latent `z` = x(T), and `nfe` (ODE function evaluations, all repeats)."""

  logp: jax.Array
  z: jax.Array
  nfe: jax.Array


@flax.struct.dataclass
class BitsPerDimOutput:
  """`bpd` `(B,)`, the latent `z` and `nfe`."""

  bpd: jax.Array
  z: jax.Array
  nfe: jax.Array


def _per_sample(draw):
  return lambda keys, x: jax.vmap(lambda key: draw(key, x.shape[1:], x.dtype))(keys)


# Probes with E[eps eps^T] = I.
HUTCHINSON = {
    "rademacher": _per_sample(jax.random.rademacher),
    "gaussian": _per_sample(jax.random.normal),
    "exact": None,
}


def exact_divergence(fn, x):
  """`(fn(x), div fn(x))`: the trace of each sample's Jacobian by D forward-mode JVPs.

  Assumes that samples do not interact (true of score networks in eval mode).
  """
  dim = math.prod(x.shape[1:])
  basis = jnp.eye(dim, dtype=x.dtype).reshape((dim, 1) + x.shape[1:])
  columns = jax.vmap(lambda e: jax.jvp(fn, (x,), (jnp.broadcast_to(e, x.shape),))[1])(basis)
  diagonal = jnp.diagonal(columns.reshape(dim, x.shape[0], dim), axis1=0, axis2=2)  # (B, D)
  return fn(x), jnp.sum(diagonal, axis=-1)


def hutchinson_divergence(fn, x, probe):
  """`(fn(x), probe^T (dfn/dx) probe)` per sample, with one JVP."""
  value, jvp = jax.jvp(fn, (x,), (probe,))
  return value, flat_sum(jvp * probe)


def _log_likelihood(rng, x, probe, *, score_fn, sde, hutchinson, rtol, atol, eps, max_steps):
  batch_size = x.shape[0]
  flow = sde.reverse(score_fn, probability_flow=True)
  drift_fn = lambda t: lambda x: flow.sde(x, jnp.full((batch_size,), t))[0]
  if hutchinson == "exact":
    divergence_fn = lambda x, t: exact_divergence(drift_fn(t), x)
  else:
    if probe is None:
      probe = HUTCHINSON[hutchinson](per_sample_keys(rng, batch_size), x)
    divergence_fn = lambda x, t: hutchinson_divergence(drift_fn(t), x, probe)

  # The augmented ODE [x; delta_logp]: dx/dt = f, d delta_logp / dt = div f, from eps to T.
  solution = ode.odeint(lambda state, t: divergence_fn(state[0], t), (x, jnp.zeros((batch_size,), x.dtype)),
                        eps, sde.T, rtol=rtol, atol=atol, max_steps=max_steps)
  z, delta_logp = solution.y
  logp = jnp.where(solution.success, sde.prior_logp(z) + delta_logp, jnp.nan)
  return LikelihoodOutput(logp=logp, z=z, nfe=solution.nfe)


def _repeated_log_likelihood(rng, x, probe, *, num_repeats, **options):
  """Averages `num_repeats` estimates with independent probes (one ODE solve each)."""
  if num_repeats == 1:
    return _log_likelihood(rng, x, probe, **options)
  outputs = jax.lax.map(lambda r: _log_likelihood(jax.random.fold_in(rng, r), x, probe, **options),
                        jnp.arange(num_repeats))
  return LikelihoodOutput(logp=outputs.logp.mean(0), z=outputs.z[0], nfe=outputs.nfe.sum())


_STATIC = ("score_fn", "sde", "hutchinson", "rtol", "atol", "eps", "max_steps", "num_repeats")
_log_likelihood_jit = jax.jit(_repeated_log_likelihood, static_argnames=_STATIC)


def log_likelihood(rng, score_fn, sde, x, *, hutchinson="rademacher", rtol=1e-5, atol=1e-5, eps=1e-5,
                   num_repeats=1, max_steps=4096, probe=None):
  """log p(x) in nats under the probability-flow ODE model of `score_fn`.

  Args:
    rng: PRNG key for the Hutchinson probes (probe i depends on (rng, i) only).
    score_fn: `score_fn(x, t) -> score`; static: reuse the same object to avoid retracing.
    sde: the forward SDE; its prior gives log p_T.
    x: `(B, ...)` data in model space.
    hutchinson: "rademacher", "gaussian" (unbiased estimates) or "exact" (D JVPs per evaluation).
    rtol, atol: ODE tolerances. eps: the start time (the reference's 1e-5).
    num_repeats: independent probe draws (ODE solves) averaged.
    max_steps: most solver steps per solve (NaN log-likelihood beyond).
    probe: optional fixed `(B, ...)` probe instead of a random draw (e.g. to replay a run).

  Returns:
    `LikelihoodOutput(logp (B,), z, nfe)`.
  """
  if hutchinson not in HUTCHINSON:
    raise choice_error("hutchinson", hutchinson, HUTCHINSON)
  return _log_likelihood_jit(rng, x, probe, score_fn=score_fn, sde=sde, hutchinson=hutchinson, rtol=rtol,
                             atol=atol, eps=eps, max_steps=max_steps, num_repeats=num_repeats)


def _affine_coefficients(inverse_scaler):
  """`scale`, `shift` of the affine `inverse_scaler(x) = scale x + shift` (model space -> [0, 1])."""
  shift = float(np.asarray(inverse_scaler(np.float32(0.0))))
  return dict(scale=float(np.asarray(inverse_scaler(np.float32(1.0)))) - shift, shift=shift)


def _bits_per_dim(rng, x, probe, *, scale, shift, dequantize, **options):
  """`scale`, `shift`: the inverse scaler's affine coefficients, x_01 = scale x + shift."""
  if dequantize:  # x = (255 img + u) / 256 on the [0, 1] scale, then back to model space
    pixels = jnp.round((scale * x + shift) * 255.0)
    noise = jax.vmap(lambda key: jax.random.uniform(key, x.shape[1:], x.dtype))(
        per_sample_keys(jax.random.fold_in(rng, 1), x.shape[0]))
    x = ((pixels + noise) / 256.0 - shift) / scale
  output = _repeated_log_likelihood(jax.random.fold_in(rng, 0), x, probe, **options)
  dim = math.prod(x.shape[1:])
  # log2 of the Jacobian from model space to the [0, 1] scale (-1 for centred data), + 8 bits.
  offset = 8.0 + math.log2(scale)
  return BitsPerDimOutput(bpd=-output.logp / (dim * math.log(2.0)) + offset, z=output.z, nfe=output.nfe)


_bits_per_dim_jit = jax.jit(_bits_per_dim, static_argnames=_STATIC + ("scale", "shift", "dequantize"))


def bits_per_dim(rng, score_fn, sde, x, *, inverse_scaler, dequantize=True, hutchinson="rademacher", rtol=1e-5,
                 atol=1e-5, eps=1e-5, num_repeats=1, max_steps=4096, probe=None):
  """Bits/dim of 8-bit images `x` (model space) under the probability-flow ODE model.

  Args:
    inverse_scaler: the affine map from model space to [0, 1] (the data pipeline's); it gives the
      reference's offset log2(inverse_scaler') + 8 (7 for centred data).
    dequantize: add uniform noise on the 256-level grid first (default), so the result bounds the
      discrete NLL; False reproduces the reference, which adds none.
    Other arguments: as `log_likelihood`.

  Returns:
    `BitsPerDimOutput(bpd (B,), z, nfe)`.
  """
  if hutchinson not in HUTCHINSON:
    raise choice_error("hutchinson", hutchinson, HUTCHINSON)
  return _bits_per_dim_jit(rng, x, probe, score_fn=score_fn, sde=sde, hutchinson=hutchinson, rtol=rtol, atol=atol,
                           eps=eps, max_steps=max_steps, num_repeats=num_repeats, dequantize=dequantize,
                           **_affine_coefficients(inverse_scaler))


def get_likelihood_fn(config, sde, model, inverse_scaler, *, eps=1e-5, hutchinson="rademacher", rtol=1e-5,
                      atol=1e-5, dequantize=True, num_repeats=1, mesh=None):
  """Builds the evaluation bits/dim function of `config` (`eval.enable_bpd`).

  The score function uses `config.training.continuous`; the reference always used continuous
  labels, which is wrong for discrete VE networks (they expect a noise-level index). The batch is
  split over the devices of `mesh` (default: every device of every process), `variables` replicated;
  probe i depends on (rng, i) only, so the result is that of a single-device run.

  Returns:
    `bpd_fn(rng, variables, x) -> BitsPerDimOutput`, jitted; `x` is a batch in model space (with
    several processes, a global array: `parallel.shard_batch`) whose size is a multiple of the
    device count (else `ValueError`, before compiling).
  """
  if hutchinson not in HUTCHINSON:
    raise choice_error("hutchinson", hutchinson, HUTCHINSON)
  continuous = config.training.continuous
  coefficients = _affine_coefficients(inverse_scaler)

  def bpd_fn(rng, variables, x):
    bound_sde = sde.bind(variables)  # a learned schedule's parameters are the model's
    score_fn = get_score_fn(bound_sde, model, variables, train=False, continuous=continuous)
    return _bits_per_dim(rng, x, None, score_fn=score_fn, sde=bound_sde, hutchinson=hutchinson, rtol=rtol, atol=atol,
                         eps=eps, max_steps=4096, num_repeats=num_repeats, dequantize=dequantize, **coefficients)

  return _data_parallel(bpd_fn, mesh, BitsPerDimOutput(bpd=True, z=True, nfe=False))


def get_log_likelihood_fn(config, sde, model, *, eps=1e-5, hutchinson="rademacher", rtol=1e-5, atol=1e-5,
                          num_repeats=1, mesh=None):
  """`log_likelihood` of `model`'s score, split over `mesh` as `get_likelihood_fn` (for flat data).

  Returns:
    `logp_fn(rng, variables, x) -> LikelihoodOutput`, jitted.
  """
  if hutchinson not in HUTCHINSON:
    raise choice_error("hutchinson", hutchinson, HUTCHINSON)
  continuous = config.training.continuous

  def logp_fn(rng, variables, x):
    bound_sde = sde.bind(variables)
    score_fn = get_score_fn(bound_sde, model, variables, train=False, continuous=continuous)
    return _repeated_log_likelihood(rng, x, None, score_fn=score_fn, sde=bound_sde, hutchinson=hutchinson, rtol=rtol,
                                    atol=atol, eps=eps, max_steps=4096, num_repeats=num_repeats)

  return _data_parallel(logp_fn, mesh, LikelihoodOutput(logp=True, z=True, nfe=False))


def _data_parallel(fn, mesh, out_batch):
  """`fn(rng, variables, x)` with x's batch split over `mesh`; checks the batch size before compiling."""
  mesh = mesh if mesh is not None else parallel.make_mesh()
  sharded_fn = parallel.data_parallel(fn, mesh, in_batch=(False, False, True), out_batch=out_batch)

  def checked_fn(rng, variables, x):
    parallel.check_batch("likelihood batch size x.shape[0]", x.shape[0], mesh)
    return sharded_fn(rng, variables, x)

  checked_fn.jitted = sharded_fn.jitted
  return checked_fn
