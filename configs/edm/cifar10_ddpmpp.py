"""EDM (Karras et al. 2022) config F on CIFAR-10, DDPM++ network: the paper's Table 7 hyperparameters.

The EDM objective (log-normal noise levels, lambda(sigma), training.objective="edm") with EDM's
preconditioning (model.parameterization="edm") on the VE SDE of sigma in [0.002, 80] (EDM's
sigma(t) = t schedule: x_t = x_0 + sigma n), sampled with Heun's 2nd-order method, 18 steps
(35 network evaluations) on the rho = 7 schedule.

Left out: the non-leaky augmentation pipeline (12% probability, with the augmentation labels as
extra conditioning): score_jax networks have no augmentation-label input and the pipeline is not
built; EDM reports it matters for small data sets (it prevents overfitting), so expect a somewhat
higher FID than 1.97 without it. The network is score_jax's DDPM++ (the score_sde layout EDM
re-implements), at EDM's width: 128 channels x (2, 2, 2), 4 blocks per resolution, attention at 16 px.
"""

from configs.default_cifar10_configs import get_default_configs

BATCH = 512
MIMG = 1_000_000 // BATCH  # steps per million images


def get_config():
  config = get_default_configs()

  training = config.training
  training.sde = "vesde"
  training.continuous = True
  training.objective = "edm"
  training.edm_p_mean = -1.2
  training.edm_p_std = 1.2
  training.reduce_mean = True
  training.batch_size = BATCH
  training.n_iters = 200 * MIMG              # 200 Mimg

  sampling = config.sampling
  sampling.method = "heun"
  sampling.steps = 18                        # 35 NFE
  sampling.rho = 7.0
  sampling.S_churn = 0.0                     # deterministic (Algorithm 1)

  data = config.data
  data.centered = True
  data.random_flip = True                    # EDM's xflip

  model = config.model
  model.name = "ncsnpp"                      # DDPM++: positional embedding, no FIR, no input pyramid
  model.parameterization = "edm"
  model.sigma_data = 0.5
  model.sigma_min = 0.002
  model.sigma_max = 80.0
  model.scale_by_sigma = False
  model.fir = False
  model.progressive_input = "none"
  model.embedding_type = "positional"
  model.nf = 128
  model.ch_mult = (2, 2, 2)
  model.num_res_blocks = 4
  model.attn_resolutions = (16,)
  model.dropout = 0.13
  model.ema_rate = 0.5 ** (1.0 / (0.5 * MIMG))  # EMA half-life 0.5 Mimg: 0.99929

  optim = config.optim
  optim.lr = 1e-3
  optim.warmup = 10 * MIMG                   # learning-rate ramp-up over 10 Mimg
  optim.grad_clip = -1.0                     # EDM does not clip gradients
  return config
