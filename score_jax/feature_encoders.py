"""Frozen feature encoders for representation alignment (REPA, Yu et al. 2025; `training.repa_encoder`).

An encoder maps clean images in [0, 1] (NHWC) to a spatial feature map `(B, h, w, channels)`; REPA resizes the map
to the network's token grid and aligns projected tokens to it (`objectives.repa`). Its weights are read once by
the driver (`trained_model.load_companions(config, ["repa_encoder"])`) and enter the train step as a frozen
companion's variables.

  digits     the digits classifier of the digits FD (`metrics.digits`, weights shipped in score_jax/assets): its
             second pool's 4x4x64 map, offline
  inception  the FID Inception-v3 (`metrics.inception`): Mixed_7c's 8x8x2048 map at 299 px (the weights of
             `eval.inception_path`, else downloaded once)

A user's encoder is any Flax module: `register_encoder("name", FeatureEncoder(channels, features_fn, load))`.
"""

import dataclasses
from typing import Callable

import jax.numpy as jnp

from score_jax.metrics import digits, inception
from score_jax.utils import choice_error


@dataclasses.dataclass(frozen=True)
class FeatureEncoder:
  """A frozen feature network: `features_fn(variables, images) -> (B, h, w, channels)` for `images` (B, H, W, C)
  in [0, 1]; `load(config) -> variables` reads its weights (once, on the host)."""

  channels: int
  features_fn: Callable
  load: Callable


def _grey(images):
  return images if images.shape[-1] == 1 else jnp.mean(images, axis=-1, keepdims=True)


def _rgb(images):
  return jnp.repeat(images, 3, axis=-1) if images.shape[-1] == 1 else images


def _digits_features(variables, images):
  _, state = digits.DigitsClassifier().apply(variables, _grey(images), mutable=["intermediates"])
  return state["intermediates"]["spatial"][0]


def _inception_features(variables, images):
  _, state = inception.InceptionV3().apply(variables, _rgb(images), mutable=["intermediates"])
  return state["intermediates"]["spatial"][0]


def _load_inception(config):
  path = inception.resolve_weights(config.eval.inception_path or None, config.eval.inception_url or None,
                                   config.eval.inception_cache_dir or None)
  return inception.load_inception_variables(path)


ENCODERS = {
    "digits": FeatureEncoder(digits.DigitsClassifier.channels[-1], _digits_features,
                             lambda config: digits.load_variables()),
    "inception": FeatureEncoder(2048, _inception_features, _load_inception),
}


def register_encoder(name, encoder):
  """Registers a `FeatureEncoder` as `training.repa_encoder = name` (e.g. from a user's module)."""
  if name in ENCODERS:
    raise ValueError(f"training.repa_encoder {name!r} is already registered")
  ENCODERS[name] = encoder
  return encoder


def get_encoder(name):
  """The registered `FeatureEncoder` of `training.repa_encoder = name`; a `ValueError` listing the names."""
  if name not in ENCODERS:
    raise choice_error("training.repa_encoder", name, tuple(ENCODERS))
  return ENCODERS[name]


def load_repa_encoder(config):
  """The frozen encoder's variables of a REPA run (`trained_model.COMPANIONS["repa_encoder"]`), read once; None
  when `training.repa_weight` is 0."""
  training = config.training
  return get_encoder(training.repa_encoder).load(config) if training.repa_weight else None
