"""Headline VE config: NCSN++ (continuous) on CIFAR-10, the same as `ve/cifar10_ncsnpp_continuous.py`."""

from configs.ve.cifar10_ncsnpp_continuous import get_config  # noqa: F401
