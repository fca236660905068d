"""Class-conditional EDM DDPM++ on CIFAR-10 with classifier-free guidance and EDM2's post-hoc EMA.

`configs/edm/cifar10_ddpmpp.py` (EDM config F, 200 Mimg) with a class embedding (`model.num_classes = 10`:
EDM's conditional CIFAR-10 setting, its best FID), the label dropped to the null class with probability
0.1 in training (Ho & Salimans 2022), and the power-function EMA (Karras et al. 2024) tracked at
sigma_rel 0.05 and 0.10 with a snapshot every ~5 Mimg, so the EMA width is chosen after training
(`--mode=reconstruct_ema --sigma_rel=...`, then `--mode=eval` on the directory it prints).

Guidance: w = 0.3 by default, at the top of the range where Ho & Salimans found the best FID on
ImageNet 64 (0.1 to 0.3); larger w trades diversity (FID) for class fidelity (IS). Sweep it with
`--config.sampling.guidance_scale=...`; each guided step costs two network evaluations (Heun's 18
steps: 70 instead of 35).
"""

from configs.edm.cifar10_ddpmpp import MIMG
from configs.edm.cifar10_ddpmpp import get_config as get_edm_config


def get_config():
  config = get_edm_config()
  config.model.num_classes = 10
  config.training.class_dropout = 0.1
  config.model.ema_type = "power"
  config.model.ema_sigma_rels = (0.05, 0.1)
  config.training.ema_snapshot_freq = 5 * MIMG            # 5 Mimg (9765 steps)
  config.sampling.guidance_scale = 0.3
  return config
