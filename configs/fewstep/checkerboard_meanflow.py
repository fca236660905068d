"""MeanFlow on the 2-D checkerboard, from scratch: the toy quickstart's network and recipe on the rectified-flow
path (`training.sde = "rectified_flow"`), trained by `training.objective = "meanflow"` (Geng et al. 2025: the average
velocity u(z, r, t) through one `jax.jvp`; the `average_velocity` parameterization follows from the objective) and
sampled by flow-map jumps, one network evaluation each: only `sampling.steps` needs giving. The network's inputs
are scaled for unit-variance data (`flow`'s x / sqrt(m^2 + std^2)); the checkerboard's std is about 1.15.

  python main.py --config=configs/fewstep/checkerboard_meanflow.py --workdir=runs/checkerboard_meanflow --mode=train
  python main.py --config=configs/fewstep/checkerboard_meanflow.py --workdir=runs/checkerboard_meanflow --mode=eval \
      --config.sampling.steps=2
"""

from configs.toy.checkerboard import get_config as checkerboard


def get_config():
  config = checkerboard()
  training = config.training
  training.sde = "rectified_flow"
  training.objective = "meanflow"
  training.edm_p_mean = -0.4                # logit(t), logit(r) ~ N(-0.4, 1.0^2), the paper's choice
  training.edm_p_std = 1.0
  training.meanflow_r_equals_t = 0.75       # the paper's share of r = t (flow matching)
  config.model.parameterization = "average_velocity"
  sampling = config.sampling
  sampling.method = "flow_map"
  sampling.steps = 1
  return config
