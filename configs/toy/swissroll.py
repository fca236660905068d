"""VP SDE score model on the 2-D swissroll toy data set (the offline quickstart)."""

from configs.toy.default import get_default_configs


def get_config():
  config = get_default_configs()
  config.data.dataset = "swissroll"
  return config
