"""The sampler option keys, now part of the package's base configuration (`score_jax.base_config`)."""

from score_jax.base_config import add_sampler_options  # noqa: F401 -- kept importable
