"""A tiny noise-conditional WideResNet (WRN-10-1) on the embedded digits, for class-conditional digits.

The data and SDE are those of `configs/digits.py` (VP SDE, 16 px, centred), so a score model trained with
that config and this classifier sample together from one workdir:

  python main.py --config=configs/digits.py --workdir=runs/digits                     # the score model
  python main.py --config=configs/classifier/digits.py --workdir=runs/digits --mode=train_classifier
  python main.py --config=configs/classifier/digits.py --workdir=runs/digits --mode=conditional --labels=0,1,2,3

Measured on 2 CPU cores (shared with other jobs, load ~6): 600 steps in 3 min wall, 68 s of CPU time
(~1-1.5 min on an idle 2-core machine); 90,634 weights. Held-out accuracy at step 600 by t bin:
[0.00, 0.20] 88.9%, [0.20, 0.40] 68.8%, [0.40, 0.60] 33.7%, [0.60, 0.80] 14.2%, [0.80, 1.00] 10.4% (chance 10%:
at t > 0.6 the VP noise level std/m exceeds 6 and the digit is gone).
"""

from configs.digits import get_config as get_digits_config


def get_config():
  config = get_digits_config()
  classifier = config.classifier
  classifier.blocks_per_group = 1           # WRN-10
  classifier.channel_multiplier = 1         # 16, 32, 64 channels at 16, 8, 4 px
  classifier.embedding_size = 32
  classifier.temb_dim = 64
  classifier.batch_size = 64
  classifier.n_iters = 600
  classifier.log_freq = 50
  classifier.eval_freq = 300
  classifier.checkpoint_freq = 300
  classifier.optim.lr = 2e-3
  classifier.optim.warmup = 50
  return config
