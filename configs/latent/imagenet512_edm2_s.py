"""EDM2-S on class-conditional ImageNet-512 in the SD-VAE's latent space (Karras et al. 2024, "Analyzing and
improving the training dynamics of diffusion models"): the magnitude-preserving U-Net of configs/edm2/
imagenet64_s.py (280M parameters) on 64x64x4 latents, which EDM2 normalises per channel.

  huggingface-cli download stabilityai/sd-vae-ft-mse --local-dir sd-vae-ft-mse
  python main.py --config=configs/latent/imagenet512_edm2_s.py --workdir=runs/edm2_img512_s --mode=train \
    --config.data.path=data/imagenet-512x512.zip --config.data.autoencoder=sd-vae-ft-mse

`data.path`: ImageNet at 512 px (EDM's dataset_tool zip with dataset.json labels). The images are encoded once
into the latent cache (the posterior's mean and std; a latent is drawn from them at every step, EDM2's practice)
and normalised per channel with EDM2's constants for sd-vae-ft-mse: mean (5.81, 3.25, 0.12, -2.15), std (4.17,
4.62, 3.71, 3.28), to a target std of 0.5.

Hyperparameters as we read the paper's ImageNet-512 settings for S (check them against its tables before a
paper-scale run): batch 2048, Adam (0.9, 0.99) at reference rate 0.010 from t_ref = 70000 steps with a 10 Mimg
ramp-up, ln sigma ~ N(-0.4, 1.0^2), sigma_data 0.5, no dropout, post-hoc EMA profiles of relative width 0.05
and 0.10; sample with autoguidance (a smaller or shorter-trained guide, `sampling.guidance_workdir`) or
classifier-free guidance. Left out: EDM2's exact snapshot cadence and its stochastic sampler's settings; its
FID in pixel space needs `--mode=fid` on the decoded samples against ImageNet-512's statistics.
"""

from configs.edm2.imagenet64_s import get_config as edm2_s


def get_config():
  config = edm2_s()
  config.training.edm_p_mean = -0.4
  config.training.edm_p_std = 1.0
  config.optim.ref_steps = 70_000

  data = config.data
  data.image_size = 512
  data.centered = True                       # the VAE sees [-1, 1]
  data.autoencoder = "sd-vae-ft-mse"         # a local copy of stabilityai/sd-vae-ft-mse (EDM2's)
  data.latent_channels = 4                   # the SD VAE's latents, stated so that the network builds without the
  data.latent_factor = 8                     # folder (checked against it when it is there): 8x down, 4 channels
  data.latent_norm = "channels"
  data.latent_mean = (5.81, 3.25, 0.12, -2.15)
  data.latent_std = (4.17, 4.62, 3.71, 3.28)
  data.latent_target_std = 0.5
  data.random_flip = False

  config.model.ch_mult = (1, 2, 3, 4)         # 64, 32, 16, 8 px of latents
  return config
