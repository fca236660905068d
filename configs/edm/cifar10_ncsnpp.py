"""EDM (Karras et al. 2022) config F on CIFAR-10, NCSN++ network (its "VE" architecture).

As configs/edm/cifar10_ddpmpp.py (same objective, preconditioning, schedule, sampler and Table 7
hyperparameters, the augmentation pipeline likewise left out), with score_jax's NCSN++: Fourier
embedding of the noise level, FIR resampling, the residual input pyramid.
"""

from configs.edm import cifar10_ddpmpp


def get_config():
  config = cifar10_ddpmpp.get_config()
  model = config.model
  model.fir = True
  model.fir_kernel = (1, 3, 3, 1)
  model.progressive_input = "residual"
  model.embedding_type = "fourier"           # of c_noise = ln(sigma) / 4 under the edm parameterization
  return config
