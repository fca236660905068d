"""Continuous-time consistency training (sCT) on the embedded digits (CPU): the small DDPM++ of
configs/digits.py on TrigFlow's path (`training.sde = "cosine"`), `training.objective = "scm"` with the
adaptive weighting, sampled in 1 step. Distillation (sCD): add `--config.training.teacher_workdir=...`, a
digits run on the cosine path (e.g. this file with `--config.training.objective=dsm`: flow matching).

  python main.py --config=configs/fewstep/digits_scm.py --workdir=runs/scm_digits --mode=train
"""

from configs import digits


def get_config():
  config = digits.get_config()
  training = config.training
  training.sde = "cosine"
  training.objective = "scm"                 # implies model.parameterization = "trigflow"
  training.loss_weighting = "uncertainty"
  training.scm_warmup_steps = 300
  training.edm_p_mean = -1.0
  training.edm_p_std = 1.4
  config.model.parameterization = "trigflow"
  config.model.sigma_data = 0.5
  sampling = config.sampling
  sampling.method = "consistency"
  sampling.steps = 1
  return config
