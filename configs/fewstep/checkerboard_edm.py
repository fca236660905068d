"""The toy quickstart trained with EDM's objective and preconditioning: the diffusion model that consistency
tuning (configs/fewstep/checkerboard_ect.py) starts from and consistency distillation
(configs/fewstep/checkerboard_cd.py) learns from and starts from; `model.sigma_data` is the checkerboard's std
(1.1547 over 200k points: toy_data.checkerboard).

  python main.py --config=configs/fewstep/checkerboard_edm.py --workdir=runs/checkerboard_edm --mode=train
"""

from configs.toy.checkerboard import get_config as checkerboard


def get_config():
  config = checkerboard()
  config.training.objective = "edm"
  config.model.parameterization = "edm"
  config.model.sigma_data = 1.15             # the data's std
  sampling = config.sampling
  sampling.method = "heun"
  sampling.steps = 18                        # 35 network evaluations
  return config
