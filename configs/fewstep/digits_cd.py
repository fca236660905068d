"""Consistency distillation on the embedded digits (CPU) from the EDM digits model (configs/edm/digits.py:
the teacher's Heun step on an 18-level grid, the student against its EMA target), sampled in 1 step.

  python main.py --config=configs/edm/digits.py --workdir=runs/edm_digits --mode=train
  python main.py --config=configs/fewstep/digits_cd.py --workdir=runs/cd_digits --mode=train \
    --config.training.teacher_workdir=runs/edm_digits
"""

from configs.edm.digits import get_config as edm_digits


def get_config():
  config = edm_digits()
  training = config.training
  training.objective = "consistency_distillation"   # implies model.parameterization = "consistency"
  training.teacher_workdir = "runs/edm_digits"      # a run of configs/edm/digits.py
  training.teacher_solver = "heun"
  sampling = config.sampling
  sampling.method = "consistency"
  sampling.steps = 1
  return config
