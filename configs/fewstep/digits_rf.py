"""Rectified flow on the embedded digits (CPU): the small DDPM++ of configs/digits.py trained by conditional
flow matching on the linear path (`model.parameterization = "flow"`), sampled with 8 Euler steps.

  python main.py --config=configs/fewstep/digits_rf.py --workdir=runs/rf_digits --mode=train
"""

from configs import digits


def get_config():
  config = digits.get_config()
  config.training.sde = "rectified_flow"
  config.model.parameterization = "flow"
  sampling = config.sampling
  sampling.method = "ddim"                   # Euler on the velocity
  sampling.steps = 8
  sampling.schedule = "time_uniform"
  return config
