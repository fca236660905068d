"""The fast samplers (DDIM, DPM-Solver++, Heun, adaptive SDE), under their earlier module name.

They live in `score_jax.sampling` (one module each); this module keeps their names importable.
"""

from score_jax.sampling.adaptive_sde import STEP_SIZES, adaptive_sde_sample
from score_jax.sampling.common import denoise_fn
from score_jax.sampling.ddim import ddim_sample
from score_jax.sampling.dpm_solver import SOLVER_ORDERS, dpm_solver_sample
from score_jax.sampling.heun import heun_sample
from score_jax.sampling.schedules import SCHEDULES, get_timesteps

FAST_SAMPLERS = {"ddim": ddim_sample, "dpm_solver": dpm_solver_sample, "heun": heun_sample,
                 "adaptive_sde": adaptive_sde_sample}

__all__ = ["FAST_SAMPLERS", "SCHEDULES", "SOLVER_ORDERS", "STEP_SIZES", "adaptive_sde_sample", "ddim_sample",
           "denoise_fn", "dpm_solver_sample", "get_timesteps", "heun_sample"]
