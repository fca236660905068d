"""VDM (Kingma et al. 2021) on the embedded digits: the continuous-time ELBO with a learned noise
schedule, on the small DDPM++ of configs/digits.py, for a CPU. Evaluation reports the ELBO
(`elbo_bpd`) beside the probability-flow ODE's bits/dim (`bpd`).

  python main.py --config=configs/vdm/digits.py --workdir=runs/vdm_digits
"""

from configs import digits


def get_config():
  config = digits.get_config()
  training = config.training
  training.sde = "learned_vpsde"
  training.objective = "vdm"

  evaluate = config.eval
  evaluate.enable_bpd = True
  evaluate.elbo_num_times = 16

  model = config.model
  model.parameterization = "eps"             # VDM's noise prediction
  model.gamma_min = -13.3                    # VDM's initial endpoints (its CIFAR-10 config)
  model.gamma_max = 5.0
  model.schedule_features = 1024
  return config
