"""Score networks, their registry, and the score-function wrapper."""

# Importing a model module registers it.
from score_jax.models import ddpm, mlp, ncsnpp, ncsnv2  # noqa: F401
from score_jax.models.registry import get_model, model_names, register_model
from score_jax.models.utils import get_data_shape, get_model_fn, get_score_fn, get_sigmas, init_model

__all__ = ["get_model", "get_model_fn", "get_score_fn", "get_sigmas", "get_data_shape", "init_model",
           "model_names", "register_model"]
