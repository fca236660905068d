"""Base config for CIFAR-10 (32 px): the package's base configuration (`score_jax/base_config.py`, every
key with a one-line comment, the reference's CIFAR-10 values) plus the noise-conditional classifier.

Experiment files under `configs/{ve,vp,subvp}/` only override.
"""

from configs.classifier.default_classifier_configs import get_classifier_config
from score_jax import base_config


def get_default_configs():
  config = base_config.get_config()
  config.classifier = get_classifier_config()  # noise-conditional classifier (configs/classifier/)
  return config
