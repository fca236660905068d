"""VP SDE score model on the 2-D checkerboard toy data set (the offline quickstart)."""

from configs.toy.default import get_default_configs


def get_config():
  config = get_default_configs()
  config.data.dataset = "checkerboard"
  return config
