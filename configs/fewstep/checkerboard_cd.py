"""Consistency distillation on the 2-D checkerboard from the toy quickstart's model (VP SDE, denoising score
matching): `training.objective = "consistency_distillation"` (Song et al. 2023: the teacher's Heun step between
adjacent levels of an 18-level grid, the student against its EMA target; the `consistency` parameterization
follows from the objective), sampled in one step. The teacher is a trained run's workdir:

  python main.py --config=configs/toy/checkerboard.py --workdir=runs/checkerboard --mode=train
  python main.py --config=configs/fewstep/checkerboard_cd.py --workdir=runs/checkerboard_cd --mode=train \
    --config.training.teacher_workdir=runs/checkerboard
"""

from configs.toy.checkerboard import get_config as checkerboard


def get_config():
  config = checkerboard()
  training = config.training
  training.objective = "consistency_distillation"
  training.teacher_workdir = "runs/checkerboard"   # a run of configs/toy/checkerboard.py
  training.teacher_solver = "heun"
  sampling = config.sampling
  sampling.method = "consistency"
  sampling.steps = 1
  return config
