"""One's own images: DDPM++ trained with the EDM objective on a folder or zip (`data.path`), 32 px.

A starting point, not a tuned recipe: EDM's CIFAR-10 config F (configs/edm/cifar10_ddpmpp.py: log-normal
noise levels, EDM preconditioning, Heun sampling with 35 network evaluations) at a batch that fits one
accelerator. Set the data and go:

  python main.py --config=configs/folder/default.py --workdir=runs/mine --mode=train \
    --config.data.path=/data/my_images

- 64 px: `--config.data.image_size=64`; the same network then runs at 64, 32 and 16 px with
  attention at 16 px (add `--config.model.ch_mult='(1, 2, 2, 2)'` for one more resolution).
- Greyscale images: `--config.data.num_channels=1`.
- Labels (class-conditional model, classifier-free guidance): `--config.data.labels_from=subfolders`
  (one folder per class) or `dataset_json` (EDM's dataset.json), and `--config.model.num_classes=K`
  with `--config.training.class_dropout=0.1`.
- Held-out images: `data.eval_path`, else `data.num_eval` of `data.path` (a fixed permutation).
- Small data sets overfit: EDM trained CIFAR-10 (50k images) with augmentation, which score_jax does
  not build; keep an eye on the held-out loss (`eval_loss`).
"""

from configs.edm.cifar10_ddpmpp import get_config as edm_config

BATCH = 128
MIMG = 1_000_000 // BATCH  # steps per million images


def get_config():
  config = edm_config()

  training = config.training
  training.batch_size = BATCH
  training.n_iters = 50 * MIMG               # 50 Mimg; watch the samples in <workdir>/samples
  training.snapshot_freq = 2 * MIMG
  training.snapshot_freq_for_preemption = MIMG // 4
  training.eval_freq = MIMG // 4

  data = config.data
  data.dataset = "folder"
  data.path = ""                             # set: --config.data.path=/data/my_images (or a .zip)
  data.image_size = 32
  data.num_channels = 3
  data.num_eval = 1000                       # held out from data.path when data.eval_path is empty
  data.random_flip = True

  evaluate = config.eval
  evaluate.num_samples = 10000
  evaluate.enable_fid = False                # FID against one's own images: --mode=fid (docs/data_and_evaluation.md)

  model = config.model
  model.ema_rate = 0.5 ** (1.0 / (0.5 * MIMG))  # EMA half-life 0.5 Mimg
  model.dropout = 0.1

  optim = config.optim
  optim.lr = 1e-3
  optim.warmup = 10 * MIMG // 5             # learning-rate ramp-up over 2 Mimg
  return config
