"""Sampler option keys shared by every base config (one place, one comment per key)."""

from ml_collections.config_dict import placeholder


def add_sampler_options(sampling):
  """Adds the fast samplers' options, the Langevin norm and the guidance keys to a `config.sampling` section."""
  # Fast samplers (sampling.method ddim | dpm_solver | heun | adaptive_sde); unset = the method's default.
  sampling.steps = placeholder(int)         # time steps (ddim 50, dpm_solver 20, heun 18)
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
  # Classifier-free guidance of a class-conditional model (model.num_classes > 0), every sampler.
  sampling.guidance_scale = 0.0             # w: (1 + w) D(x, c) - w D(x, null); 0 samples p(x | c)
  sampling.guidance_interval = ()           # (low, high): guide only at noise levels sigma in (low, high]; (): all
