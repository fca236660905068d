"""EDM (Karras et al. 2022) on the embedded digits: the objective and preconditioning of
configs/edm/cifar10_ddpmpp.py on the small DDPM++ of configs/digits.py, for a CPU.

  python main.py --config=configs/edm/digits.py --workdir=runs/edm_digits
"""

from configs import digits


def get_config():
  config = digits.get_config()
  training = config.training
  training.sde = "vesde"
  training.objective = "edm"

  sampling = config.sampling
  sampling.method = "heun"
  sampling.steps = 18                        # 35 NFE
  sampling.rho = 7.0

  model = config.model
  model.parameterization = "edm"
  model.sigma_data = 0.5
  model.sigma_min = 0.002
  model.sigma_max = 80.0
  return config
