"""DDPM++ deep (8 blocks per resolution) on CIFAR-10 with the sub-VP SDE."""

from configs.default_cifar10_configs import get_default_configs


def get_config():
  config = get_default_configs()

  training = config.training
  training.sde = "subvpsde"
  training.continuous = True
  training.reduce_mean = True
  training.n_iters = 950001

  sampling = config.sampling
  sampling.method = "pc"
  sampling.predictor = "euler_maruyama"
  sampling.corrector = "none"

  data = config.data
  data.centered = True

  model = config.model
  model.name = "ncsnpp"
  model.scale_by_sigma = False
  model.ema_rate = 0.9999
  model.fir = False
  model.progressive_input = "none"
  model.embedding_type = "positional"
  model.num_res_blocks = 8
  return config
