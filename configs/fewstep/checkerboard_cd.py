"""Consistency distillation on the 2-D checkerboard as Song et al. 2023 do it: `training.objective =
"consistency_distillation"` from the EDM checkerboard model (configs/fewstep/checkerboard_edm.py: the teacher's
Heun step between adjacent levels of an 18-level grid), the squared l2 distance, the student started from the
teacher's weights (both have EDM's preconditioning and `model.sigma_data` = 1.15, the checkerboard's std; the
`consistency` parameterization follows from the objective), sampled in one step (more: `sampling.steps`, at
levels of the training grid). Two settings differ from the paper's CIFAR-10 ones, as measured on this toy
(docs/training.md): the target EMA mu = 0.95 (its ImageNet-64 / LSUN setting; mu = 0 put 81.8% of one-step
samples on the board, 0.95 92.5%) and the learning rate 4e-3 (the toy recipe's 2e-3: 92.5 / 93.2% at 1 / 2 steps).

  python main.py --config=configs/fewstep/checkerboard_edm.py --workdir=runs/checkerboard_edm --mode=train
  python main.py --config=configs/fewstep/checkerboard_cd.py --workdir=runs/checkerboard_cd --mode=train \
    --config.training.teacher_workdir=runs/checkerboard_edm
"""

from configs.fewstep.checkerboard_edm import get_config as checkerboard_edm


def get_config():
  config = checkerboard_edm()
  training = config.training
  training.objective = "consistency_distillation"
  training.teacher_workdir = "runs/checkerboard_edm"   # a run of configs/fewstep/checkerboard_edm.py
  training.teacher_solver = "heun"
  training.consistency_loss = "l2"
  training.consistency_target_ema = 0.95
  training.init_from_teacher = True
  config.optim.lr = 4e-3
  sampling = config.sampling
  sampling.method = "consistency"
  sampling.steps = 1
  return config
