"""What every sampler shares: the output struct, the prior draw, the per-sample key layout, one jit each."""

import functools
import inspect

import flax
import jax
import jax.numpy as jnp

from score_jax.parameterization import denoiser_of
from score_jax.rng import fold_in, per_sample_keys


@flax.struct.dataclass
class SampleOutput:
  """`samples` shaped like the request; `nfe`, the number of network evaluations per sample (int or 0-d
  array): one per score evaluation, two per classifier-free-guided one (`count_network_evaluations`)."""

  samples: jax.Array
  nfe: jax.Array


def initial_state(keys, sde, shape, z=None):
  """x_T: the given latent `z`, or a prior draw per sample."""
  if z is not None:
    return jnp.asarray(z, jnp.float32).reshape(shape)
  return jax.vmap(lambda key: sde.prior_sampling(key, (1,) + shape[1:])[0])(keys)


def prior_draw(rng, sde, shape):
  """The x_T that every sampler draws from `rng` when `z` is None.

  Passing it back as `z` with the same `rng` leaves the samples unchanged; a `z` split over
  devices (e.g. `jax.jit(prior_draw, static_argnums=(1, 2), out_shardings=parallel.data_sharded(mesh))`)
  makes the jitted sampler run split the same way.
  """
  return initial_state(fold_in(per_sample_keys(rng, shape[0]), 0), sde, tuple(shape))


def start(rng, sde, shape, z):
  """(x_T, per-step keys): the prior draw uses fold_in(key_i, 0), the steps fold_in(key_i, 1)."""
  keys = per_sample_keys(rng, shape[0])
  return initial_state(fold_in(keys, 0), sde, shape, z), fold_in(keys, 1)


def denoise_fn(score_fn, sde, x, t):
  """E[x(0) | x(t)], the data prediction at `(B,)` t: the model's own denoiser (`parameterization.denoiser_of`)."""
  return denoiser_of(score_fn, sde)(x, t)


def full(x, value):
  """A `(B,)` time array of `value` for the batch `x`."""
  return jnp.full((x.shape[0],), value, x.dtype)


def count_network_evaluations(output, score_fn):
  """`output` with `nfe` in network evaluations: score evaluations times `score_fn.network_evaluations`
  (2 for a classifier-free-guided score, which calls the network once on twice the batch)."""
  return output.replace(nfe=output.nfe * getattr(score_fn, "network_evaluations", 1))


@functools.cache
def jitted(run):
  """`run(rng, z, *, score_fn, sde, shape, **options)` jitted with everything but `rng` and `z` static;
  the output's `nfe` counts network evaluations."""
  compiled = jax.jit(run, static_argnames=tuple(p for p in inspect.signature(run).parameters
                                                if p not in ("rng", "z")))

  def call(rng, z, *, score_fn, **options):
    return count_network_evaluations(compiled(rng, z, score_fn=score_fn, **options), score_fn)

  return call
