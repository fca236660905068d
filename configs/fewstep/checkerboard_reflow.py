"""Reflow on the 2-D checkerboard (Liu et al. 2023): the rectified-flow model of configs/fewstep/checkerboard_rf.py
retrained on its own ODE's (noise, sample) pairs (`training.objective = "reflow"`, the teacher's Heun ODE on
`training.teacher_steps` levels in every training step; its pairs are only as good as that ODE), starting from the teacher's weights, sampled with
1-4 Euler steps; the straighter paths make few steps accurate.

  python main.py --config=configs/fewstep/checkerboard_rf.py --workdir=runs/checkerboard_rf --mode=train
  python main.py --config=configs/fewstep/checkerboard_reflow.py --workdir=runs/checkerboard_reflow --mode=train \
    --config.training.teacher_workdir=runs/checkerboard_rf --config.training.init_workdir=runs/checkerboard_rf
"""

from configs.fewstep.checkerboard_rf import get_config as rectified_flow


def get_config():
  config = rectified_flow()
  training = config.training
  training.objective = "reflow"
  training.teacher_workdir = "runs/checkerboard_rf"   # a run of configs/fewstep/checkerboard_rf.py
  training.init_workdir = "runs/checkerboard_rf"
  training.teacher_steps = 40    # Heun: 79 teacher evaluations per training step (18 levels: pairs 89% on the board)
  training.n_iters = 1500
  config.sampling.steps = 2
  return config
