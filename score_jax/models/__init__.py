"""A network (`score_jax.networks`) with its parameterization, and the score / denoiser functions built from it.

  registry.py     `get_model(config)`: the network of `model.name` with the parameterization of the config
  score_model.py  `ScoreModel` and the score, denoiser and output functions of a model under an SDE
  utils.py        data shapes and initialisation
  layout.py       the PyTorch port's module order of a network (for checkpoint conversion)
"""

from score_jax.models.registry import get_model
from score_jax.models.score_model import (GuidingModel, ScoreModel, check_guidance, get_average_velocity_fn,
                                          get_denoiser_fn, get_model_fn, get_network_fn, get_output_fn, get_score_fn,
                                          num_classes_of, parameterization_of, project_parameters)
from score_jax.models.utils import get_data_shape, get_sigmas, init_model, init_network
from score_jax.networks import get_network, model_names, register_model

__all__ = ["GuidingModel", "ScoreModel", "get_average_velocity_fn", "get_model", "get_network", "get_model_fn",
           "get_network_fn", "get_score_fn",
           "get_denoiser_fn", "get_output_fn", "get_sigmas", "get_data_shape", "init_model", "init_network", "model_names",
           "num_classes_of", "parameterization_of", "project_parameters", "register_model", "check_guidance"]
