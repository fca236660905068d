"""Consistency training on the embedded digits (CPU): the EDM digits model's network and preconditioning
(configs/edm/digits.py) trained with ECT's schedule (`training.consistency_schedule = "ect"`), sampled in 1 step
(2: `sampling.steps=2`). ECT proper tunes a trained EDM run: add `--config.training.init_workdir=runs/edm_digits`
(iCT's curriculum instead: `--config.training.consistency_schedule=ict`). `model.sigma_data` stays the EDM
model's 0.5 (the digits' std in [-1, 1] is 0.64) so that its weights can start this run.

  python main.py --config=configs/fewstep/digits_ect.py --workdir=runs/ect_digits --mode=train
"""

from configs.edm.digits import get_config as edm_digits


def get_config():
  config = edm_digits()
  config.training.objective = "consistency_training"   # implies model.parameterization = "consistency"
  config.training.consistency_schedule = "ect"
  sampling = config.sampling
  sampling.method = "consistency"
  sampling.steps = 1
  return config
