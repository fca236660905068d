"""The base configuration: every key of a run with its default and a one-line comment, in one place.

The values are the reference's CIFAR-10 defaults (its `configs/default_cifar10_configs.py`; the model
section holds the NCSN++ VE continuous architecture). The repository's base configs
(`configs/default_cifar10_configs.py`, `configs/toy/default.py`) extend it and experiment files only
override; it ships inside the package so that library code (`score_jax.diffusers_format`, the typed
settings' defaults) can read it wherever score_jax is installed. `complete(config)` fills the keys a
config lacks (a `config.json` of an older run, a hand-written config) from here, so library code reads
`config.<section>.<key>` directly and each default is written once.
"""

import ml_collections
from ml_collections.config_dict import placeholder


def get_config():
  """Every key with its default (a fresh, unlocked `ConfigDict`)."""
  config = ml_collections.ConfigDict()

  config.training = training = ml_collections.ConfigDict()
  training.sde = "vesde"                    # vpsde | subvpsde | vesde | learned_vpsde (VDM) | rectified_flow | cosine
  training.continuous = True                # continuous-time DSM loss (False: SMLD/DDPM discrete losses)
  training.likelihood_weighting = False     # weight the DSM loss by g(t)^2 (Song et al. 2021b)
  training.objective = "dsm"                # dsm | edm | vdm | ssm | consistency_training | consistency_distillation | scm | meanflow | reflow | autoencoder
  training.importance_sampling = False      # importance-sampled t for likelihood_weighting (Song et al. 2021b)
  training.edm_p_mean = -1.2                # edm objective: ln(sigma) ~ N(P_mean, P_std^2) (Karras et al. 2022)
  training.edm_p_std = 1.2
  training.ssm_projection = "rademacher"    # ssm objective: rademacher | gaussian projections
  training.reconstruction_loss = "mse"      # autoencoder objective: mse | l1, per pixel value (no GAN, no LPIPS)
  training.kl_weight = 1e-3                 # autoencoder objective: weight of KL(q(z | x) || N(0, I)) per pixel value
  training.consistency_schedule = "ict"     # consistency_training: ict (10 -> 1280 levels over training) | ect (r(t))
  training.consistency_loss = ""            # consistency distance: pseudo_huber | l2; "": l2 for distillation, else pseudo_huber
  training.consistency_target_ema = 0.0     # consistency_distillation: target EMA mu (0: current weights; 0.95 ImageNet)
  training.init_from_teacher = True         # consistency_distillation: start from the teacher's weights when they fit
  training.init_workdir = ""                # start from the EMA weights of this trained run (ECT's tuning); "": none
  training.teacher_workdir = ""             # consistency_distillation, reflow, scm (then distillation): the teacher's workdir
  training.teacher_solver = "heun"          # consistency_distillation, reflow: the teacher's ODE step, euler | heun
  training.teacher_steps = 18               # the teacher's grid: distillation's levels, reflow's ODE (Karras rho = 7)
  training.scm_warmup_steps = 10000         # scm: steps over which the tangent's second term ramps up (Lu & Song 2025)
  training.meanflow_form = "original"       # meanflow: original | improved (the jvp's tangent: the model's own velocity)
  training.meanflow_r_equals_t = 0.75       # meanflow: share of examples with r = t; logit(t) ~ N(edm_p_mean, edm_p_std^2)
  training.meanflow_weight_power = 1.0      # meanflow: p of the adaptive weighting loss / sg(loss + 0.01)^p
  training.meanflow_guidance_scale = 0.0    # meanflow: classifier-free guidance w folded into the target (conditional)
  training.meanflow_guidance_mix = 0.0      # meanflow: kappa, the model's own conditional velocity's share of the target
  training.loss_weighting = "none"          # none | uncertainty: the learned per-noise-level weighting L / exp(u) + u
  training.class_dropout = 0.0              # class-conditional models: probability of the null class (CFG: 0.1-0.2)
  training.ema_snapshot_freq = 50000               # model.ema_type=power: steps between stored EMA snapshots
  training.reduce_mean = False              # per-sample mean over dims (False: 0.5 * sum, as the reference)
  training.repa_weight = 0.0                # REPA (Yu et al. 2025): lambda of -cos(projected tokens, encoder features); 0 = off
  training.repa_depth = 1                   # REPA: the block (1-based) whose output tokens are aligned (model.name = dit)
  training.repa_hidden = 2048               # REPA: hidden width of the 3-layer SiLU projector MLP (the paper's 2048)
  training.repa_encoder = "digits"          # REPA: the frozen feature encoder, digits | inception (score_jax.feature_encoders)
  training.batch_size = 128                 # global batch size, split over all devices
  training.n_iters = 1300001                # number of optimisation steps
  training.n_jitted_steps = 5               # optimisation steps per device dispatch (lax.scan)
  training.log_freq = 50                    # steps between loss logs
  training.eval_freq = 100                  # steps between held-out loss evaluations
  training.snapshot_freq = 50000            # steps between kept checkpoints (+ snapshot samples)
  training.snapshot_freq_for_preemption = 10000  # steps between preemption checkpoints
  training.snapshot_sampling = True         # draw samples at every snapshot
  training.keep_checkpoints = 0             # snapshot checkpoints kept (0 keeps all, as the reference)
  training.eps = 1e-5                       # smallest diffusion time of the loss (the reference's constant)
  training.step_loop = "auto"               # auto | scan | dispatch: how a block of n_jitted_steps runs
  training.fsdp = 1                         # mesh axis the train state is sharded over (FSDP); 1 = data parallel
  training.async_checkpoint = False         # write checkpoints in the background (orbax async); the step goes on

  config.sampling = sampling = ml_collections.ConfigDict()
  sampling.method = "pc"                    # pc | ode | ddim | dpm_solver | heun | adaptive_sde | consistency | flow_map
  sampling.predictor = "reverse_diffusion"  # euler_maruyama | reverse_diffusion | ancestral_sampling | none
  sampling.corrector = "langevin"           # langevin | ald | none
  sampling.n_steps_each = 1                 # corrector steps per predictor step
  sampling.noise_removal = True             # return the last predictor step's mean
  sampling.probability_flow = False         # predictor on the probability-flow ODE
  sampling.snr = 0.16                       # Langevin signal-to-noise ratio
  sampling.batch_size = 128                 # samples per snapshot (the reference uses training.batch_size)
  sampling.rtol = 1e-5                      # ODE sampler tolerances (the reference's fixed values)
  sampling.atol = 1e-5
  add_sampler_options(sampling)             # fast-sampler options, the Langevin norm, guidance (below)

  config.eval = evaluate = ml_collections.ConfigDict()
  evaluate.begin_ckpt = 9                   # first snapshot checkpoint to evaluate
  evaluate.end_ckpt = 26                    # last snapshot checkpoint to evaluate
  evaluate.checkpoint_timeout = 0          # seconds to wait for a checkpoint not yet written (training alongside)
  evaluate.batch_size = 1024                # evaluation batch size
  evaluate.enable_sampling = False          # draw samples for FID / IS / KID
  evaluate.num_samples = 50000              # samples per checkpoint
  evaluate.enable_loss = True               # held-out DSM loss
  evaluate.enable_bpd = False               # negative log-likelihood through the probability-flow ODE
  evaluate.bpd_dataset = "test"             # train | test
  evaluate.bpd_num_repeats = 5              # likelihood estimates averaged per example (fresh noise each)
  evaluate.hutchinson = "rademacher"        # divergence: rademacher | gaussian | exact (small dims only)
  evaluate.enable_elbo = False              # report the ELBO for any model (always for vdm / likelihood weighting)
  evaluate.elbo_num_times = 16              # time draws per example of the ELBO (vdm, likelihood weighting)
  evaluate.enable_fid = True                # FID / KID / Inception score of the samples (needs --mode=fid_stats)
  evaluate.stats_path = ""                  # data statistics file (default <workdir>/stats/<dataset>_<size>_stats.npz)
  evaluate.inception_path = ""              # local pt_inception-2015-12-05 .pth (else downloaded once and cached)
  evaluate.inception_url = ""               # download address of those weights (default: the pytorch-fid release)
  evaluate.inception_cache_dir = ""         # download cache (default ~/.cache/score_jax)
  evaluate.num_eval_batches = 0             # held-out batches for the eval loss (0: the whole split, as the reference)

  config.data = data = ml_collections.ConfigDict()
  data.dataset = "CIFAR10"                  # CIFAR10 | SVHN | MNIST | CELEBA | LSUN | FFHQ | CelebAHQ | digits | folder
  data.image_size = 32                      # images are image_size x image_size x num_channels
  data.num_channels = 3                     # colour channels
  data.random_flip = True                   # random horizontal flips for training
  data.uniform_dequantization = False       # add U[0, 1/256) noise to pixel values
  data.centered = False                     # data in [-1, 1] (False: [0, 1], which the reference parameterization maps to 2x - 1)
  data.num_eval = 10000                     # size of the held-out split
  data.dim = placeholder(int)               # flat data (the 2-D toys): dimension of one example; None: images
  data.category = ""                        # LSUN category (bedroom, church_outdoor)
  data.tfrecords_path = ""                  # FFHQ / CelebAHQ tfrecords file (set to your local copy)
  data.path = ""                            # folder: a folder (recursive) or .zip of PNG / JPEG / WebP images
  data.eval_path = ""                       # folder: held-out images (else data.num_eval set aside from data.path)
  data.labels_from = "none"                 # folder labels: none | dataset_json (EDM's dataset.json) | subfolders
  data.download = True                      # TFDS sets: prepare a missing one on first use (process 0; others wait)
  # Latent data (docs/latent.md#latent-data): train, sample and evaluate in an autoencoder's latent space.
  data.autoencoder = ""                     # diffusers AutoencoderKL folder or score_jax autoencoder workdir; "": pixels
  data.latent_cache = ""                    # encoded moments (default $SCORE_JAX_LATENT_CACHE or ~/.cache/score_jax/latents/<dataset>_<size>_<hash>)
  data.latent_norm = "scaling"              # scaling: (z - shift_factor) * scaling_factor | channels: (z - latent_mean) / latent_std * latent_target_std
  data.latent_mean = ()                     # channels: per-channel mean (EDM2, sd-vae-ft-mse: 5.81, 3.25, 0.12, -2.15)
  data.latent_std = ()                      # channels: per-channel std (EDM2, sd-vae-ft-mse: 4.17, 4.62, 3.71, 3.28)
  data.latent_target_std = 0.5              # channels: the std of the normalised latents (EDM2: 0.5)
  data.autoencoder_batch_size = 64          # images per jitted encode call, latents per decode step of the samples
  data.latent_channels = 0                  # recorded from data.autoencoder when the config is prepared (a config may state it: SD VAE 4)
  data.latent_factor = 0                    # recorded likewise: the autoencoder's downsampling factor (SD VAE 8)

  config.model = model = ml_collections.ConfigDict()
  model.name = "ncsnpp"                     # ncsnpp (NCSN++ / DDPM++) | ddpm | ncsn | ncsnv2_64 | ncsnv2_128 | ncsnv2_256 | edm2 | dit
  model.ema_rate = 0.999                    # EMA decay of the parameters used for sampling/eval
  model.sigma_min = 0.01                    # VE noise range
  model.sigma_max = 50.0
  model.num_scales = 1000                   # N: discretisation steps of the SDE and samplers
  model.beta_min = 0.1                      # VP / sub-VP beta range
  model.beta_max = 20.0
  model.dropout = 0.1                       # dropout inside residual blocks
  model.scale_by_sigma = True               # divide the output by sigma (VE; reference parameterization)
  model.parameterization = "reference"      # what the network predicts: reference | eps | x0 | v | flow | average_velocity | edm
  model.sigma_data = 0.5                    # data std of the edm parameterization (Karras et al. 2022)
  model.gamma_min = -13.3                   # learned_vpsde: initial gamma(0) = -log SNR(0) (Kingma et al. 2021)
  model.gamma_max = 5.0                     # learned_vpsde: initial gamma(1)
  model.schedule_features = 1024            # learned_vpsde: width of the monotone schedule network
  model.dtype = "float32"                   # compute dtype of the network; parameters stay float32
  model.remat = False                       # ncsnpp / ddpm / edm2 / dit: gradient checkpointing of the blocks
  model.num_classes = 0                     # class-conditional network (0: unconditional), one extra null class
  model.ema_type = "fixed"                  # fixed (decay model.ema_rate) | power (EDM2's post-hoc EMA)
  model.ema_sigma_rels = (0.05, 0.1)        # ema_type=power: the tracked profiles' relative widths (EDM2)
  model.normalization = "GroupNorm"         # GroupNorm (DDPM, NCSN++) | InstanceNorm++ (NCSN, NCSNv2)
  model.nonlinearity = "swish"              # swish | elu | relu | lrelu
  model.nf = 128                            # base channel count
  model.ch_mult = (1, 2, 2, 2)              # channel multiplier per resolution
  model.num_res_blocks = 4                  # residual blocks per resolution
  model.attn_resolutions = (16,)            # resolutions with self-attention
  model.attn_per_up_resnet = False          # ddpm: attention after every up resnet (diffusers' DDPM checkpoints)
  model.resamp_with_conv = True             # convolve when resampling between resolutions
  model.conditional = True                  # condition on the time / noise level
  model.fir = True                          # FIR (StyleGAN2) resampling instead of naive
  model.fir_kernel = (1, 3, 3, 1)           # FIR taps
  model.skip_rescale = True                 # divide residual sums by sqrt(2)
  model.resblock_type = "biggan"            # biggan | ddpm
  model.progressive = "none"                # output pyramid: none | output_skip | residual
  model.progressive_input = "residual"      # input pyramid: none | input_skip | residual
  model.progressive_combine = "sum"         # merging the input pyramid: sum | cat
  model.init_scale = 0.0                    # scale of "zero" initialised layers (0 means 1e-10, as the reference)
  model.embedding_type = "fourier"          # fourier (of log sigma; continuous only) | positional
  model.fourier_scale = 16.0                # std of the Fourier features' frequencies
  model.embedding_dim = 128                 # time-embedding size of the `mlp` model (image networks use nf)
  model.input_frequencies = 0               # `mlp` model: Fourier features sin/cos(pi 2^k x), k < this, of the input
  model.interpolation = "bilinear"          # NCSN/NCSNv2 multi-scale fusion upsampling: bilinear | nearest_neighbor
  # dit (Peebles & Xie 2023; score_jax.networks.dit): the defaults are DiT-S/2, `dit.dit_size("XL/2")` the others.
  model.patch_size = 2                      # dit: patch side p (tokens: (H / p) (W / p))
  model.hidden_size = 384                   # dit: token width D
  model.depth = 12                          # dit: adaLN-Zero transformer blocks
  model.num_heads = 6                       # dit: attention heads (D / num_heads channels each)
  model.mlp_ratio = 4.0                     # dit: MLP width / D
  model.learn_sigma = False                 # dit: 2C output channels (DiT's learned variance), the last C dropped
  model.attention = "xla"                   # dit: xla | cudnn (bf16 / fp16 GPU kernel, not under jax.jvp) | chunked
  model.attention_block = 512               # dit, attention=chunked: queries per block (memory O(N * block))
  model.time_freq_shift = 0.0               # dit: timestep frequencies 10000^(-i / (128 - shift)) (diffusers' DiT: 1)
  model.mlp_norm_eps = 1e-6                 # dit: epsilon of the layer norm before the MLP (diffusers' DiT: 1e-5)
  # autoencoder_kl (training.objective = "autoencoder"; diffusers' AutoencoderKL layout, docs/latent.md).
  model.ae_channels = (32, 64)              # autoencoder_kl: channels per level (block_out_channels), 2x down between
  model.ae_layers_per_block = 1             # autoencoder_kl: resnets per encoder level (the decoder: one more)
  model.latent_channels = 4                 # autoencoder_kl: channels of the latents
  model.ae_norm_groups = 8                  # autoencoder_kl: GroupNorm groups (divides every ae_channels entry)
  model.ae_attention = True                 # autoencoder_kl: self-attention in the mid blocks

  config.optim = optim = ml_collections.ConfigDict()
  optim.optimizer = "Adam"                  # Adam (the only optimizer of the reference)
  optim.lr = 2e-4                           # peak learning rate
  optim.beta1 = 0.9                         # Adam beta1
  optim.beta2 = 0.999                       # Adam beta2 (EDM2 and sCM: 0.99)
  optim.eps = 1e-8                          # Adam epsilon
  optim.weight_decay = 0.0                  # decoupled weight decay
  optim.warmup = 5000                       # linear warm-up steps (the first update has lr 0, as the reference)
  optim.schedule = "constant"               # after warm-up: constant (the reference) | cosine (decay to 0 at n_iters) | inverse_sqrt (EDM2)
  optim.ref_steps = 70000                   # inverse_sqrt: lr / sqrt(max(step / ref_steps, 1)) (EDM2's t_ref)
  optim.grad_clip = 1.0                     # global-norm clipping (< 0 disables)

  config.seed = 42
  return config


