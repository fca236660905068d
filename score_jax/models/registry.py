"""Models: the network named by `config.model.name` (`score_jax.networks`) paired with its parameterization."""

from score_jax import parameterization
from score_jax.networks import get_network
from score_jax.models.score_model import ScoreModel


def get_model(config):
  """The network of `config.model` with its parameterization (`model.parameterization`), from a complete config
  (every config in configs/ is; `base_config.complete` fills a partial one, e.g. the reference's own, with the
  base configuration's defaults)."""
  network = get_network(config)
  return ScoreModel(network=network, parameterization=parameterization.get_parameterization(config, network),
                    learned_weighting=config.training.loss_weighting == "uncertainty")
