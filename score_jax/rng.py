"""Per-example and per-sample randomness: key i depends only on (rng, i), never on the batch split.

A step's key is split once into one key per purpose (`purpose_keys`); example i's value of a purpose
comes from `fold_in(purpose_key, i)`. With JAX's partitionable threefry the bits `normal(key, shape)`
draws at position j are the key data of `fold_in(key, j)`, so a key is either a parent or sampled from,
never both, and two purposes never share one.
"""

import jax
import jax.numpy as jnp


# New purposes go last: JAX's partitionable threefry gives `split(rng, n)[i]` the same key for any n >= i + 1, so
# the earlier purposes keep their keys. "posterior": an autoencoder's reparameterised latent draw.
PURPOSES = ("noise", "time", "dropout", "labels", "projection", "decoder_noise", "posterior")


def purpose_keys(rng):
  """`{purpose: key}`: one key per name of `PURPOSES`, split from a step's `rng`."""
  return dict(zip(PURPOSES, jax.random.split(rng, len(PURPOSES))))


def per_sample_keys(rng, batch_size):
  """`(B,)` keys; key i depends only on (`rng`, i)."""
  return jax.vmap(jax.random.fold_in, (None, 0))(rng, jnp.arange(batch_size))


def fold_in(keys, data):
  """Folds `data` into each of the `(B,)` keys."""
  return jax.vmap(jax.random.fold_in, (0, None))(keys, data)


def per_example(rng, batch_size, draw):
  """`draw(key)` for every example of a batch from its own key `fold_in(rng, i)`, stacked."""
  return jax.vmap(draw)(per_sample_keys(rng, batch_size))


def gaussian_noise(keys, x):
  """Per-sample N(0, I) noise shaped like `x`, from `(B,)` keys."""
  return jax.vmap(lambda key: jax.random.normal(key, x.shape[1:], x.dtype))(keys)
