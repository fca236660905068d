"""EDM2's network and training on CIFAR-10 (unconditional): the magnitude-preserving U-Net at 32 px (128 channels
times (2, 2, 2), 4 blocks per level, attention at 16 px: the width and depth of EDM's DDPM++), the EDM objective
with the learned loss weighting, the inverse square-root learning rate and the post-hoc EMA. A recipe in EDM2's
spirit, not from its paper (which has no CIFAR-10 model): EDM's CIFAR-10 noise distribution and batch.

  python main.py --config=configs/edm2/cifar10.py --workdir=runs/edm2_cifar10 --mode=train
"""

from configs.edm.cifar10_ddpmpp import get_config as edm_ddpmpp

BATCH = 512
MIMG = 1_000_000 // BATCH


def get_config():
  config = edm_ddpmpp()
  config.training.loss_weighting = "uncertainty"
  model = config.model
  model.name = "edm2"
  model.nf = 128
  model.ch_mult = (2, 2, 2)
  model.num_res_blocks = 4
  model.attn_resolutions = (16,)
  model.dropout = 0.13
  model.ema_type = "power"
  model.ema_sigma_rels = (0.05, 0.10)
  optim = config.optim
  optim.lr = 0.010
  optim.beta2 = 0.99
  optim.schedule = "inverse_sqrt"
  optim.ref_steps = 20 * MIMG
  optim.warmup = 10 * MIMG
  return config
