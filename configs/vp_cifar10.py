"""Headline VP config: DDPM++ (continuous) on CIFAR-10, the same as `vp/cifar10_ddpmpp_continuous.py`."""

from configs.vp.cifar10_ddpmpp_continuous import get_config  # noqa: F401
