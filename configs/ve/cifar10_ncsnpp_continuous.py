"""NCSN++ on CIFAR-10 with the VE SDE (continuous)."""

from configs.default_cifar10_configs import get_default_configs


def get_config():
  config = get_default_configs()

  training = config.training
  training.sde = "vesde"
  training.continuous = True

  sampling = config.sampling
  sampling.method = "pc"
  sampling.predictor = "reverse_diffusion"
  sampling.corrector = "langevin"

  model = config.model
  model.name = "ncsnpp"
  model.embedding_type = "fourier"
  return config
