"""DiT-XL/2 on class-conditional ImageNet-256 in the Stable Diffusion VAE's latent space (Peebles & Xie 2023,
"Scalable Diffusion Models with Transformers"): 675M parameters, 32x32x4 latents in 2x2 patches (256 tokens).

  huggingface-cli download stabilityai/sd-vae-ft-ema --local-dir sd-vae-ft-ema
  python main.py --config=configs/latent/imagenet256_dit_xl2.py --workdir=runs/dit_xl2 --mode=train \
    --config.data.path=data/imagenet/train --config.data.autoencoder=sd-vae-ft-ema

`data.path`: ImageNet's training images, one subfolder per class (`data.labels_from = "subfolders"`), or EDM's
dataset_tool zip with dataset.json labels (`--config.data.labels_from=dataset_json`); the images are centre-
cropped and resized to 256 px and encoded once into the latent cache before training (docs/latent.md).

The recipe as we read the paper (Sec. 4 and its appendix): AdamW at a constant 1e-4 without weight decay or
warm-up, batch 256, EMA 0.9999, the discrete DDPM linear schedule of 1000 steps (beta 1e-4 to 0.02),
horizontal flips, classifier-free guidance by dropping the label 10% of the time (sampled at scale 1.5: our
`sampling.guidance_scale` w gives (1 + w) D_cond - w D_uncond, so w = 0.5), 250 DDPM steps. Left out: the
learned variance (DiT trains the second half of its output channels with the hybrid VLB loss of Improved DDPM;
here `model.learn_sigma = False` and the loss is the epsilon MSE alone, so the network has the mean's output
only) and the 7M-step schedule of the paper's headline FID (this config stops at 400K steps, the paper's
ablation length). SiT-XL/2 is configs/latent/imagenet256_sit_xl2.py.
"""

from configs.folder.default import get_config as folder
from score_jax.networks.dit import dit_size


def get_config():
  config = folder()
  training = config.training
  training.sde = "vpsde"
  training.continuous = False                # DDPM's 1000 discrete steps (the epsilon loss)
  training.objective = "dsm"
  training.batch_size = 256
  training.n_iters = 400_000
  training.class_dropout = 0.1
  training.snapshot_freq = 50_000
  training.snapshot_freq_for_preemption = 5_000
  training.eval_freq = 5_000

  data = config.data
  data.dataset = "folder"
  data.image_size = 256
  data.num_channels = 3
  data.centered = True                       # the VAE sees [-1, 1]
  data.labels_from = "subfolders"
  data.random_flip = True
  data.autoencoder = "sd-vae-ft-ema"         # a local copy of stabilityai/sd-vae-ft-ema (the paper's)
  data.latent_channels = 4                   # the SD VAE's latents, stated so that the network builds without the
  data.latent_factor = 8                     # folder (checked against it when it is there): 8x down, 4 channels

  model = config.model
  model.name = "dit"
  model.update(dit_size("XL/2"))
  model.mlp_ratio = 4.0
  model.learn_sigma = False
  model.num_classes = 1000
  model.parameterization = "reference"
  model.beta_min = 0.1                       # x 1/1000 per step: DDPM's 1e-4 ... 0.02
  model.beta_max = 20.0
  model.num_scales = 1000
  model.dropout = 0.0
  model.ema_rate = 0.9999
  model.dtype = "bfloat16"

  optim = config.optim
  optim.optimizer = "Adam"                   # AdamW without weight decay is Adam
  optim.beta1, optim.beta2, optim.eps = 0.9, 0.999, 1e-8
  optim.lr = 1e-4
  optim.weight_decay = 0.0
  optim.warmup = 0
  optim.grad_clip = -1.0

  sampling = config.sampling
  sampling.method = "pc"
  sampling.predictor = "ancestral_sampling"
  sampling.corrector = "none"
  sampling.guidance_scale = 0.5
  return config

