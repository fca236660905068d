"""EDM2-S on class-conditional ImageNet-64 (Karras et al. 2024, "Analyzing and improving the training dynamics of
diffusion models"): the magnitude-preserving U-Net (config G; 280M parameters, the paper's table), the EDM
objective with the learned loss weighting, the inverse square-root learning rate, and the post-hoc EMA.

The images come from a folder or zip with EDM's dataset.json labels (EDM's dataset_tool output for
ImageNet-64, e.g. `imagenet-64x64.zip`):

  python main.py --config=configs/edm2/imagenet64_s.py --workdir=runs/edm2_img64_s --mode=train \
    --config.data.path=data/imagenet-64x64.zip

Hyperparameters as we read the paper's ImageNet-64 settings (check them against its tables before a
paper-scale run): batch 2048, Adam (0.9, 0.99) at reference rate 0.010 from t_ref = 35000 steps with a
10 Mimg ramp-up, ln sigma ~ N(-0.8, 1.6^2), sigma_data 0.5, no dropout for S, post-hoc EMA profiles of
relative width 0.05 and 0.10. Sample with autoguidance (`sampling.guidance_workdir`: a smaller model or a
shorter-trained checkpoint of this one; `sampling.guidance_step`) or classifier-free guidance
(`training.class_dropout` > 0). Left out: EDM2's exact EMA snapshot cadence and its stochastic sampler's
settings.
"""

from configs.folder.default import get_config as folder

BATCH = 2048
MIMG = 1_000_000 // BATCH  # steps per million images


def get_config():
  config = folder()
  training = config.training
  training.objective = "edm"
  training.loss_weighting = "uncertainty"    # EDM2's learned weighting
  training.edm_p_mean = -0.8
  training.edm_p_std = 1.6
  training.batch_size = BATCH
  training.n_iters = 2000 * MIMG             # ~2 Gimg
  training.snapshot_freq = 5000             # ~10 Mimg
  training.ema_snapshot_freq = 5000
  training.snapshot_freq_for_preemption = 1000
  training.eval_freq = 1000

  data = config.data
  data.dataset = "folder"
  data.image_size = 64
  data.labels_from = "dataset_json"
  data.random_flip = False                   # EDM2 trains ImageNet without x-flips

  model = config.model
  model.name = "edm2"
  model.parameterization = "edm"
  model.sigma_data = 0.5
  model.num_classes = 1000
  model.nf = 192
  model.ch_mult = (1, 2, 3, 4)
  model.num_res_blocks = 3
  model.attn_resolutions = (16, 8)
  model.dropout = 0.0
  model.ema_type = "power"                   # EDM2's post-hoc EMA
  model.ema_sigma_rels = (0.05, 0.10)

  optim = config.optim
  optim.lr = 0.010
  optim.beta2 = 0.99
  optim.schedule = "inverse_sqrt"
  optim.ref_steps = 35_000
  optim.warmup = 10 * MIMG
  optim.grad_clip = -1.0
  return config
