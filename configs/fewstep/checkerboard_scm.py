"""Continuous-time consistency training (sCT) on the 2-D checkerboard: the toy quickstart's network and recipe
on TrigFlow's path (`training.sde = "cosine"`), trained by `training.objective = "scm"` (Lu & Song 2025: the
tangent through the network by `jax.jvp`, its warm-up over `training.scm_warmup_steps` and normalisation, the
adaptive weighting `training.loss_weighting = "uncertainty"`; the `trigflow` parameterization follows from the
objective) and sampled in one step. Distillation (sCD) instead: add `--config.training.teacher_workdir=...`,
a trained run on the cosine path (e.g. configs/fewstep/checkerboard_trigflow.py).

  python main.py --config=configs/fewstep/checkerboard_scm.py --workdir=runs/checkerboard_scm --mode=train
"""

from configs.toy.checkerboard import get_config as checkerboard


def get_config():
  config = checkerboard()
  training = config.training
  training.sde = "cosine"
  training.objective = "scm"
  training.loss_weighting = "uncertainty"   # sCM's adaptive weighting
  training.scm_warmup_steps = 1000          # the paper's 10k of 400k steps is a smaller share; toys settle fast
  training.edm_p_mean = -1.0                # ln sigma ~ N(-1.0, 1.4^2), the paper's CIFAR-10 choice
  training.edm_p_std = 1.4
  config.model.sigma_data = 1.0             # the checkerboard's std (images in [-1, 1]: 0.5)
  sampling = config.sampling
  sampling.method = "consistency"
  sampling.steps = 1
  return config
