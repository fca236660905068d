"""VDM (Kingma et al. 2021) on CIFAR-10: the continuous-time ELBO with a learned noise schedule
(gamma in [-13.3, 5] at initialisation, the monotone network of 1024 units), antithetic times,
the discretised 8-bit decoder, on score_jax's DDPM++.

The paper's own network (32 residual blocks at full resolution, 128 channels, input Fourier
features) is not built: this config trains the bound on the DDPM++ of configs/vp/, so expect
bits/dim nearer ScoreFlow's DDPM++ figures than VDM's 2.65. Hyperparameters as VDM's CIFAR-10
config: Adam 2e-4 (no warm-up decay), batch 128, EMA 0.9999, dropout 0.1, no flips.
"""

from configs.vp import cifar10_ddpmpp_continuous


def get_config():
  config = cifar10_ddpmpp_continuous.get_config()
  training = config.training
  training.sde = "learned_vpsde"
  training.objective = "vdm"
  training.batch_size = 128

  sampling = config.sampling
  sampling.method = "dpm_solver"

  evaluate = config.eval
  evaluate.enable_bpd = True

  data = config.data
  data.random_flip = False

  model = config.model
  model.parameterization = "eps"
  model.gamma_min = -13.3
  model.gamma_max = 5.0
  model.dropout = 0.1
  model.ema_rate = 0.9999
  return config
