"""The toy quickstart trained with EDM's objective and preconditioning: the diffusion model that consistency
tuning (configs/fewstep/checkerboard_ect.py with `training.init_workdir`) starts from.

  python main.py --config=configs/fewstep/checkerboard_edm.py --workdir=runs/checkerboard_edm --mode=train
"""

from configs.toy.checkerboard import get_config as checkerboard


def get_config():
  config = checkerboard()
  config.training.objective = "edm"
  config.model.parameterization = "edm"
  sampling = config.sampling
  sampling.method = "heun"
  sampling.steps = 18                        # 35 network evaluations
  return config
