"""A small CNN classifier of the embedded digits, and a Fréchet distance in its feature space.

The network is trained by score_jax itself on the 1500 training digits
(`toy_data.DIGITS_TRAIN_SIZE`) at 16 px; the trained weights ship as
`score_jax/assets/digits_classifier.npz` (a plain npz of float32 arrays, read
with `allow_pickle=False`). Retrain them with

  python -m score_jax.metrics.digits --out=score_jax/assets/digits_classifier.npz

`digits_frechet_distance` is the Fréchet distance (Heusel et al. 2017) between
the 64-d penultimate-layer features of this classifier: a sample-quality score
for the digits runs that needs no download. It is *not* FID -- the numbers are
comparable only with other numbers of this classifier, never with Inception FIDs.
"""

import importlib.resources
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import traverse_util

from score_jax.metrics import distances
from score_jax.toy_data import DIGITS_TRAIN_SIZE, load_digits

IMAGE_SIZE = 16  # the network's input size; other sizes are resized to it
NUM_CLASSES = 10
ASSET = "assets/digits_classifier.npz"


class ClassifierOutput(NamedTuple):
  features: jnp.ndarray  # (B, 64) penultimate-layer activations
  logits: jnp.ndarray    # (B, 10)


class DigitsClassifier(nn.Module):
  """conv 32 -> pool -> conv 64 -> pool -> dense 64 (the features) -> dense 10, on [0, 1] images; the second
  pool's 4x4x64 map is sown as `intermediates["spatial"]`."""
  num_features: int = 64
  channels: tuple = (32, 64)

  @nn.compact
  def __call__(self, images):
    x = 2.0 * _to_network_input(images) - 1.0
    x = nn.avg_pool(nn.relu(nn.Conv(self.channels[0], (3, 3))(x)), (2, 2), (2, 2))  # 8 px
    x = nn.avg_pool(nn.relu(nn.Conv(self.channels[1], (3, 3))(x)), (2, 2), (2, 2))  # 4 px
    self.sow("intermediates", "spatial", x)  # (B, 4, 4, 64): the features REPA aligns to (`feature_encoders`)
    features = nn.relu(nn.Dense(self.num_features)(x.reshape(x.shape[0], -1)))
    return ClassifierOutput(features, nn.Dense(NUM_CLASSES)(features))


def _to_network_input(images):
  """(B, H, W[, 1]) images, uint8 in 0..255 or float in [0, 1] -> float32 (B, 16, 16, 1)."""
  if images.ndim == 3:
    images = images[..., None]
  if images.ndim != 4 or images.shape[-1] != 1:
    raise ValueError(f"expected grey images (B, H, W, 1), got shape {images.shape}")
  x = images.astype(jnp.float32) / 255.0 if images.dtype == jnp.uint8 else images.astype(jnp.float32)
  if x.shape[1:3] != (IMAGE_SIZE, IMAGE_SIZE):
    x = jax.image.resize(x, (x.shape[0], IMAGE_SIZE, IMAGE_SIZE, 1), "bilinear")
  return x


def _shift(rng, images, max_shift=1):
  """Random translation by up to `max_shift` pixels (edge padding): the only augmentation."""
  dx, dy = jax.random.randint(rng, (2,), -max_shift, max_shift + 1)
  padded = jnp.pad(images, ((0, 0), (max_shift, max_shift), (max_shift, max_shift), (0, 0)), mode="edge")
  return jax.lax.dynamic_slice(padded, (0, max_shift + dy, max_shift + dx, 0), images.shape)


def train_digits_classifier(image_size=IMAGE_SIZE, steps=800, seed=0, batch_size=128, learning_rate=3e-3):
  """Trains the classifier on the 1500 training digits with Adam; deterministic for a given seed.

  Args:
    image_size: the size the digits are loaded at (the network resizes them to 16 px).
    steps: optimisation steps.
    seed: seeds the initialisation and the batches.
    batch_size: digits per step, drawn without replacement within a step.
    learning_rate: peak Adam learning rate, cosine-decayed to 0.

  Returns:
    The Flax variables `{"params": ...}`.
  """
  images, labels = load_digits(image_size)
  images = jnp.asarray(images[:DIGITS_TRAIN_SIZE], jnp.float32) / 255.0
  labels = jnp.asarray(labels[:DIGITS_TRAIN_SIZE], jnp.int32)
  model = DigitsClassifier()
  rng = jax.random.PRNGKey(seed)
  params = model.init(jax.random.fold_in(rng, 0), images[:1])["params"]
  optimizer = optax.adam(optax.cosine_decay_schedule(learning_rate, steps))

  def loss_fn(params, x, y):
    logits = model.apply({"params": params}, x).logits
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

  @jax.jit
  def step_fn(params, opt_state, step):
    key = jax.random.fold_in(jax.random.fold_in(rng, 1), step)
    batch_key, shift_key = jax.random.split(key)
    index = jax.random.choice(batch_key, DIGITS_TRAIN_SIZE, (batch_size,), replace=False)
    grads = jax.grad(loss_fn)(params, _shift(shift_key, images[index]), labels[index])
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state

  opt_state = optimizer.init(params)
  for step in range(steps):  # a Python loop: XLA:CPU runs these convolutions ~15x slower inside lax.scan
    params, opt_state = step_fn(params, opt_state, step)
  return {"params": params}


