"""NCSN++ on CelebA-HQ 1024 px with the VE SDE.

Standalone in the reference (no base, `import torch`, missing keys: docs/differences.md#configs-1024px); here it
derives from the 256 px base.
"""

from configs.default_lsun_configs import get_default_configs


def get_config():
  config = get_default_configs()

  training = config.training
  training.sde = "vesde"
  training.continuous = True
  training.batch_size = 8
  training.reduce_mean = False

  sampling = config.sampling
  sampling.method = "pc"
  sampling.predictor = "reverse_diffusion"
  sampling.corrector = "langevin"
  sampling.snr = 0.15
  sampling.batch_size = 8

  data = config.data
  data.dataset = "CelebAHQ"
  data.image_size = 1024

  model = config.model
  model.name = "ncsnpp"
  model.sigma_max = 1348.0
  model.num_scales = 2000
  model.ema_rate = 0.9999
  model.nf = 16
  model.ch_mult = (1, 2, 4, 8, 16, 32, 32, 32)
  model.num_res_blocks = 1
  model.progressive = "output_skip"
  model.progressive_input = "input_skip"

  evaluate = config.eval
  evaluate.begin_ckpt = 1
  evaluate.end_ckpt = 96
  evaluate.batch_size = 1024
  return config
