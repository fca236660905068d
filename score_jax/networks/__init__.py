"""The plain networks (no SDE, no parameterization: `model.apply(variables, x, labels)`), their layers and their
registry, `config.model.name` -> network. `score_jax.models` pairs a network with its parameterization.

  ddpm.py, ncsnpp.py (NCSN++ and DDPM++), ncsnv2.py, mlp.py   the reference's networks and the toy MLP
  edm2.py            EDM2's magnitude-preserving U-Net
  autoencoder_kl.py  the Stable Diffusion VAE (diffusers' AutoencoderKL layout); `autoencoder_kl`, trained by
                     `training.objective = "autoencoder"` (not a score network)
  dit.py             DiT, the adaLN-Zero diffusion transformer on patches
  wideresnet.py      the noise-conditional classifier's network
  layers.py, normalization.py, up_or_down_sampling.py   their building blocks
  registry.py        `register_model`, `get_network`
"""

# Importing a network module registers it.
from score_jax.networks import autoencoder_kl, ddpm, dit, edm2, mlp, ncsnpp, ncsnv2  # noqa: F401
from score_jax.networks.registry import compute_dtype, get_network, model_names, register_model

__all__ = ["compute_dtype", "get_network", "model_names", "register_model"]
