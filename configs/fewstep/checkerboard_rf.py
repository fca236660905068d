"""Rectified flow on the 2-D checkerboard: the toy quickstart's network and recipe, trained by conditional flow
matching (`model.parameterization = "flow"`: the network predicts the velocity z - x(0) of the linear path
x(t) = (1 - t) x(0) + t z, regressed at t ~ U[eps, T]) and sampled with Euler steps (DDIM on this path is
exactly Euler on the predicted velocity: docs/sampling.md).

  python main.py --config=configs/fewstep/checkerboard_rf.py --workdir=runs/checkerboard_rf --mode=train
"""

from configs.toy.checkerboard import get_config as checkerboard


def get_config():
  config = checkerboard()
  config.training.sde = "rectified_flow"
  config.model.parameterization = "flow"
  sampling = config.sampling
  sampling.method = "ddim"                   # Euler on the velocity
  sampling.steps = 8
  sampling.schedule = "time_uniform"         # equal steps in t, rectified flow's Euler grid
  return config
