"""Class-conditional DDPM++ on the embedded digits, for classifier-free guidance and post-hoc EMA.

The digits model of `configs/digits.py` (same network, data and 1500 steps) with a class embedding
(`model.num_classes = 10`, one extra null class), the label dropped to the null class with probability
`training.class_dropout = 0.2` (Ho & Salimans 2022), and EDM2's power-function EMA tracked at two
widths and stored every 150 steps, so any EMA width can be chosen after training:

  python main.py --config=configs/digits_cfg.py --workdir=runs/cfg
  python main.py --config=configs/digits_cfg.py --workdir=runs/cfg --mode=conditional --labels=0,1,2,3 --guidance_scale=2
  python main.py --config=configs/digits_cfg.py --workdir=runs/cfg --mode=reconstruct_ema --sigma_rel=0.08

Evaluation (`--mode=eval`) samples classes 0..9 in turn with `sampling.guidance_scale` (0: the
conditional model p(x | c) itself).
"""

from configs.digits import get_config as get_digits_config


def get_config():
  config = get_digits_config()
  config.model.num_classes = 10
  config.training.class_dropout = 0.2
  config.model.ema_type = "power"
  config.model.ema_sigma_rels = (0.05, 0.1)   # EDM2's tracked widths
  config.training.ema_snapshot_freq = 150     # 10 snapshots over the 1500 steps
  config.sampling.guidance_scale = 0.0
  return config
