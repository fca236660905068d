"""DiT (Peebles & Xie 2023) on the latents of the project's own digits autoencoder (configs/latent/
digits_autoencoder.py: 8x8x1 digits -> 4x4x2 latents), with EDM's objective and preconditioning: patch 1 on the
4x4 latent grid (16 tokens of width 64), 4 adaLN-Zero blocks of 4 heads.

  python main.py --config=configs/latent/digits_autoencoder.py --workdir=runs/digits_ae --mode=train
  python main.py --config=configs/latent/digits_dit.py --workdir=runs/digits_latent_dit --mode=train \
    --config.data.autoencoder=runs/digits_ae
  # + REPA on the decoded clean latents: --config.training.repa_weight=0.5
"""

from configs.latent import digits_edm


def get_config():
  config = digits_edm.get_config()
  model = config.model
  model.name = "dit"
  model.patch_size = 1                       # 16 tokens: the latent grid itself
  model.hidden_size = 64
  model.depth = 4
  model.num_heads = 4
  model.mlp_ratio = 4.0
  model.dropout = 0.0
  config.training.repa_depth = 2             # REPA (when on): the tokens after the second of the four blocks
  config.training.repa_encoder = "digits"    # the digits classifier's features of the decoded clean latents
  return config
