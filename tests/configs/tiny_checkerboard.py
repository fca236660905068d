"""The tiny checkerboard config of the tests, as a file for `main.py --config`."""

from tests.helpers import tiny_toy_config


def get_config():
  return tiny_toy_config()
