"""`autoencoder`: a small KL-regularised autoencoder of the project's own (Rombach et al. 2022, Sec. 3 and App. G,
without the adversarial and perceptual terms), for data without a published one.

Per example, with the posterior q(z | x) = N(mean, diag exp(logvar)) of the encoder and one reparameterised
draw z = mean + exp(logvar / 2) eps (Kingma & Welling 2014, Sec. 2.4; eps from the step's `posterior` key):

  loss = mean over pixel values of |x - decode(z)|^p  +  kl_weight * KL(q(z | x) || N(0, I)) / (pixel values),

p = 2 (`training.reconstruction_loss = "mse"`) or 1 (`"l1"`); the KL in closed form, 0.5 sum(mean^2 +
exp(logvar) - 1 - logvar) over the latent's values (Kingma & Welling 2014, App. B), in nats per pixel value.
No GAN and no LPIPS: the digits are 8x8 (a perceptual network sees nothing at that size) and LPIPS needs a VGG
download. The network is `networks.autoencoder_kl` (`model.name = "autoencoder_kl"`), called as itself through
`ModelCall.network_method`: the objective trains the `autoencoder` parameterization, which has no D(x, t).
"""

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp

from score_jax.objectives.base import Objective, normal_per_example, output
from score_jax.utils import choice_error

RECONSTRUCTION_LOSSES = {"mse": jnp.square, "l1": jnp.abs}


def kl_divergence(mean, logvar):
  """KL(N(mean, diag exp(logvar)) || N(0, I)) per example, `(B,)`, in nats (Kingma & Welling 2014, App. B)."""
  kl = 0.5 * (jnp.square(mean) + jnp.exp(logvar) - 1.0 - logvar)
  return jnp.sum(kl.reshape(kl.shape[0], -1), axis=-1)


def reparameterize(mean, logvar, eps):
  """z = mean + exp(logvar / 2) eps: a posterior draw differentiable in (mean, logvar)."""
  return mean + jnp.exp(0.5 * logvar) * eps


def latent_shape(network, image_shape):
  """`(h, w, latent_channels)` of the latents of one `(H, W, C)` image."""
  height, width, _ = image_shape
  factor = network.downsample_factor
  return (height // factor, width // factor, network.latent_channels)


@dataclasses.dataclass(frozen=True)
class Autoencoder(Objective):
  """Reconstruction + `kl_weight` KL of the diagonal-Gaussian posterior (module docstring)."""

  reconstruction_loss: str = "mse"  # `training.reconstruction_loss`: mse | l1
  kl_weight: float = 1e-3           # `training.kl_weight`, on the KL in nats per pixel value

  parameterization: ClassVar[str] = "autoencoder"
  refines: ClassVar[tuple] = ("reference",)  # the base default gives way
  generative: ClassVar[bool] = False

  @classmethod
  def options(cls, config):
    return dict(reconstruction_loss=config.training.reconstruction_loss, kl_weight=config.training.kl_weight)

  def check(self):
    network = getattr(self.model, "network", self.model)
    if not hasattr(network, "encode") or not hasattr(network, "decode"):
      raise ValueError(f"training.objective='autoencoder' trains model.name='autoencoder_kl', not a "
                       f"{type(network).__name__}")
    if self.reconstruction_loss not in RECONSTRUCTION_LOSSES:
      raise choice_error("training.reconstruction_loss", self.reconstruction_loss, RECONSTRUCTION_LOSSES)
    if not self.kl_weight >= 0.0:
      raise ValueError(f"training.kl_weight={self.kl_weight} must be >= 0")

  def draw(self, keys, x):
    network = self.model.network
    eps = normal_per_example(keys["posterior"], jnp.zeros((x.shape[0],) + latent_shape(network, x.shape[1:])))
    return {"posterior": eps}

  def loss(self, call, x, draws, inputs=None):
    mean, logvar = call.network_method("encode")(x)
    decoded = call.network_method("decode")(reparameterize(mean, logvar, draws["posterior"]))
    error = RECONSTRUCTION_LOSSES[self.reconstruction_loss](decoded - x)
    pixel_values = x[0].size
    reconstruction = jnp.mean(error.reshape(x.shape[0], -1), axis=-1)
    kl = kl_divergence(mean, logvar) / pixel_values
    return output(reconstruction + self.kl_weight * kl, terms={"reconstruction": reconstruction, "kl": kl})


def latent_std(encode_fn, batches):
  """The standard deviation of the posterior means of `batches` (every value of every latent channel): latent
  diffusion trains on latents x (1 / std), Stable Diffusion's `scaling_factor` (Rombach et al. 2022, Sec. 4.3.2)."""
  means = jnp.concatenate([jax.device_get(encode_fn(batch)[0]).reshape(-1) for batch in batches])
  return float(jnp.std(means))
