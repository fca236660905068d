"""Consistency distillation on the embedded digits (CPU) from the EDM digits model (configs/edm/digits.py:
the teacher's Heun step on an 18-level grid), as Song et al. 2023 do it: the squared l2 distance, the current
weights as target (mu = 0) and the student started from the teacher's weights; sampled in 1 step (more:
`sampling.steps`, at levels of the training grid). `model.sigma_data` stays the teacher's 0.5 (the digits' std
in [-1, 1] is 0.64, measured over the 1797 images): a student of another sigma_data cannot start from the
teacher's weights, which matters more.

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
  training.consistency_loss = "l2"
  training.consistency_target_ema = 0.0
  sampling = config.sampling
  sampling.method = "consistency"
  sampling.steps = 1
  return config
