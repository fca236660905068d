"""VDM's learned noise schedule (Kingma et al. 2021, Sec. 5.1, Appendix H): a monotone network for gamma(t).

gamma(t) = gamma_0 + |gamma_1 - gamma_0| u(t), with u(t) = (h(t) - h(0)) / (h(1) - h(0)) the
normalised output of the paper's monotone network h (a linear layer plus a sigmoid layer of
`features` units, all weights taken in absolute value). The endpoints gamma_0, gamma_1 set the
ELBO's prior and reconstruction terms; the shape u is trained to minimise the variance of the
diffusion loss (`score_jax.losses`), to which the ELBO itself is invariant.

Parameters: `{"gamma_0", "gamma_1", "shape": <MonotoneNetwork params>}`.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp


class MonotoneDense(nn.Dense):
  """A dense layer with non-negative weights |W|: increasing in every input."""

  @nn.compact
  def __call__(self, inputs):
    kernel = self.param("kernel", self.kernel_init, (inputs.shape[-1], self.features))
    y = inputs @ jnp.abs(kernel)
    if self.use_bias:
      y = y + self.param("bias", self.bias_init, (self.features,))
    return y


class MonotoneNetwork(nn.Module):
  """h(t) = l1(t) + l3(2 sigmoid(l2(2t - 1)) - 1) / features, increasing in t; `t` is `(B,)`."""

  features: int = 1024

  @nn.compact
  def __call__(self, t):
    t = t[:, None]
    h = MonotoneDense(1, kernel_init=nn.initializers.ones, name="linear")(t)
    hidden = MonotoneDense(self.features, kernel_init=nn.initializers.normal(1.0), name="hidden")(2.0 * t - 1.0)
    hidden = 2.0 * (nn.sigmoid(hidden) - 0.5)
    h = h + MonotoneDense(1, use_bias=False, kernel_init=nn.initializers.normal(1.0), name="out")(hidden) / self.features
    return h[:, 0]


def init_params(rng, gamma_min, gamma_max, features):
  shape = MonotoneNetwork(features).init(rng, jnp.zeros((1,)))["params"]
  return {"gamma_0": jnp.asarray(gamma_min, jnp.float32), "gamma_1": jnp.asarray(gamma_max, jnp.float32),
          "shape": shape}


def shape_and_rate(shape_params, t):
  """(u(t), u'(t)): the normalised monotone network and its derivative, each shaped like `t`."""
  flat = jnp.reshape(t, (-1,))
  features = shape_params["hidden"]["kernel"].shape[-1]
  network = lambda s: MonotoneNetwork(features).apply({"params": shape_params}, s)
  ends = network(jnp.array([0.0, 1.0], flat.dtype))
  h, rate = jax.jvp(network, (flat,), (jnp.ones_like(flat),))
  scale = 1.0 / (ends[1] - ends[0])
  return jnp.reshape((h - ends[0]) * scale, jnp.shape(t)), jnp.reshape(rate * scale, jnp.shape(t))


def gamma_from_shape(params, shape, shape_rate):
  """(gamma, gamma') from the endpoints in `params` and the normalised shape u, u'."""
  span = jnp.abs(params["gamma_1"] - params["gamma_0"])
  return params["gamma_0"] + span * shape, span * shape_rate


def gamma_and_rate(params, t):
  """(gamma(t), gamma'(t)) of the schedule `params`, each shaped like `t`."""
  return gamma_from_shape(params, *shape_and_rate(params["shape"], t))


def endpoints(params):
  """(gamma(0), gamma(1)) = (gamma_0, gamma_0 + |gamma_1 - gamma_0|)."""
  return params["gamma_0"], params["gamma_0"] + jnp.abs(params["gamma_1"] - params["gamma_0"])
