"""The reference's classifier: a noise-conditional WRN-28-10 on CIFAR-10 under the VE SDE (38,913,242 weights).

Song et al. 2021 (Section 5, Appendix I.1) guide the NCSN++ (VE, continuous) model with this network;
the reference's `models/wideresnet_noise_conditional.py` defines it: per-image
standardisation of the input, 128 Fourier features (scale 16) of log sigma -> Dense(512) -> swish ->
Dense(512) added in every block, groups of 160, 320 and 640 channels, GroupNorm + ReLU. Its noise input
is sigma(t) = marginal std of the VE SDE (sigma_min 0.01, sigma_max 50), as here. The reference shipped
neither the training code nor the weights: the batch, steps and optimiser below are ours (Adam 2e-4,
1000 warm-up steps, clipping 1.0, batch 128, 100k steps, random flips), not the paper's.

  python main.py --config=configs/classifier/cifar10_wrn.py --workdir=runs/ve_cifar10 --mode=train_classifier
  python main.py --config=configs/classifier/cifar10_wrn.py --workdir=runs/ve_cifar10 --mode=conditional \
      --labels=0,1,2,3,4,5,6,7,8,9
"""

from configs.ve.cifar10_ncsnpp_continuous import get_config as get_score_config


def get_config():
  config = get_score_config()             # the score model this classifier guides (same SDE and data)
  config.classifier.blocks_per_group = 4    # WRN-28
  config.classifier.channel_multiplier = 10  # -10
  return config
