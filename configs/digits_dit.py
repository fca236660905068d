"""DiT (Peebles & Xie 2023) on the embedded digits at 16 px, in pixel space: configs/edm/digits.py's run and
recipe (EDM's objective and preconditioning, Heun's sampler) with the transformer in place of DDPM++, at about
DDPM++ digits' parameter count (328k against 317k): 2x2 patches (64 tokens of width 64), 4 adaLN-Zero blocks of
4 heads.

  python main.py --config=configs/digits_dit.py --workdir=runs/digits_dit
  # + REPA, aligned with the digits classifier's features: --config.training.repa_weight=0.5

EDM's recipe, not configs/digits.py's VP one, at twice its learning rate: on this run the VP objective reached FD
70.4 at 1500 steps, the rectified-flow path with the `flow` output (SiT) 42.9, EDM 44.1 at 1e-3 and 40.3 at 2e-3
(docs/latent.md#results-on-the-digits).
"""

from configs.edm.digits import get_config as edm_digits_config


def get_config():
  config = edm_digits_config()
  model = config.model
  model.name = "dit"
  model.patch_size = 2
  model.hidden_size = 64
  model.depth = 4
  model.num_heads = 4
  model.mlp_ratio = 4.0
  model.dropout = 0.0
  config.optim.lr = 2e-3                     # the transformer is still improving fast at 1500 steps
  config.training.repa_depth = 2             # REPA (when on): the tokens after the second of the four blocks
  config.training.repa_encoder = "digits"
  return config
