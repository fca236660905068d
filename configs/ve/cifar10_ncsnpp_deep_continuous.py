"""NCSN++ deep (8 blocks per resolution) on CIFAR-10 with the VE SDE."""

from configs.default_cifar10_configs import get_default_configs


def get_config():
  config = get_default_configs()

  training = config.training
  training.sde = "vesde"
  training.continuous = True
  training.n_iters = 950001

  sampling = config.sampling
  sampling.method = "pc"
  sampling.predictor = "reverse_diffusion"
  sampling.corrector = "langevin"

  model = config.model
  model.name = "ncsnpp"
  model.embedding_type = "fourier"
  model.num_res_blocks = 8
  return config
