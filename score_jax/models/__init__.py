"""Score networks, their registry, and the score / denoiser functions of a parameterized model."""

# Importing a model module registers it.
from score_jax.models import ddpm, mlp, ncsnpp, ncsnv2  # noqa: F401
from score_jax.models.registry import get_model, get_network, model_names, register_model
from score_jax.models.score_model import (ScoreModel, check_guidance, get_denoiser_fn, get_model_fn, get_network_fn,
                                          get_output_fn, get_score_fn, num_classes_of, parameterization_of)
from score_jax.models.utils import get_data_shape, get_sigmas, init_model

__all__ = ["ScoreModel", "get_model", "get_network", "get_model_fn", "get_network_fn", "get_score_fn",
           "get_denoiser_fn", "get_output_fn", "get_sigmas", "get_data_shape", "init_model", "model_names",
           "num_classes_of", "parameterization_of", "register_model", "check_guidance"]