def save_variables(path, variables):
  """Writes the variables as a plain npz of float32 arrays keyed by '/'-joined names."""
  flat = traverse_util.flatten_dict(variables, sep="/")
  np.savez(path, **{name: np.asarray(value, np.float32) for name, value in flat.items()})


def load_variables(path=None):
  """Reads `save_variables`' npz (default: the shipped weights); pickled objects are refused."""
  if path is None:
    path = importlib.resources.files("score_jax").joinpath(ASSET)
  with open(path, "rb") as f, np.load(f, allow_pickle=False) as data:
    flat = {name: jnp.asarray(data[name]) for name in data.files}
  return traverse_util.unflatten_dict(flat, sep="/")


def digits_features_fn(variables=None, batch_size=256):
  """Returns `features_fn(images) -> ClassifierOutput(features (B, 64), logits (B, 10))`.

  Args:
    variables: the classifier's variables; by default the shipped `assets/digits_classifier.npz`.
    batch_size: images per jitted call (the last chunk is padded, so nothing retraces).

  `images` are (B, H, W, 1) in [0, 1] (or uint8 in 0..255), any H = W; the
  outputs are numpy arrays.
  """
  variables = load_variables() if variables is None else variables
  apply_fn = jax.jit(DigitsClassifier().apply)

  def features_fn(images):
    images = np.asarray(images)
    outputs = []
    for start in range(0, len(images), batch_size):
      chunk = images[start:start + batch_size]
      padded = np.concatenate([chunk, np.repeat(chunk[-1:], batch_size - len(chunk), axis=0)])
      outputs.append(jax.tree.map(lambda a, n=len(chunk): np.asarray(a)[:n], apply_fn(variables, padded)))
    return ClassifierOutput(*(np.concatenate(parts) for parts in zip(*outputs)))

  return features_fn


def digits_frechet_distance(samples, reference_images, features_fn=None):
  """Fréchet distance in the feature space of a small digits classifier trained by score_jax -- not FID.

  Args:
    samples: (N, H, W, 1) images in [0, 1] (or uint8).
    reference_images: (M, H', W', 1) images in [0, 1] (or uint8), e.g. the 297 held-out digits.
    features_fn: from `digits_features_fn`; by default that of the shipped weights.

  Returns:
    ||mu1 - mu2||^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2)) of the 64-d features, a float.
  """
  features_fn = digits_features_fn() if features_fn is None else features_fn
  return distances.frechet_distance_from_features(features_fn(samples).features,
                                                   features_fn(reference_images).features)


def held_out_accuracy(variables=None, image_size=IMAGE_SIZE):
  """Top-1 accuracy on the 297 held-out digits."""
  images, labels = load_digits(image_size)
  logits = digits_features_fn(variables)(images[DIGITS_TRAIN_SIZE:]).logits
  return float(np.mean(np.argmax(logits, axis=-1) == labels[DIGITS_TRAIN_SIZE:]))


def _main():
  from absl import app, flags

  flags.DEFINE_string("out", "score_jax/" + ASSET, "Where to write the npz of trained weights.")
  flags.DEFINE_integer("steps", 800, "Adam steps.")
  flags.DEFINE_integer("seed", 0, "Seed of the initialisation and the batches.")

  def main(argv):
    del argv
    variables = train_digits_classifier(steps=flags.FLAGS.steps, seed=flags.FLAGS.seed)
    save_variables(flags.FLAGS.out, variables)
    print(f"Wrote {flags.FLAGS.out}: held-out accuracy {held_out_accuracy(variables):.4f}")

  app.run(main)


if __name__ == "__main__":
  _main()
