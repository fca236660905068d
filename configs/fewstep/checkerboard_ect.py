"""Easy consistency tuning (ECT, Geng et al. 2024) on the 2-D checkerboard: the EDM checkerboard model
(configs/fewstep/checkerboard_edm.py, `training.init_workdir`) tuned into a consistency function by
`training.objective = "consistency_training"` with ECT's schedule (`training.consistency_schedule = "ect"`: the
mapping r(t) with q = 2, k = 8, b = 1 over 8 stages, the weighting 1 / (t - r), the data as target where r = 0),
the pseudo-Huber distance, `model.sigma_data` = 1.15 (the checkerboard's std), the learning rate 4e-3 (twice the
toy recipe's: 84.4 / 91.2% of one- / two-step samples on the board against 81.0 / 90.0%), sampled in one step. iCT
from random weights: `--config.training.consistency_schedule=ict --config.training.init_workdir=`.

  python main.py --config=configs/fewstep/checkerboard_edm.py --workdir=runs/checkerboard_edm --mode=train
  python main.py --config=configs/fewstep/checkerboard_ect.py --workdir=runs/checkerboard_ect --mode=train
"""

from configs.fewstep.checkerboard_edm import get_config as checkerboard_edm


def get_config():
  config = checkerboard_edm()
  training = config.training
  training.objective = "consistency_training"
  training.consistency_schedule = "ect"
  training.consistency_loss = "pseudo_huber"
  training.init_workdir = "runs/checkerboard_edm"   # a run of configs/fewstep/checkerboard_edm.py
  config.optim.lr = 4e-3
  sampling = config.sampling
  sampling.method = "consistency"
  sampling.steps = 1
  return config
