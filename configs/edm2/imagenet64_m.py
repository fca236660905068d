"""EDM2-M on class-conditional ImageNet-64: configs/edm2/imagenet64_s.py at 256 channels (498M parameters, the
paper's table), reference learning rate 0.009, dropout 0.10 (as we read the paper's settings).

  python main.py --config=configs/edm2/imagenet64_m.py --workdir=runs/edm2_img64_m --mode=train \
    --config.data.path=data/imagenet-64x64.zip
"""

from configs.edm2.imagenet64_s import get_config as edm2_s


def get_config():
  config = edm2_s()
  config.model.nf = 256
  config.model.dropout = 0.10
  config.optim.lr = 0.009
  return config
