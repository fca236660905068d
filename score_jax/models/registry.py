"""Models: the network named by `config.model.name` (`score_jax.networks`) paired with its parameterization."""

from score_jax import feature_encoders, parameterization
from score_jax.networks import get_network
from score_jax.models.score_model import ScoreModel


def get_model(config):
  """The network of `config.model` with its parameterization (`model.parameterization`), from a complete config
  (every config in configs/ is; `base_config.complete` fills a partial one, e.g. the reference's own, with the
  base configuration's defaults)."""
  network = get_network(config)
  training = config.training
  repa_projector = None
  if training.repa_weight:  # REPA's projector, to the frozen encoder's channels (trained with the network)
    repa_projector = (training.repa_hidden, feature_encoders.get_encoder(training.repa_encoder).channels)
  return ScoreModel(network=network, parameterization=parameterization.get_parameterization(config, network),
                    learned_weighting=training.loss_weighting == "uncertainty", repa_projector=repa_projector)
