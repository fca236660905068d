"""REPA: representation alignment (Yu et al. 2025, Eq. (4)), an add-on term to any objective's training loss.

The tokens h_t after block `training.repa_depth` of the network's forward pass on the noisy input (the call the
objective makes anyway: its sown `intermediates["tokens"]`, recorded by `TokenRecorder`) go through the projector
h_phi (three SiLU dense layers, `params["repa_projector"]`, trained with the network) and are pulled towards a
frozen encoder's features y of the clean image, resized to the token grid:

    L_REPA = -lambda * mean over examples and tokens n of cos(h_phi(h_t)[n], y[n])

`training.repa_weight` is lambda (0: off); the encoder (`training.repa_encoder`, `score_jax.feature_encoders`) is a
frozen companion whose variables reach the step as `inputs["repa_encoder"]`. Added in training only (the eval loss
is the objective's).
"""

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp

from score_jax import feature_encoders

ROLE = "repa_encoder"  # the companion's role (`trained_model.COMPANIONS`) and its key among the step's inputs
DECODER_ROLE = "repa_decoder"  # a latent run's autoencoder variables among the step's inputs


@dataclasses.dataclass(frozen=True)
class RepaConfig:
  """REPA's settings (`training.repa_*`)."""

  weight: float          # lambda
  depth: int             # 1-based block whose output tokens are aligned
  encoder: str           # `feature_encoders.ENCODERS` name
  centered: bool = True  # the data lie in [-1, 1] (`data.centered`), else in [0, 1]
  latent: bool = False   # the data are an autoencoder's latents (`data.autoencoder`): decoded for the encoder
  decode: Any = None     # a latent run's `decode(variables, x) -> images in [-1, 1]` (`with_decoder`)

  @classmethod
  def from_config(cls, config):
    """None when `training.repa_weight` is 0; checked against the network and the data.

    Raises:
      ValueError: one line naming the key.
    """
    training = config.training
    if not training.repa_weight:
      return None
    feature_encoders.get_encoder(training.repa_encoder)
    if training.repa_weight < 0:
      raise ValueError(f"training.repa_weight={training.repa_weight} must be >= 0 (0 turns REPA off)")
    if config.model.name != "dit":
      raise ValueError(f"training.repa_weight={training.repa_weight} aligns the tokens a network sows: "
                       f"model.name='dit' sows them, {config.model.name!r} does not")
    if not 1 <= training.repa_depth <= config.model.depth:
      raise ValueError(f"training.repa_depth={training.repa_depth} must lie in 1..model.depth={config.model.depth}")
    if config.data.get("dim", 0):
      raise ValueError("training.repa_weight > 0 needs image data (data.dim = 0)")
    return cls(weight=float(training.repa_weight), depth=int(training.repa_depth), encoder=training.repa_encoder,
               centered=bool(config.data.centered), latent=bool(config.data.get("autoencoder", "")))


def with_decoder(objective, decode):
  """`objective` whose REPA term decodes its latent batches with `decode(variables, x) -> images in [-1, 1]`
  (`latent_data.LatentData.pixel_decoder`); the variables reach the step as `inputs[DECODER_ROLE]`."""
  settings = objective.settings
  return dataclasses.replace(objective, settings=dataclasses.replace(
      settings, repa=dataclasses.replace(settings.repa, decode=decode)))


class TokenRecorder:
  """`model` whose first `apply` (the objective's forward pass on the noisy input) also returns its sown tokens
  into `self.tokens`; every other attribute and call is the model's. Lives for one trace of one loss."""

  def __init__(self, model):
    self.model = model
    self.tokens = None

  def __getattr__(self, name):
    return getattr(self.__dict__["model"], name)

  def apply(self, variables, *args, method=None, **kwargs):
    if method is not None or self.tokens is not None:
      return self.model.apply(variables, *args, method=method, **kwargs)
    output, state = self.model.apply(variables, *args, mutable=["intermediates"], **kwargs)
    self.tokens = state["intermediates"]["tokens"]
    return output


def encoder_input(settings, x, decoder_variables=None):
  """The clean batch `x` (model space) as images in [0, 1], the encoders' input: a latent batch decoded first
  (`settings.decode` with the autoencoder's `decoder_variables`, no gradient into them)."""
  if settings.latent:
    if settings.decode is None or decoder_variables is None:
      raise ValueError("training.repa_weight > 0 with data.autoencoder: the REPA term needs the autoencoder's "
                       "decoder (objectives.repa.with_decoder and the step's inputs[DECODER_ROLE])")
    images = settings.decode(jax.lax.stop_gradient(decoder_variables), x)
    return jnp.clip((images + 1.0) / 2.0, 0.0, 1.0)
  return (x + 1.0) / 2.0 if settings.centered else x


def target_features(features, num_tokens):
  """The encoder's map `(B, h, w, C)` resized (bilinear, antialiased when shrinking) to the square token grid:
  `(B, N, C)` in DiT's row-major token order."""
  side = math.isqrt(num_tokens)
  if side * side != num_tokens:
    raise ValueError(f"REPA needs a square token grid, got {num_tokens} tokens")
  resized = jax.image.resize(features, (features.shape[0], side, side, features.shape[-1]), "linear")
  return resized.reshape(features.shape[0], num_tokens, features.shape[-1])


def negative_cosine(projected, targets):
  """-cos(projected[b, n], targets[b, n]) averaged over tokens: `(B,)`."""
  projected = projected.astype(jnp.float32)
  dot = jnp.sum(projected * targets, axis=-1)
  norms = jnp.linalg.norm(projected, axis=-1) * jnp.linalg.norm(targets, axis=-1)
  return -jnp.mean(dot / jnp.maximum(norms, 1e-6), axis=-1)


def repa_term(settings, model, variables, tokens, x, encoder_variables, decoder_variables=None):
  """lambda * (-cos) per example, `(B,)`: block `settings.depth`'s `tokens` (the sown tuple) projected by the
  model's projector, against the frozen encoder's features of the clean batch `x` (no gradient into them; a
  latent batch decoded to images first with `decoder_variables`)."""
  encoder = feature_encoders.get_encoder(settings.encoder)
  features = encoder.features_fn(encoder_variables, encoder_input(settings, x, decoder_variables))
  h = tokens[settings.depth - 1]
  targets = jax.lax.stop_gradient(target_features(features.astype(jnp.float32), h.shape[1]))
  projected = model.apply(variables, h, method="repa_projection")
  return settings.weight * negative_cosine(projected, targets)
