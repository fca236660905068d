"""Continuous-time consistency training (sCT, Lu & Song 2025) on CIFAR-10 with DDPM++ (the EDM network of
configs/edm/cifar10_ddpmpp.py, ~56M parameters), on TrigFlow's path, sampled in 2 steps.

The paper's CIFAR-10 settings as we read its App. G: batch 512, Adam at lr 1e-4 without decay, EMA 0.9999,
ln sigma ~ N(-1.0, 1.4^2) with sigma_d = 0.5, the tangent warm-up over the first 10k steps, the adaptive
weighting, dropout 0.2, 400k steps, 2-step sampling through the intermediate angle 1.1. Left out: the paper's
network changes (adaptive double normalisation, positional time embedding with its scale), its JVP rearrangement in bf16 with float32 accumulation (score_jax
computes the tangent in the model's dtype and the loss in float32). sCD instead: add
`--config.training.teacher_workdir=...`, a trained run on the cosine path (the teacher's parameterization
may be any; `trigflow` trained by flow matching is the paper's).

  python main.py --config=configs/fewstep/cifar10_scm.py --workdir=runs/scm_cifar10 --mode=train
"""

import math

from configs.edm.cifar10_ddpmpp import get_config as edm_ddpmpp


def get_config():
  config = edm_ddpmpp()
  training = config.training
  training.sde = "cosine"
  training.objective = "scm"                 # implies model.parameterization = "trigflow"
  training.loss_weighting = "uncertainty"    # the adaptive weighting
  training.scm_warmup_steps = 10_000
  training.edm_p_mean = -1.0
  training.edm_p_std = 1.4
  training.batch_size = 512
  training.n_iters = 400_000

  model = config.model
  model.parameterization = "trigflow"
  model.sigma_data = 0.5
  model.dropout = 0.2
  model.ema_rate = 0.9999

  optim = config.optim
  optim.lr = 1e-4
  optim.beta2 = 0.99
  optim.warmup = 0

  sampling = config.sampling
  sampling.method = "consistency"
  sampling.steps = 2
  # TrigFlow's angle 1.1 is the noise level sigma_d tan(1.1) = 0.98; on this path t = arctan(sigma) / (pi / 2).
  sampling.consistency_times = (math.atan(0.5 * math.tan(1.1)) / (0.5 * math.pi),)
  return config
