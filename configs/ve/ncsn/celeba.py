"""NCSN on CelebA 64 px: 10 noise levels, annealed Langevin.

The reference sets `training.loss = 'vesde'` instead of `training.sde`; fixed here (docs/differences.md#config-typos).
"""

from configs.default_celeba_configs import get_default_configs


def get_config():
  config = get_default_configs()

  training = config.training
  training.sde = "vesde"
  training.continuous = False

  sampling = config.sampling
  sampling.method = "pc"
  sampling.predictor = "none"
  sampling.corrector = "ald"
  sampling.n_steps_each = 100
  sampling.snr = 0.316

  model = config.model
  model.name = "ncsn"
  model.scale_by_sigma = False
  model.num_scales = 10
  model.sigma_max = 1.0
  model.ema_rate = 0.0
  model.normalization = "InstanceNorm++"
  model.nonlinearity = "elu"

  optim = config.optim
  optim.lr = 0.001
  optim.warmup = 0
  optim.grad_clip = -1.0
  return config
