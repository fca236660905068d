"""A network with its parameterization, and the score / denoiser functions built from it.

This is the only place where SDE time meets a network: `get_score_fn` and `get_denoiser_fn` ask
the model's parameterization (`score_jax.parameterization`) for the network's inputs and for the
meaning of its output.
"""

import flax.linen as nn

from score_jax import parameterization as parameterization_lib


class ScoreModel(nn.Module):
  """`network` with its `parameterization`; `apply(variables, x, labels, train)` is the raw network.

  The network shares this module's scope, so the variables are the network's own (the reference's
  parameter names, unchanged by the wrapper).
  """

  network: nn.Module
  parameterization: parameterization_lib.Parameterization

  def setup(self):
    nn.share_scope(self, self.network)

  def __call__(self, x, labels, train=False):
    return self.network(x, labels, train=train)


def parameterization_of(model):
  """The model's parameterization; a bare network is read with the reference's defaults."""
  return getattr(model, "parameterization", None) or parameterization_lib.Reference()


def get_network_fn(model, variables, *, train=False, rng=None):
  """Returns `network_fn(x_in, labels) -> raw output`; `rng` drives dropout when `train`."""
  def network_fn(x, labels):
    rngs = {"dropout": rng} if train and rng is not None else {}
    return model.apply(variables, x, labels, train=train, rngs=rngs)
  return network_fn


def get_model_fn(model, variables, *, train=False, rng=None):
  """Returns `model_fn(x, labels) -> output` of the reference's network convention.

  This is the reference network as score_sde defines it (its input centering and `scale_by_sigma`
  included), fed the labels directly: what the discrete SMLD / DDPM losses train and what released
  checkpoints compute. Defined for the `reference` parameterization only.
  """
  parameterization = parameterization_of(model)
  if not isinstance(parameterization, parameterization_lib.Reference):
    raise ValueError("the reference's network convention (discrete training, raw labels) needs "
                     "model.parameterization='reference'")
  network_fn = get_network_fn(model, variables, train=train, rng=rng)
  return lambda x, labels: parameterization.reference_output(network_fn, x, labels)


def _get_output_fn(sde, model, variables, train, continuous, rng, convert):
  sde = sde.bind(variables)  # a learned schedule takes its parameters from the model's
  parameterization = parameterization_of(model)
  network_fn = get_network_fn(model, variables, train=train, rng=rng)

  def output_fn(x, t):
    output = parameterization.apply_network(network_fn, sde, x, t, continuous)
    return convert(parameterization, sde, output, x, t, continuous)

  return output_fn


def get_score_fn(sde, model, variables, *, train=False, continuous=True, rng=None):
  """Returns `score_fn(x, t) -> score shaped like x` of `model` under `sde`.

  Args:
    sde: the forward SDE the model was trained with.
    model: `get_model(config)` (a bare network is read with the reference's defaults).
    variables: the model's variables. train, rng: dropout on, with this key.
    continuous: the model was trained with continuous time labels (`training.continuous`).
  """
  score_fn = _get_output_fn(sde, model, variables, train, continuous, rng, lambda p, *args: p.score(*args))
  # The samplers that work with data predictions take the model's own (`parameterization.denoiser_of`).
  score_fn.denoiser_fn = get_denoiser_fn(sde, model, variables, train=train, continuous=continuous, rng=rng)
  return score_fn


def get_output_fn(sde, model, variables, *, train=False, continuous=True, rng=None):
  """Returns `output_fn(x, t) -> the raw network output` on the parameterization's inputs at (x, t)
  (what the regression objectives compare with `parameterization.target`)."""
  return _get_output_fn(sde, model, variables, train, continuous, rng, lambda p, sde, output, *args: output)


def get_denoiser_fn(sde, model, variables, *, train=False, continuous=True, rng=None):
  """Returns `denoiser_fn(x, t) -> x0_hat`, D(x, t) = E[x(0) | x(t)] under the model.

  Same arguments as `get_score_fn`; for score-predicting parameterizations D is Tweedie's
  (x + std^2 s) / m.
  """
  return _get_output_fn(sde, model, variables, train, continuous, rng,
                        lambda p, *args: p.denoised(*args))
