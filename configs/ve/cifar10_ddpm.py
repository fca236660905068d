"""The DDPM U-Net on CIFAR-10 with the VE SDE (discrete SMLD loss)."""

from configs.default_cifar10_configs import get_default_configs


def get_config():
  config = get_default_configs()

  training = config.training
  training.sde = "vesde"
  training.continuous = False

  sampling = config.sampling
  sampling.method = "pc"
  sampling.predictor = "reverse_diffusion"
  sampling.corrector = "langevin"

  model = config.model
  model.name = "ddpm"
  model.scale_by_sigma = True
  model.ema_rate = 0.999
  model.num_res_blocks = 2
  return config
