"""NCSNv2 on LSUN bedroom 128 px.

The reference misspells `training.continuouse`, leaving continuous=True; fixed here (docs/differences.md#config-typos).
"""

from configs.default_lsun_configs import get_default_configs


def get_config():
  config = get_default_configs()

  training = config.training
  training.sde = "vesde"
  training.continuous = False
  training.batch_size = 128

  sampling = config.sampling
  sampling.method = "pc"
  sampling.predictor = "none"
  sampling.corrector = "ald"
  sampling.n_steps_each = 3
  sampling.snr = 0.095
  sampling.batch_size = 128

  data = config.data
  data.category = "bedroom"
  data.image_size = 128

  model = config.model
  model.name = "ncsnv2_128"
  model.scale_by_sigma = True
  model.sigma_max = 190.0
  model.num_scales = 1086
  model.ema_rate = 0.9999
  model.normalization = "InstanceNorm++"
  model.nonlinearity = "elu"

  optim = config.optim
  optim.lr = 0.0001
  optim.warmup = 0
  optim.grad_clip = -1.0
  return config
