"""The noise-conditional classifier of class-conditional sampling (Section 5 and Appendix I.1 of Song et al. 2021).

Class-conditional sampling adds grad_x log p(y | x(t)) to the score (Eq. (14)); p(y | x(t)) is a
classifier of *perturbed* data. Here it is the WideResNet of `score_jax.networks.wideresnet`, trained by
cross-entropy on `x(t) = m(t) x(0) + std(t) z` with `t ~ U(eps, T)` per example and `(m, std)` the
config's SDE marginal (`sde.marginal_prob`), in the score model's data space (`datasets.get_data_scaler`).

The network's noise input is `sde.noise_level(t) = std(t) / m(t)`: for a VE SDE the reference's
sigma(t) = `marginal_prob(x, t)[1]`; for VP / sub-VP the noise level of `x / m(t)`, the same image up to
a scale that the network's per-image standardisation removes.

  drivers.train_classifier.train_classifier(config, workdir)   # main.py --mode=train_classifier
  model, variables = load_classifier(config, workdir)
  log_prob_grad_fn = get_log_prob_grad_fn(config, model, variables)   # for controllable.pc_conditional_sample

Checkpoints, metrics (`metrics.jsonl`, TensorBoard) and logs live in `<workdir>/classifier/`, beside the
score model's. The batch of step s and the noise of step s depend on (seed, s) only, so a resumed run
is the uninterrupted one.
"""

import os

import flax
import jax
import jax.numpy as jnp
import ml_collections
import optax
from absl import logging

from score_jax import base_config, checkpoint, controllable, optim, sde as sde_lib
from score_jax.rng import per_example
from score_jax.config_utils import validate_classifier_config
from score_jax.networks.wideresnet import WideResnet
from score_jax.utils import choice_error

CLASSIFIER_DIR = "classifier"  # under the workdir


@flax.struct.dataclass
class ClassifierState:
  """Everything a resumed run needs; no RNG (it is derived from the step)."""

  step: jax.Array
  params: dict
  opt_state: optax.OptState
  model_state: dict  # the Fourier frequencies ("constants")

  def variables(self):
    return {**self.model_state, "params": self.params}


@flax.struct.dataclass
class ClassifierOutput:
  loss: jax.Array      # mean cross-entropy (nats)
  accuracy: jax.Array  # fraction of correct argmax predictions


def get_classifier(config):
  """The WideResnet of `config.classifier`: `apply(variables, x, noise_level) -> (B, num_classes)` logits."""
  c = config.classifier
  return WideResnet(blocks_per_group=c.blocks_per_group, channel_multiplier=c.channel_multiplier,
                    num_outputs=c.num_classes, embedding_size=c.embedding_size, fourier_scale=c.fourier_scale,
                    temb_dim=c.temb_dim, dtype=classifier_dtype(config))


def classifier_dtype(config):
  """The classifier's compute dtype from `classifier.dtype` (None for float32); a ValueError for others."""
  name = config.classifier.get("dtype", "float32")
  if name not in DTYPES:
    raise choice_error("classifier.dtype", name, DTYPES)
  return DTYPES[name]


DTYPES = {"float32": None, "bfloat16": jnp.bfloat16}


def get_logit_fn(sde, model, variables):
  """`logit_fn(x, t) -> (B, num_classes)`: the classifier at SDE time `t`, fed `sde.noise_level(t)`."""
  return lambda x, t: model.apply(variables, x, sde.noise_level(t))


def get_log_prob_grad_fn(config, model, variables):
  """`log_prob_grad_fn(x, t, labels)` = grad_x log p(labels | x(t)), for `controllable.pc_conditional_sample`.

  `x` is in the score model's space and `t` the sampler's time; `labels` are `(B,)` ints.
  """
  sde, _ = sde_lib.get_sde(config)
  return controllable.classifier_log_prob_grad_fn(get_logit_fn(sde, model, variables))


def get_loss_fn(sde, model, noise_eps):
  """`loss_fn(rng, variables, images, labels, t_range=(eps, T)) -> ClassifierOutput` on perturbed images.

  Example i draws its time `t ~ U(t_range)` and noise `z` from `fold_in(rng, i)`.
  """
  def loss_fn(rng, variables, images, labels, t_range=(noise_eps, sde.T)):
    draw = lambda key: (jax.random.uniform(jax.random.fold_in(key, 0), (), minval=t_range[0], maxval=t_range[1]),
                        jax.random.normal(jax.random.fold_in(key, 1), images.shape[1:]))
    t, z = per_example(rng, images.shape[0], draw)
    mean, std = sde.marginal_prob(images, t)
    logits = get_logit_fn(sde, model, variables)(mean + std.reshape((-1,) + (1,) * (images.ndim - 1)) * z, t)
    log_probs = jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], axis=-1)[:, 0]
    return ClassifierOutput(loss=-jnp.mean(log_probs), accuracy=jnp.mean(jnp.argmax(logits, -1) == labels))
  return loss_fn


def get_optimizer(config):
  """The optimizer of `config.classifier.optim`."""
  return optim.get_optimizer(base_config.complete(ml_collections.ConfigDict({"optim": config.classifier.optim})))


def init_state(rng, config, optimizer):
  """A fresh `ClassifierState` of the classifier of `config`."""
  size, channels = config.data.image_size, config.data.num_channels
  variables = get_classifier(config).init(rng, jnp.zeros((1, size, size, channels)), jnp.ones((1,)))
  params = variables.pop("params")
  return ClassifierState(step=jnp.zeros((), jnp.int32), params=params, opt_state=optimizer.init(params),
                         model_state=variables)


def checkpoint_manager(config, workdir):
  """The orbax manager of `<workdir>/classifier/checkpoints`."""
  directory = os.path.join(workdir, CLASSIFIER_DIR, checkpoint.SNAPSHOT_DIR)
  return checkpoint.get_manager(directory, config.classifier.keep_checkpoints)


def load_classifier(config, workdir):
  """The newest readable classifier checkpoint of `workdir`: returns `(model, variables)`.

  Raises:
    ValueError: `config.classifier` is invalid, or `workdir` holds no readable classifier checkpoint.
  """
  validate_classifier_config(config)
  target = checkpoint.abstract_state(lambda: init_state(jax.random.PRNGKey(0), config, get_optimizer(config)))
  state, step = checkpoint.restore_latest([checkpoint_manager(config, workdir)], target)
  if step is None:
    raise ValueError(f"no readable classifier checkpoint in {os.path.join(workdir, CLASSIFIER_DIR)}; train one "
                     "with `python main.py --mode=train_classifier` and the same --config and --workdir")
  logging.info("Loaded the classifier of step %d", step)
  return get_classifier(config), state.variables()
