"""SiT-XL/2 on class-conditional ImageNet-256 latents (Ma et al. 2024, "SiT: Exploring flow and diffusion-based
generative models with scalable interpolant transformers"): DiT-XL/2's network (configs/latent/
imagenet256_dit_xl2.py) trained by flow matching on the linear interpolant x_t = (1 - t) x0 + t z with the
velocity output (`training.sde = "rectified_flow"`, `model.parameterization = "flow"`), sampled by the
probability-flow ODE. With REPA (Yu et al. 2025) the tokens of block 8 are aligned with a frozen encoder's
patch features (`training.repa_weight = 0.5`, `repa_depth = 8`):

  python main.py --config=configs/latent/imagenet256_sit_xl2.py --workdir=runs/sit_xl2 --mode=train \
    --config.data.path=data/imagenet/train --config.data.autoencoder=sd-vae-ft-ema
  # + REPA: --config.training.repa_weight=0.5

Left out, as we read the papers: SiT's SDE sampler with its learned-variance-free diffusion coefficient (here
the ODE, Heun 2nd order, 250 NFE budget); REPA's encoder, DINOv2-B/14 (not in score_jax: the registered
encoders are the digits classifier and Inception-v3; docs/latent.md says how to register one), so the REPA
figures of the paper are not what this config reproduces; the 4M-step schedule.
"""

from configs.latent.imagenet256_dit_xl2 import get_config as dit_xl2


def get_config():
  config = dit_xl2()
  training = config.training
  training.sde = "rectified_flow"
  training.continuous = True
  training.objective = "dsm"                 # the regression on the flow parameterization's velocity target
  training.repa_weight = 0.0                 # 0.5 for SiT-XL/2 + REPA
  training.repa_depth = 8
  training.repa_encoder = "inception"

  model = config.model
  model.parameterization = "flow"
  model.num_scales = 1000

  sampling = config.sampling
  sampling.method = "heun"
  sampling.steps = 125                       # 249 network evaluations (Heun, last step Euler)
  sampling.S_churn = 0.0
  sampling.predictor, sampling.corrector = "none", "none"  # the DiT config's PC settings, unused by heun
  return config
