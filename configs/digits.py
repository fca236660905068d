"""DDPM++ (VP SDE, continuous) on the embedded 8x8 digits at 16 px: a real image run on a laptop CPU.

Needs no download (the digits ship in `score_jax/assets/`). The CIFAR-10 base holds every
key; this file overrides what differs. Sized for about ten minutes on 2 CPU cores: one
step of batch 64, jitted on its own, took 0.35 s there (plus ~1 min of compilation):

  python main.py --config=configs/digits.py --workdir=runs/digits
"""

from configs.default_cifar10_configs import get_default_configs


def get_config():
  config = get_default_configs()

  training = config.training
  training.sde = "vpsde"
  training.continuous = True
  training.reduce_mean = True
  training.batch_size = 64
  training.n_iters = 1500
  training.n_jitted_steps = 5                # CPU dispatches image steps one by one (training.step_loop)
  training.log_freq = 50
  training.eval_freq = 250
  training.snapshot_freq = 750
  training.snapshot_freq_for_preemption = 250
  training.keep_checkpoints = 2

  sampling = config.sampling
  sampling.method = "pc"
  sampling.predictor = "euler_maruyama"
  sampling.corrector = "none"
  sampling.batch_size = 36                  # a 6 x 6 grid per snapshot

  evaluate = config.eval
  evaluate.begin_ckpt = 1
  evaluate.end_ckpt = 2
  evaluate.batch_size = 96                  # 3 held-out batches of the 297 test digits (the last 9 dropped)
  evaluate.enable_sampling = True
  evaluate.num_samples = 96
  evaluate.enable_fid = False               # Inception features of 16 px digits are not meaningful offline

  data = config.data
  data.dataset = "digits"
  data.image_size = 16                      # 8x8 digits upsampled bilinearly
  data.num_channels = 1
  data.random_flip = False                  # digits are not mirror-symmetric
  data.centered = True
  data.num_eval = 297

  model = config.model
  model.name = "ncsnpp"                     # DDPM++: no FIR, no input pyramid, positional embedding
  model.fir = False
  model.progressive_input = "none"
  model.embedding_type = "positional"
  model.scale_by_sigma = False
  model.ema_rate = 0.995                    # a short run: average over the last ~200 steps
  model.num_scales = 250                    # sampling steps (training is continuous in t)
  model.nf = 16
  model.ch_mult = (1, 2, 2)                 # 16, 8, 4 px
  model.num_res_blocks = 1
  model.attn_resolutions = (8,)
  model.dropout = 0.0

  optim = config.optim
  optim.lr = 1e-3
  optim.warmup = 100
  return config
