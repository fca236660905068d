"""NCSN++ on LSUN church_outdoor 256 px with the VE SDE."""

from configs.default_lsun_configs import get_default_configs


def get_config():
  config = get_default_configs()

  training = config.training
  training.sde = "vesde"
  training.continuous = True

  sampling = config.sampling
  sampling.method = "pc"
  sampling.predictor = "reverse_diffusion"
  sampling.corrector = "langevin"

  data = config.data
  data.category = "church_outdoor"

  model = config.model
  model.name = "ncsnpp"
  model.ch_mult = (1, 1, 2, 2, 2, 2, 2)
  model.num_res_blocks = 2
  model.progressive = "output_skip"
  model.progressive_input = "input_skip"
  model.sigma_max = 380.0
  return config
