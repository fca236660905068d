"""VP SDE score model on the 2-D 8gaussians toy data set (the offline quickstart)."""

from configs.toy.default import get_default_configs


def get_config():
  config = get_default_configs()
  config.data.dataset = "8gaussians"
  return config
