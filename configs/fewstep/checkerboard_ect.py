"""Consistency training on the 2-D checkerboard: the toy quickstart's network and recipe trained from random
weights by improved consistency training (`training.objective = "consistency_training"`: Song & Dhariwal
2024's discretisation curriculum, discretised log-normal noise levels, pseudo-Huber distance, no EMA target;
the `consistency` parameterization follows from the objective) and sampled in one step. ECT proper starts
from a trained diffusion model's weights: add `--config.training.init_workdir=runs/checkerboard_edm` (a run
of configs/fewstep/checkerboard_edm.py). 85.5% of one-step samples on the board after 6000 steps either way;
after 1000 steps 76% tuned, 63% from random weights (docs/training.md).

  python main.py --config=configs/fewstep/checkerboard_ect.py --workdir=runs/checkerboard_ect --mode=train
"""

from configs.toy.checkerboard import get_config as checkerboard


def get_config():
  config = checkerboard()
  config.training.objective = "consistency_training"
  sampling = config.sampling
  sampling.method = "consistency"
  sampling.steps = 1
  return config
