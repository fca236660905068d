"""Score networks, their registry, and the score / denoiser functions of a parameterized model.

The plain networks (and their registry) load with this package; the names that pair a network with its
parameterization (and so with the SDE module) load on first use, so that importing a network never imports
`score_jax.sde` or `score_jax.parameterization` (tests/test_models.py checks the import closure).
"""

import importlib

# Importing a network module registers it.
from score_jax.models import ddpm, edm2, mlp, ncsnpp, ncsnv2  # noqa: F401
from score_jax.models.network_registry import get_network, model_names, register_model

_LAZY = {"get_model": "registry", "get_data_shape": "utils", "get_sigmas": "utils", "init_model": "utils",
         **{name: "score_model" for name in ("GuidingModel", "ScoreModel", "check_guidance", "get_denoiser_fn", "get_model_fn",
                                             "get_network_fn", "get_output_fn", "get_score_fn", "num_classes_of",
                                             "parameterization_of", "project_parameters")}}

__all__ = ["GuidingModel", "ScoreModel", "get_model", "get_network", "get_model_fn", "get_network_fn", "get_score_fn",
           "get_denoiser_fn", "get_output_fn", "get_sigmas", "get_data_shape", "init_model", "model_names",
           "num_classes_of", "parameterization_of", "project_parameters", "register_model", "check_guidance"]


def __getattr__(name):
  if name in _LAZY:
    value = getattr(importlib.import_module(f"score_jax.models.{_LAZY[name]}"), name)
    globals()[name] = value
    return value
  raise AttributeError(f"module 'score_jax.models' has no attribute {name!r}")


def __dir__():
  return sorted(set(globals()) | set(_LAZY))
