"""Samplers: one module per family, one shape for all.

Every sampler has the signature `(rng, score_fn, sde, shape, *, options) -> SampleOutput`, runs its
whole loop in one jit with `score_fn`, `sde` and its options static, and draws sample i's randomness
from (rng, i) only (`score_jax.rng`). A family states its options once, as the fields of a frozen
dataclass (`common.Sampler`) that checks them (`check`) and runs the loop (`run`); its public
`<name>_sample` and its `config.sampling` keys (`registry.config_options`) are read from those fields.
A new family is one module here and one line of `registry.FAMILIES`. Families:

  pc.py                predictors, correctors, the predictor-corrector loop (Song et al. 2021, Alg. 1-5)
  probability_flow.py  the probability-flow ODE with the in-jit Dormand-Prince solver (`score_jax.ode`)
  ddim.py              DDIM (Song, Meng & Ermon 2021)
  dpm_solver.py        DPM-Solver++ multistep and singlestep, orders 1-3 (Lu et al. 2022b)
  heun.py              Karras et al. 2022, Algorithms 1 and 2
  adaptive_sde.py      Gotta Go Fast (Jolicoeur-Martineau et al. 2021)
  consistency.py       multistep consistency sampling (Song et al. 2023, Algorithm 1)
  flow_map.py          a flow map's jumps z_r = z_t - (t - r) u(z_t, r, t) (MeanFlow, Geng et al. 2025)
  schedules.py         time grids; common.py: Sampler, SampleOutput, the prior draw, the data prediction
  registry.py          FAMILIES, SAMPLERS, sample(..., method=...), get_sampling_fn(config, ...)
"""

from score_jax.parameterization import ScoreFunction
from score_jax.rng import fold_in, gaussian_noise, per_sample_keys
from score_jax.sampling.adaptive_sde import AdaptiveSDESampler, adaptive_sde_sample
from score_jax.sampling.common import SampleOutput, Sampler, count_network_evaluations, initial_state, prior_draw
from score_jax.sampling.consistency import ConsistencySampler, consistency_sample
from score_jax.sampling.ddim import DDIMSampler, ddim_sample
from score_jax.sampling.dpm_solver import DPMSolverSampler, dpm_solver_sample
from score_jax.sampling.flow_map import FlowMapSampler, flow_map_sample
from score_jax.sampling.heun import HeunSampler, heun_sample
from score_jax.sampling.pc import (CORRECTORS, LANGEVIN_NORMS, PREDICTORS, PCSampler, ancestral_sampling_predictor,
                                   annealed_langevin_corrector, euler_maruyama_predictor, langevin_corrector,
                                   none_corrector, none_predictor, pc_loop, pc_nfe, pc_sample,
                                   reverse_diffusion_predictor)
from score_jax.sampling.probability_flow import ODESampler, ode_sample
from score_jax.sampling.registry import (CONFIG_KEYS, FAMILIES, SAMPLERS, config_key, config_options,
                                        default_class_labels, get_sampling_fn, get_seed_sampling_fn, guidance_options,
                                        sample)
from score_jax.sampling.schedules import SCHEDULES, get_timesteps

__all__ = ["CONFIG_KEYS", "CORRECTORS", "FAMILIES", "LANGEVIN_NORMS", "PREDICTORS", "SAMPLERS", "SCHEDULES",
           "AdaptiveSDESampler", "ConsistencySampler", "DDIMSampler", "DPMSolverSampler", "FlowMapSampler",
           "HeunSampler", "ODESampler", "PCSampler", "SampleOutput", "Sampler", "ScoreFunction",
           "adaptive_sde_sample", "ancestral_sampling_predictor", "annealed_langevin_corrector", "config_key",
           "config_options", "consistency_sample", "count_network_evaluations", "default_class_labels",
           "flow_map_sample", "guidance_options", "ddim_sample", "dpm_solver_sample", "euler_maruyama_predictor", "fold_in",
           "gaussian_noise", "get_sampling_fn", "get_seed_sampling_fn", "get_timesteps", "heun_sample",
           "initial_state", "langevin_corrector", "none_corrector", "none_predictor", "ode_sample", "pc_loop",
           "pc_nfe", "pc_sample", "per_sample_keys", "prior_draw", "reverse_diffusion_predictor", "sample"]
