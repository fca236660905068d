"""The project's own autoencoder on the embedded 8x8 digits (CPU, a few minutes): 8x8x1 -> 4x4x2 latents.

`training.objective = "autoencoder"` (reconstruction MSE + 1e-3 KL per pixel value; no GAN, no LPIPS:
docs/latent.md#its-own-autoencoder) trains `model.name = "autoencoder_kl"`, diffusers' AutoencoderKL layout with
two levels of 16 and 32 channels. Its workdir is then an autoencoder for latent diffusion:

  python main.py --config=configs/latent/digits_autoencoder.py --workdir=runs/digits_ae --mode=train
  python main.py --config=configs/latent/digits_autoencoder.py --workdir=runs/digits_ae --mode=eval  # held-out loss
  # load_autoencoder("runs/digits_ae"), or data.autoencoder = "runs/digits_ae" in a latent run
"""

from configs.digits import get_config as digits_config


def get_config():
  config = digits_config()

  training = config.training
  training.objective = "autoencoder"
  training.reconstruction_loss = "mse"
  training.kl_weight = 1e-3
  training.batch_size = 64
  training.n_iters = 2000
  training.n_jitted_steps = 5
  training.log_freq = 100
  training.eval_freq = 250
  training.snapshot_freq = 1000
  training.snapshot_freq_for_preemption = 500
  training.snapshot_sampling = True         # an autoencoder's snapshot: held-out digits over their reconstructions

  config.data.image_size = 8                # the digits' own size
  config.sampling.batch_size = 36           # 18 held-out digits over their 18 reconstructions

  evaluate = config.eval
  evaluate.end_ckpt = 2
  evaluate.enable_sampling = False          # an autoencoder draws no samples: --mode=eval reports its held-out loss
  evaluate.num_eval_batches = 0             # every held-out batch

  model = config.model
  model.name = "autoencoder_kl"
  model.parameterization = "autoencoder"    # what the objective trains (set at the entry anyway): encode / decode
  model.ae_channels = (16, 32)              # 8 px, 4 px
  model.ae_layers_per_block = 1
  model.latent_channels = 2
  model.ae_norm_groups = 8
  model.ae_attention = False                # 16 positions at 4 px: the convolutions see them all
  model.ema_rate = 0.995

  optim = config.optim
  optim.lr = 2e-3
  optim.warmup = 100
  return config
