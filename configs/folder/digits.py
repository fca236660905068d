"""The own-data quickstart: the digits quickstart (configs/digits.py) read from a folder of PNGs.

Writes nothing itself; first put the shipped digits on disk as one's own images would be (one folder
per class), then train, sample and measure:

  python -c "from score_jax import toy_data; toy_data.save_digits_folder('data/digits')"
  python main.py --config=configs/folder/digits.py --workdir=runs/mine --mode=train
  python main.py --config=configs/folder/digits.py --workdir=runs/mine --mode=sample --seeds=0-295 --out=runs/mine/seeds
  python main.py --mode=fid --samples=runs/mine/seeds --ref=data/digits/held_out --features=digits

Replace the paths by your own folder or zip (and `data.image_size`, `data.num_channels`) to train on it.
"""

from configs import digits


def get_config():
  config = digits.get_config()
  data = config.data
  data.dataset = "folder"
  data.path = "data/digits/train"           # a folder (searched recursively) or a .zip of PNG / JPEG / WebP
  data.eval_path = "data/digits/held_out"   # held-out images (else data.num_eval of data.path)
  data.labels_from = "subfolders"           # one folder per class (used when model.num_classes > 0)
  return config
