"""Easy consistency tuning (ECT, Geng et al. 2024) on CIFAR-10: the EDM DDPM++ model of
configs/edm/cifar10_ddpmpp.py (~56M parameters) tuned into a consistency model by consistency training
from its weights (`training.init_workdir`: a finished run of that config), sampled in 1 or 2 steps.

ECT's CIFAR-10 setting as we read the paper: batch 128, Adam at lr 1e-4, dropout 0.2, the pseudo-Huber
distance, ln sigma ~ N(-1.1, 2.0^2), 400k steps at most (its 1-step FID 3.60 and 2-step 2.11 come from
the longer runs). Left out: ECT's continuous-time mapping r(t) of the shrinking interval and its weighting
1 / (t - r) with the adaptive Huber constant: score_jax's consistency training refines iCT's discrete
curriculum (`training.consistency_schedule = "ict"`, 10 doubling to 1280 levels over `training.n_iters`)
instead, with the same log-normal levels and distance.

  python main.py --config=configs/edm/cifar10_ddpmpp.py --workdir=runs/edm_cifar10 --mode=train
  python main.py --config=configs/fewstep/cifar10_ect.py --workdir=runs/ect_cifar10 --mode=train \
    --config.training.init_workdir=runs/edm_cifar10
"""

from configs.edm.cifar10_ddpmpp import get_config as edm_ddpmpp


def get_config():
  config = edm_ddpmpp()
  training = config.training
  training.objective = "consistency_training"   # implies model.parameterization = "consistency"
  training.consistency_loss = "pseudo_huber"
  training.init_workdir = "runs/edm_cifar10"   # a run of configs/edm/cifar10_ddpmpp.py
  training.batch_size = 128
  training.n_iters = 400_000

  config.model.dropout = 0.2
  optim = config.optim
  optim.lr = 1e-4
  optim.warmup = 0

  sampling = config.sampling
  sampling.method = "consistency"
  sampling.steps = 1
  return config
