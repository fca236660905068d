"""DDPM on LSUN bedroom 256 px."""

from configs.default_lsun_configs import get_default_configs


def get_config():
  config = get_default_configs()

  training = config.training
  training.sde = "vpsde"
  training.continuous = False
  training.reduce_mean = True

  sampling = config.sampling
  sampling.method = "pc"
  sampling.predictor = "ancestral_sampling"
  sampling.corrector = "none"

  data = config.data
  data.centered = True
  data.category = "bedroom"

  model = config.model
  model.name = "ddpm"
  model.scale_by_sigma = False
  model.ema_rate = 0.9999
  model.num_res_blocks = 2
  model.ch_mult = (1, 1, 2, 2, 4, 4)
  model.num_scales = 1000

  optim = config.optim
  optim.lr = 2e-05
  return config
