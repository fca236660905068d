"""DiT (Peebles & Xie 2023) on the embedded digits at 16 px, in pixel space: configs/digits.py's run and
recipe with the transformer in place of DDPM++, at about DDPM++ digits' parameter count (328k against 317k):
2x2 patches (64 tokens of width 64), 4 adaLN-Zero blocks of 4 heads.

  python main.py --config=configs/digits_dit.py --workdir=runs/digits_dit
  # + REPA, aligned with the digits classifier's features: --config.training.repa_weight=0.5
"""

from configs.digits import get_config as digits_config


def get_config():
  config = digits_config()
  model = config.model
  model.name = "dit"
  model.patch_size = 2
  model.hidden_size = 64
  model.depth = 4
  model.num_heads = 4
  model.mlp_ratio = 4.0
  model.dropout = 0.0
  config.training.repa_depth = 2             # REPA (when on): the tokens after the second of the four blocks
  config.training.repa_encoder = "digits"
  return config
