"""EDM (Karras et al. 2022) on the latents of the project's own digits autoencoder (configs/latent/
digits_autoencoder.py: 8x8x1 digits -> 4x4x2 latents): latent diffusion end to end, offline, on a CPU.

  python main.py --config=configs/latent/digits_autoencoder.py --workdir=runs/digits_ae --mode=train
  python main.py --config=configs/latent/digits_edm.py --workdir=runs/digits_latent_edm --mode=train \
    --config.data.autoencoder=runs/digits_ae

The digits are encoded once (the posterior's mean and std cached; a latent is drawn from them at each step) and
scaled by the autoencoder's recorded factor (1 / the std of its training latents), so the latents have unit
std: `model.sigma_data = 1`. The network is configs/edm/digits.py's small DDPM++ at 4 and 2 px of latents;
samples, snapshots and `--mode=eval|sample` decode to 8x8 digits.
"""

from configs.edm import digits as edm_digits


def get_config():
  config = edm_digits.get_config()

  data = config.data
  data.image_size = 8                        # the digits' own size, the autoencoder's input
  data.autoencoder = "runs/digits_ae"        # a workdir of configs/latent/digits_autoencoder.py
  data.latent_norm = "scaling"               # the workdir's recorded scaling factor: unit-std latents
  data.latent_channels = 2                   # digits_autoencoder.py's latents, stated so that the network builds
  data.latent_factor = 2                     # without the workdir (checked against it when it is there)

  model = config.model
  model.sigma_data = 1.0                     # the scaled latents' std
  model.nf = 16                              # 251k parameters (DDPM++ digits in pixels: 317k)
  model.ch_mult = (1, 2)                     # 4, 2 px of latents
  model.num_res_blocks = 2
  model.attn_resolutions = (4,)              # 16 latent positions: attention sees them all
  config.optim.lr = 2e-3                     # the latent runs are still improving fast at 1500 steps: at the
  # pixel runs' 1e-3 EDM reached FD 41.7 there, at 2e-3 34.5, at 4e-3 32.6 (docs/latent.md#results-on-the-digits)
  return config
