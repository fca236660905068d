"""MeanFlow on the embedded digits (CPU), from scratch: the small DDPM++ of configs/digits.py on the rectified-flow
path, `training.objective = "meanflow"` (the average velocity u(z, r, t) through one `jax.jvp`), sampled by flow-map
jumps (`sampling.steps` = 1, 2, ...).

  python main.py --config=configs/fewstep/digits_meanflow.py --workdir=runs/meanflow_digits --mode=train
"""

from configs import digits


def get_config():
  config = digits.get_config()
  training = config.training
  training.sde = "rectified_flow"
  training.objective = "meanflow"            # implies model.parameterization = "average_velocity"
  training.edm_p_mean = -0.4
  training.edm_p_std = 1.0
  training.meanflow_r_equals_t = 0.75
  config.model.parameterization = "average_velocity"
  sampling = config.sampling
  sampling.method = "flow_map"
  sampling.steps = 1
  return config
