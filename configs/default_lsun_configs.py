"""Base config for 256 px data (LSUN, and FFHQ / CelebAHQ at 256 px): the CIFAR-10 base with the reference's LSUN values."""

from configs import default_cifar10_configs


def get_default_configs():
  config = default_cifar10_configs.get_default_configs()
  config.training.batch_size = 64           # global batch size
  config.training.n_iters = 2400001         # number of optimisation steps
  config.training.snapshot_freq_for_preemption = 5000  # steps between preemption checkpoints
  config.sampling.snr = 0.075               # Langevin signal-to-noise ratio
  config.sampling.batch_size = 64           # samples per snapshot (= training.batch_size)
  config.eval.begin_ckpt = 50               # first snapshot checkpoint to evaluate
  config.eval.end_ckpt = 96                 # last snapshot checkpoint to evaluate
  config.eval.batch_size = 512              # evaluation batch size
  config.eval.enable_sampling = True        # draw samples for FID / IS / KID
  config.data.dataset = "LSUN"              # LSUN | FFHQ | CelebAHQ
  config.data.image_size = 256
  config.data.num_eval = 300                # size of an LSUN category's validation split
  config.data.category = "bedroom"          # LSUN category: bedroom | church_outdoor
  config.model.sigma_max = 378.0            # VE noise range top
  config.model.num_scales = 2000            # N
  config.model.dropout = 0.0                # no dropout at 256 px
  return config
