"""Small shared helpers."""

import jax.numpy as jnp


def append_dims(v, ndim):
  """Reshapes a per-sample `(B,)` array to broadcast against an `ndim`-D batch."""
  v = jnp.asarray(v)
  return v.reshape(v.shape + (1,) * (ndim - v.ndim))


def batch_mul(v, x):
  """Multiplies each sample of `x` by the matching entry of the `(B,)` array `v`."""
  return append_dims(v, x.ndim) * x


def flat_sum(x):
  """Sum over every non-batch dimension: `(B, ...) -> (B,)`."""
  return jnp.sum(x.reshape(x.shape[0], -1), axis=-1)


def choice_error(key, value, choices):
  """A `ValueError` naming the bad key, its value and the valid choices."""
  return ValueError(f"{key}={value!r} is not valid; choose one of: {', '.join(sorted(choices))}")