def complete(config):
  """`config` with every key of the base it lacks added at its default (a new, unlocked `ConfigDict`).

  Sections and keys the base does not know (e.g. `classifier`) are kept as they are.
  """
  merged = get_config()
  _merge(merged, config)
  return merged


def _merge(base, extra):
  for key, value in extra.items():
    if isinstance(value, ml_collections.ConfigDict) and key in base and isinstance(base[key], ml_collections.ConfigDict):
      _merge(base[key], value)
    elif key in base:
      with base.ignore_type():
        base[key] = value
    else:
      base[key] = value


def add_sampler_options(sampling):
  """Adds the fast samplers' options, the Langevin norm and the guidance keys to a `config.sampling` section."""
  # Fast samplers (sampling.method ddim | dpm_solver | heun | adaptive_sde); unset = the method's default.
  sampling.steps = placeholder(int)         # time steps (ddim 50, dpm_solver 20, heun 18, consistency 1)
  sampling.consistency_times = ()           # consistency: the steps - 1 intermediate times; (): a log-SNR grid
  sampling.consistency_grid = placeholder(int)  # consistency: snap those to this many Karras levels (unset: CD's teacher_steps)
  sampling.order = placeholder(int)         # dpm_solver order: 1, 2, 3 (multistep) or 1, 2 (singlestep)
  sampling.solver_type = placeholder(str)   # dpm_solver: multistep | singlestep
  sampling.schedule = placeholder(str)      # time grid: logsnr | time_uniform | time_quadratic
  sampling.lower_order_final = placeholder(bool) # dpm_solver: lower orders in the last steps (below 10 steps)
  sampling.eta = placeholder(float)         # ddim stochasticity (0: deterministic)
  sampling.rho = placeholder(float)         # heun: Karras et al.'s schedule exponent (7)
  sampling.S_churn = placeholder(float)     # heun Algorithm 2 (0: deterministic Algorithm 1)
  sampling.S_tmin = placeholder(float)
  sampling.S_tmax = placeholder(float)
  sampling.S_noise = placeholder(float)
  sampling.eps_abs = placeholder(float)     # adaptive_sde tolerances (Jolicoeur-Martineau et al. 2021)
  sampling.eps_rel = placeholder(float)
  sampling.theta = placeholder(float)       # adaptive_sde safety factor
  sampling.r = placeholder(float)           # adaptive_sde step-size exponent
  sampling.h_init = placeholder(float)      # adaptive_sde first step
  sampling.step_size = placeholder(str)     # adaptive_sde: batch | sample
  sampling.max_steps = placeholder(int)     # ode / adaptive_sde step limit
  sampling.langevin_norm = "batch"          # Langevin norms: batch (reference) | sample
  # Guidance, every sampler: classifier-free (a class-conditional model, model.num_classes > 0, guided by its own
  # null class) or autoguidance (any model guided by a second trained run, sampling.guidance_workdir).
  sampling.guidance_scale = 0.0             # w: (1 + w) D(x, c) - w D_guide; D_guide = D(x, null) without a workdir
  sampling.guidance_interval = ()           # (low, high): guide only at noise levels sigma in (low, high]; (): all
  sampling.guidance_workdir = ""            # autoguidance: the guiding run's workdir (smaller / shorter trained)
  sampling.guidance_step = 0                # its checkpoint (0: the newest)


BASE = get_config()  # read only: the defaults of the typed settings
