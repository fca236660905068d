"""EDM2 on the embedded digits (CPU): the magnitude-preserving U-Net at 16 px (16 channels times (1, 2), 3 blocks,
attention at 8 px: 324k parameters against the 317k of configs/edm/digits.py's DDPM++), the EDM objective with the
learned loss weighting and the inverse square-root learning rate; sampled with Heun (35 evaluations). Its
autoguidance guide is configs/edm2/digits_guide.py.

  python main.py --config=configs/edm2/digits.py --workdir=runs/edm2_digits --mode=train
  python main.py --config=configs/edm2/digits.py --workdir=runs/edm2_digits --mode=sample --seeds=0-99 \
    --out=runs/edm2_digits/guided --config.sampling.guidance_workdir=runs/edm2_digits_guide \
    --config.sampling.guidance_scale=1.0
"""

from configs.edm.digits import get_config as edm_digits


def get_config():
  config = edm_digits()
  config.training.loss_weighting = "uncertainty"
  model = config.model
  model.name = "edm2"
  model.nf = 16
  model.ch_mult = (1, 2)
  model.num_res_blocks = 3
  model.attn_resolutions = (8,)
  model.dropout = 0.0
  optim = config.optim
  optim.lr = 0.01
  optim.beta2 = 0.99
  optim.schedule = "inverse_sqrt"
  optim.ref_steps = 500
  optim.warmup = 100
  optim.grad_clip = -1.0
  return config
