"""Models: the network named by `config.model.name` (`score_jax.networks`) paired with its parameterization."""

from score_jax import base_config, parameterization
from score_jax.networks import get_network
from score_jax.models.score_model import ScoreModel


def get_model(config):
  """The network of `config.model` with its parameterization (`model.parameterization`); keys the config
  lacks (e.g. the reference's own config) take the base configuration's defaults."""
  config = base_config.complete(config)
  network = get_network(config)
  return ScoreModel(network=network, parameterization=parameterization.get_parameterization(config, network),
                    learned_weighting=config.training.loss_weighting == "uncertainty")
