"""Base config for the 2-D toy datasets: the package's base configuration (`score_jax/base_config.py`,
every key with a one-line comment) with the toy recipe's values.

Experiment files (`checkerboard.py`, ...) only override. The image-network keys of the base stay
present and unused by the `mlp` model.
"""

from score_jax import base_config


def get_default_configs():
  config = base_config.get_config()

  training = config.training
  training.sde = "vpsde"
  training.reduce_mean = True
  training.batch_size = 512
  training.n_iters = 6000
  training.n_jitted_steps = 50
  training.log_freq = 500
  training.eval_freq = 1000
  training.snapshot_freq = 3000
  training.snapshot_freq_for_preemption = 500
  training.keep_checkpoints = 5
  training.ema_snapshot_freq = 500

  config.sampling.batch_size = 2048          # samples per snapshot plot

  evaluate = config.eval
  evaluate.begin_ckpt = 1
  evaluate.end_ckpt = 2
  evaluate.enable_sampling = True            # draw samples (and plot them)
  evaluate.num_samples = 2048
  evaluate.enable_bpd = True
  evaluate.bpd_num_repeats = 1
  evaluate.hutchinson = "exact"              # exact divergence: 2-D
  evaluate.num_eval_batches = 4

  data = config.data
  data.dataset = "checkerboard"              # checkerboard | moons | 8gaussians | swissroll
  data.dim = 2
  data.num_eval = 4096                       # size of the fixed held-out set
  data.centered = True                       # data already lives around 0 (no [0,1] -> [-1,1] scaling)

  model = config.model
  model.name = "mlp"
  model.nf = 128                             # hidden width
  model.num_res_blocks = 3                   # residual MLP blocks
  model.embedding_type = "positional"        # positional (VP labels t*999) | fourier (VE labels sigma)
  model.embedding_dim = 64
  model.scale_by_sigma = False
  model.dropout = 0.0
  model.input_frequencies = 4                # Fourier features sin/cos(pi 2^k x), k < 4, of the input
  model.ema_rate = 0.99
  model.sigma_max = 4.0

  optim = config.optim
  optim.lr = 2e-3
  optim.warmup = 200
  optim.schedule = "cosine"                  # decay to 0 at n_iters
  return config
