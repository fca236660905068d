"""Headline sub-VP config: DDPM++ (continuous) on CIFAR-10, the same as `subvp/cifar10_ddpmpp_continuous.py`."""

from configs.subvp.cifar10_ddpmpp_continuous import get_config  # noqa: F401
