"""Base config for the 2-D toy datasets: every key, with a one-line comment.

Experiment files (`checkerboard.py`, ...) only override. Key names follow the
reference's configs so that its users feel at home.
"""

import ml_collections
from configs.sampler_options import add_sampler_options


def get_default_configs():
  config = ml_collections.ConfigDict()

  config.training = training = ml_collections.ConfigDict()
  training.sde = "vpsde"                    # vpsde | subvpsde | vesde | learned_vpsde (VDM)
  training.continuous = True                # continuous-time DSM loss (False: SMLD/DDPM discrete losses)
  training.likelihood_weighting = False     # weight the DSM loss by g(t)^2 (Song et al. 2021b)
  training.objective = "dsm"                # dsm | edm | vdm | ssm (score_jax.losses)
  training.importance_sampling = False      # importance-sampled t for likelihood_weighting (Song et al. 2021b)
  training.edm_p_mean = -1.2                # edm objective: ln(sigma) ~ N(P_mean, P_std^2) (Karras et al. 2022)
  training.edm_p_std = 1.2
  training.ssm_projection = "rademacher"    # ssm objective: rademacher | gaussian projections
  training.class_dropout = 0.0              # class-conditional models: probability of the null class (CFG: 0.1-0.2)
  training.ema_snapshot_freq = 500                 # model.ema_type=power: steps between stored EMA snapshots
  training.reduce_mean = True               # per-sample mean over dims (False: 0.5 * sum, as the reference)
  training.batch_size = 512                 # global batch size, split over all devices
  training.n_iters = 6000                   # number of optimisation steps
  training.n_jitted_steps = 50              # optimisation steps per device dispatch (lax.scan)
  training.log_freq = 500                   # steps between loss logs (a multiple of n_jitted_steps)
  training.eval_freq = 1000                 # steps between held-out loss evaluations
  training.snapshot_freq = 3000             # steps between kept checkpoints (+ snapshot samples)
  training.snapshot_freq_for_preemption = 500  # steps between preemption checkpoints
  training.snapshot_sampling = True         # draw and plot samples at every snapshot
  training.keep_checkpoints = 5             # snapshot checkpoints kept (0 keeps all)
  training.eps = 1e-5                       # smallest diffusion time of the loss
  training.step_loop = "auto"               # auto | scan | dispatch: how a block of n_jitted_steps runs

  config.sampling = sampling = ml_collections.ConfigDict()
  sampling.method = "pc"                    # pc | ode
  sampling.predictor = "reverse_diffusion"  # euler_maruyama | reverse_diffusion | ancestral_sampling | none
  sampling.corrector = "langevin"           # langevin | ald | none
  sampling.n_steps_each = 1                 # corrector steps per predictor step
  sampling.noise_removal = True             # return the last predictor step's mean
  sampling.probability_flow = False         # predictor on the probability-flow ODE
  sampling.snr = 0.16                       # Langevin signal-to-noise ratio
  sampling.batch_size = 2048                # samples per snapshot plot
  sampling.rtol = 1e-5                      # ODE sampler tolerances
  sampling.atol = 1e-5
  add_sampler_options(sampling)             # fast-sampler options and langevin_norm (configs/sampler_options.py)

  config.eval = evaluate = ml_collections.ConfigDict()
  evaluate.begin_ckpt = 1                   # first snapshot checkpoint to evaluate
  evaluate.end_ckpt = 2                     # last snapshot checkpoint to evaluate
  evaluate.checkpoint_timeout = 0          # seconds to wait for a checkpoint not yet written (training alongside)
  evaluate.batch_size = 1024                # evaluation batch size
  evaluate.enable_sampling = True           # draw samples (and plot them)
  evaluate.num_samples = 2048               # samples per checkpoint
  evaluate.enable_loss = True               # held-out DSM loss
  evaluate.enable_bpd = True                # negative log-likelihood through the probability-flow ODE
  evaluate.bpd_dataset = "test"             # train | test
  evaluate.bpd_num_repeats = 1              # likelihood estimates averaged per example (fresh noise each)
  evaluate.hutchinson = "exact"             # divergence: rademacher | gaussian | exact (small dims only)
  evaluate.enable_elbo = False              # report the ELBO for any model (always for vdm / likelihood weighting)
  evaluate.elbo_num_times = 16              # time draws per example of the ELBO (vdm, likelihood weighting)
  evaluate.num_eval_batches = 4             # held-out batches for the eval loss

  config.data = data = ml_collections.ConfigDict()
  data.dataset = "checkerboard"             # checkerboard | moons | 8gaussians | swissroll
  data.dim = 2                              # dimension of one example
  data.num_eval = 4096                      # size of the fixed held-out set
  data.centered = True                      # data already lives around 0 (no [0,1] -> [-1,1] scaling)

  config.model = model = ml_collections.ConfigDict()
  model.name = "mlp"                        # registry name (mlp, ncsnpp, ddpm, ncsnv2_64, ...)
  model.nf = 128                            # hidden width
  model.num_res_blocks = 3                  # residual MLP blocks
  model.embedding_type = "positional"       # positional (VP labels t*999) | fourier (VE labels sigma)
  model.embedding_dim = 64                  # size of the time embedding
  model.fourier_scale = 16.0                # std of the Fourier features' frequencies
  model.scale_by_sigma = False              # divide the output by sigma (VE; reference parameterization)
  model.parameterization = "reference"      # what the network predicts: reference | eps | x0 | v | edm
  model.sigma_data = 0.5                    # data std of the edm parameterization (Karras et al. 2022)
  model.gamma_min = -13.3                   # learned_vpsde: initial gamma(0) = -log SNR(0) (Kingma et al. 2021)
  model.gamma_max = 5.0                     # learned_vpsde: initial gamma(1)
  model.schedule_features = 1024            # learned_vpsde: width of the monotone schedule network
  model.dtype = "float32"                   # compute dtype of the network; parameters stay float32
  model.num_classes = 0                     # class-conditional network (0: unconditional), one extra null class
  model.ema_type = "fixed"                  # fixed (decay model.ema_rate) | power (EDM2's post-hoc EMA)
  model.ema_sigma_rels = (0.05, 0.1)        # ema_type=power: the tracked profiles' relative widths (EDM2)
  model.dropout = 0.0                       # dropout inside residual blocks
  model.input_frequencies = 4               # Fourier features sin/cos(pi 2^k x), k < this, of the input (0: off)
  model.ema_rate = 0.99                     # EMA decay of the parameters used for sampling/eval
  model.sigma_min = 0.01                    # VE noise range
  model.sigma_max = 4.0
  model.beta_min = 0.1                      # VP / sub-VP beta range
  model.beta_max = 20.0
  model.num_scales = 1000                   # N: discretisation steps of the SDE and samplers

  config.optim = optim = ml_collections.ConfigDict()
  optim.optimizer = "Adam"                  # Adam (the only optimizer of the reference)
  optim.lr = 2e-3                           # peak learning rate
  optim.beta1 = 0.9                         # Adam beta1 (beta2 = 0.999)
  optim.eps = 1e-8                          # Adam epsilon
  optim.weight_decay = 0.0                  # decoupled weight decay
  optim.warmup = 200                        # linear warm-up steps (first update has lr 0)
  optim.schedule = "cosine"                 # after warm-up: constant (the reference) | cosine (decay to 0 at n_iters)
  optim.grad_clip = 1.0                     # global-norm clipping (< 0 disables)

  config.seed = 42
  return config
