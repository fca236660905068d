"""What every sampler shares: the output struct, the prior draw, the per-sample key layout, one jit.

A sampler family is a frozen dataclass, a subclass of `Sampler`, whose fields are its options with their
defaults (stated there and nowhere else). It checks them (`check`) and runs its loop (`run`); calling
it samples in one jit. Its public `<name>_sample(rng, score_fn, sde, shape, *, <options>, z=None)` is
`sample_function(family, name)`, and `registry.config_options` reads each option from `config.sampling`.
"""

import dataclasses
import functools
import inspect

import flax
import jax
import jax.numpy as jnp

from score_jax.parameterization import denoiser_of, network_evaluations_of
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
  """`output` with `nfe` in network evaluations: score evaluations times those of one `score_fn` call
  (`ScoreFunction.network_evaluations`: 2 for a classifier-free-guided score, 1 for a plain function)."""
  return output.replace(nfe=output.nfe * network_evaluations_of(score_fn))


# ------------------------------------------------------------------------------------ families

NOT_IN_CONFIG = {"in_config": False}  # field metadata: an option that `config.sampling` does not set


def not_in_config(default):
  """A field for an option that `registry.config_options` leaves at `default` (or sets itself, as `eps`)."""
  return dataclasses.field(default=default, metadata=NOT_IN_CONFIG)


@dataclasses.dataclass(frozen=True)
class Sampler:
  """Base of the sampler families: the fields of a subclass are its options.

  Frozen, hashable and compared by its fields: it is a static argument of the one jit every sampler
  runs in, so equal options (and the same `score_fn`, `sde`, `shape`) never retrace.
  """

  def check(self):
    """Raises `ValueError` for an invalid option (before anything compiles)."""

  def run(self, rng, z, score_fn, sde, shape):
    """The sampling loop, pure and un-jitted: `SampleOutput` with `nfe` in score evaluations."""
    raise NotImplementedError

  def __call__(self, rng, score_fn, sde, shape, *, z=None):
    """Samples in one jit.

    Args:
      rng: a PRNG key; sample i uses keys derived from (rng, i) only.
      score_fn: `score_fn(x, t) -> score`, any pure function, or a `parameterization.ScoreFunction` that
        brings the model's denoiser and its network evaluations per call. Static: reuse the same object
        (or an equal one) to avoid retracing.
      sde: the forward SDE. shape: `(B, ...)` of the samples.
      z: optional x_T to start from (else a per-sample prior draw).

    Returns:
      `SampleOutput(samples, nfe)`, `nfe` in network evaluations per sample.
    """
    self.check()
    output = _run(self, rng, z, score_fn=score_fn, sde=sde, shape=tuple(shape))
    return count_network_evaluations(output, score_fn)


@functools.partial(jax.jit, static_argnames=("sampler", "score_fn", "sde", "shape"))
def _run(sampler, rng, z, *, score_fn, sde, shape):
  return sampler.run(rng, z, score_fn, sde, shape)


def options_of(family):
  """The keyword options of a `Sampler` subclass: `inspect.Parameter`s named and defaulted as its fields."""
  return [inspect.Parameter(field.name, inspect.Parameter.KEYWORD_ONLY, default=field.default, annotation=field.type)
          for field in dataclasses.fields(family)]


def takes_options(family):
  """Decorates `fn(..., **options)` so that it takes the options of `family` as keywords: its signature
  lists them with their defaults, before its own keyword-only arguments, and any other keyword is a
  `TypeError`, as for a function that spelled them out."""

  def decorate(fn):
    own = [p for p in inspect.signature(fn).parameters.values() if p.kind != p.VAR_KEYWORD]
    positional = [p for p in own if p.kind != p.KEYWORD_ONLY]
    signature = inspect.Signature(positional + options_of(family) + [p for p in own if p.kind == p.KEYWORD_ONLY])

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
      try:
        signature.bind(*args, **kwargs)
      except TypeError as error:
        raise TypeError(f"{wrapper.__name__}(): {error}") from None
      return fn(*args, **kwargs)

    wrapper.__signature__ = signature
    return wrapper

  return decorate


@functools.cache
def sample_function(family, name):
  """The public `name(rng, score_fn, sde, shape, *, <options of family>, z=None) -> SampleOutput`:
  `family(**options)(rng, score_fn, sde, shape, z=z)`, documented by the family's docstring."""

  @takes_options(family)
  def sample_fn(rng, score_fn, sde, shape, *, z=None, **options):
    return family(**options)(rng, score_fn, sde, shape, z=z)

  sample_fn.__name__ = sample_fn.__qualname__ = name
  sample_fn.__module__ = family.__module__
  sample_fn.__doc__ = (f"{inspect.getdoc(family)}\n\nThe options are the fields of `{family.__name__}`; "
                       f"rng, score_fn, sde, shape and z as in `Sampler.__call__`.")
  return sample_fn
