"""The autoguidance guide of configs/edm2/digits.py: the same network at half the width with one block per level
(45k parameters), trained a quarter as long (EDM2's recipe for a guide: smaller and shorter trained).

  python main.py --config=configs/edm2/digits_guide.py --workdir=runs/edm2_digits_guide --mode=train
"""

from configs.edm2.digits import get_config as edm2_digits


def get_config():
  config = edm2_digits()
  config.model.nf = 8
  config.model.num_res_blocks = 1
  config.training.n_iters = config.training.n_iters // 4
  return config
