"""Flow matching on TrigFlow's path for the 2-D checkerboard (`training.sde = "cosine"`, `model.parameterization
= "trigflow"`: the velocity cos z - sin x(0) with TrigFlow's inputs): the teacher of continuous-time
consistency distillation (configs/fewstep/checkerboard_scm.py with `training.teacher_workdir`).

  python main.py --config=configs/fewstep/checkerboard_trigflow.py --workdir=runs/checkerboard_trigflow --mode=train
"""

from configs.toy.checkerboard import get_config as checkerboard


def get_config():
  config = checkerboard()
  config.training.sde = "cosine"
  config.model.parameterization = "trigflow"
  config.model.sigma_data = 1.0             # the checkerboard's std
  sampling = config.sampling
  sampling.method = "dpm_solver"
  sampling.steps = 10
  return config
