"""The training losses, now one module per objective in `score_jax.objectives`; these names stay importable."""

from score_jax.objectives import (OBJECTIVES, LossConfig, LossOutput, check_loss_config, get_loss_fn, pixel_levels,
                                  split_batch)
from score_jax.objectives.discrete import ddpm_loss, smld_loss
from score_jax.objectives.dsm import dsm_loss, regression_loss
from score_jax.objectives.edm import edm_loss, edm_weight
from score_jax.objectives.ssm import PROJECTIONS as SSM_PROJECTIONS
from score_jax.objectives.ssm import ssm_loss
from score_jax.objectives.vdm import elbo_start, learned_schedule_elbo

__all__ = ["OBJECTIVES", "SSM_PROJECTIONS", "LossConfig", "LossOutput", "check_loss_config", "ddpm_loss",
           "dsm_loss", "edm_loss", "edm_weight", "elbo_start", "get_loss_fn", "learned_schedule_elbo",
           "pixel_levels", "regression_loss", "smld_loss", "split_batch", "ssm_loss"]
