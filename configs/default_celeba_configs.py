"""Base config for CelebA (64 px): the CIFAR-10 base with the reference's CelebA values."""

from configs import default_cifar10_configs


def get_default_configs():
  config = default_cifar10_configs.get_default_configs()
  config.sampling.snr = 0.17                # Langevin signal-to-noise ratio
  config.eval.begin_ckpt = 1                # first snapshot checkpoint to evaluate
  config.eval.end_ckpt = 26                 # last snapshot checkpoint to evaluate
  config.eval.enable_sampling = True        # draw samples for FID / IS / KID
  config.data.dataset = "CELEBA"            # 64 x 64 centre crops
  config.data.image_size = 64
  config.data.num_eval = 19962              # size of the test split
  config.model.sigma_max = 90.0             # VE noise range top
  return config
