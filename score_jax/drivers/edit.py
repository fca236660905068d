"""Editing images with a trained score model: inpainting, colorization, class-conditional samples (Section 5).

The command line behind `main.py --mode=inpaint|colorize|conditional`:

  python main.py --config=configs/digits.py --workdir=runs/digits --mode=inpaint --from_dataset=8 --mask=box
  python main.py --config=configs/vp_cifar10.py --workdir=runs/vp --mode=colorize --image=a.png,b.png
  python main.py --config=configs/classifier/digits.py --workdir=runs/digits --mode=conditional --labels=0,1,2,3

The score model is the EMA weights of the newest readable checkpoint (snapshot or preemption) of the
workdir; the conditional mode adds the classifier that `--mode=train_classifier` trained there, or, for a
class-conditional model (`model.num_classes > 0`), samples it with classifier-free guidance w =
`--guidance_scale` by the sampler of `config.sampling`:

  python main.py --config=configs/digits_cfg.py --workdir=runs/cfg --mode=conditional --labels=0,1,2 --guidance_scale=2 Sampling
uses the PC options of `config.sampling` (predictor, corrector, snr, n_steps_each, probability_flow,
noise_removal; `model.num_scales` steps), whatever `sampling.method` says. The inputs (image files,
centre-cropped and resized to `data.image_size`, or the first images of the held-out split) and the
mask are checked before anything is compiled.

The result is a PNG grid in `<workdir>/edits/`: one column per image; rows original, input (unknown
pixels mid-gray, or the gray image) and result (conditional: the samples only). Inpainted results keep
the known pixels of the original: times m(eps), 1 for VE SDEs and 1 - 5e-5 for VP at eps = 1e-3, so the
8-bit PNG shows them exactly.
"""

import dataclasses
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from PIL import Image

from score_jax import classifier, controllable, datasets, parallel, sampling, trained_model
from score_jax.config_utils import validate_classifier_config
from score_jax.models import get_data_shape, get_score_fn
from score_jax.run_setup import RunSetup, prepare_config, trained_run_config
from score_jax.utils import choice_error

MODES = ("inpaint", "colorize", "conditional")
EDIT_DIR = "edits"


def _half(size, rng):
  del rng
  mask = np.ones((size, size))
  mask[:, size // 2:] = 0  # the reference's notebook: the right half is unknown
  return mask


def _top(size, rng):
  del rng
  mask = np.ones((size, size))
  mask[size // 2:] = 0
  return mask


def _box(size, rng):
  del rng
  mask, start = np.ones((size, size)), size // 4
  mask[start:start + size // 2, start:start + size // 2] = 0
  return mask


def _outpaint(size, rng):
  return 1 - _box(size, rng)


def _random(size, rng):
  return (rng.random((size, size)) < 0.25).astype(np.float64)  # a quarter of the pixels known


MASKS = {"half": _half, "top": _top, "box": _box, "outpaint": _outpaint, "random": _random}


def get_mask(mask, image_size, seed=0):
  """A `(H, W, 1)` float mask (1 = known): a name in `MASKS`, or an image file (white = known)."""
  if mask in MASKS:
    return MASKS[mask](image_size, np.random.default_rng(seed))[..., None].astype(np.float32)
  if not os.path.isfile(mask):
    raise ValueError(f"mask={mask!r} is neither an image file nor a named mask; choose one of: "
                     f"{', '.join(sorted(MASKS))}")
  return (read_images([mask], image_size, 1)[0] > 0.5).astype(np.float32)


def read_images(paths, image_size, num_channels):
  """Image files -> float32 `(B, image_size, image_size, num_channels)` in [0, 1]: centre square, resized."""
  images = []
  for path in paths:
    try:
      with Image.open(path) as image:
        pixels = np.asarray(image.convert("L" if num_channels == 1 else "RGB"))
    except (OSError, ValueError) as error:
      raise ValueError(f"cannot read image {path!r}: {error}") from None
    pixels = pixels[..., None] if pixels.ndim == 2 else pixels
    square = datasets.central_crop(pixels, min(pixels.shape[:2]))
    images.append(datasets.resize(square, image_size, image_size, "bicubic"))
  return np.stack(images).astype(np.float32) / 255.0


def dataset_images(config, count):
  """The first `count` images of the held-out split, float32 in [0, 1]."""
  images = []
  for batch in datasets.get_dataset(config).eval_batches():
    images.extend(np.asarray(batch))
    if len(images) >= count:
      return np.stack(images[:count])
  raise ValueError(f"from_dataset={count} asks for more images than the held-out split gives ({len(images)})")


def parse_labels(labels, num_classes):
  """'0,1,2' -> int32 `(3,)`, each in [0, num_classes)."""
  try:
    values = [int(v) for v in str(labels).split(",") if v.strip()]
  except ValueError:
    raise ValueError(f"labels={labels!r} must be comma-separated integers, e.g. 0,1,2") from None
  if not values or min(values) < 0 or max(values) >= num_classes:
    raise ValueError(f"labels={labels!r} must be one or more integers in [0, {num_classes})")
  return np.asarray(values, np.int32)


def grid_image(rows, padding=2, min_width=384):
  """Rows of `(n, H, W, C)` images in [0, 1] -> one uint8 grid, n columns, enlarged to >= `min_width` px."""
  n, h, w, c = rows[0].shape
  grid = np.zeros((len(rows) * (h + padding) + padding, n * (w + padding) + padding, c), np.uint8)
  for r, row in enumerate(rows):
    for i, image in enumerate(np.clip(np.asarray(row) * 255.0, 0, 255).round().astype(np.uint8)):
      top, left = padding + r * (h + padding), padding + i * (w + padding)
      grid[top:top + h, left:left + w] = image
  scale = max(1, min_width // grid.shape[1])
  return grid.repeat(scale, axis=0).repeat(scale, axis=1)


def _sampling_options(config, eps):
  """The PC options of `config.sampling`, read as the sampler registry reads them (`sampling.config_options`)."""
  return dataclasses.asdict(sampling.config_options("pc", config.sampling, eps))


def _guided_samples(config, model, sde, variables, labels, guidance_scale, eps, rng, guide=None):
  """Samples of the classes `labels` from a class-conditional model with classifier-free guidance w =
  `guidance_scale` (on `sampling.guidance_interval`), or autoguidance by `guide`, by the sampler of
  `config.sampling`."""
  config = config.copy_and_resolve_references()
  config.sampling.guidance_scale = float(guidance_scale)
  shape = (len(labels),) + get_data_shape(config)
  sample_fn = sampling.get_sampling_fn(config, sde, model, shape, datasets.get_data_inverse_scaler(config), eps,
                                       mesh=parallel.make_mesh(jax.devices()[:1]), guide=guide)
  return sample_fn(rng, variables, jnp.asarray(labels))


def edit(config, workdir, mode, *, images=(), from_dataset=0, mask="half", labels=None, guidance_scale=1.0,
         seed=0, name=None):
  """Edits images with the score model of `workdir` and writes a PNG grid; returns its path.

  Args:
    mode: "inpaint", "colorize" or "conditional".
    images: image files to edit (inpaint, colorize); or
    from_dataset: the number of held-out images to edit instead.
    mask: inpaint: a name in `MASKS` or a mask image file (white = known).
    labels: conditional: comma-separated class labels (or a sequence of ints), one sample each.
    guidance_scale: conditional: the weight of grad log p(y | x(t)), or for a class-conditional model the
      classifier-free guidance weight w.
    seed: the sampler's PRNG seed.
    name: the file name stem (default: the mode, the mask and the checkpoint step).

  Raises:
    ValueError: a bad mode, input, mask, label or config key, or no checkpoint (before any compile).
  """
  if mode not in MODES:
    raise choice_error("mode", mode, MODES)
  # The inputs are checked against `config` first (None: the run's config.json), which must agree with the run's.
  config = trained_run_config(workdir) if config is None else prepare_config(config)
  if config.data.autoencoder:
    raise ValueError(f"--mode={mode} edits pixels, but this model's data are the latents of data.autoencoder="
                     f"{config.data.autoencoder!r}: editing latent runs is not supported")
  size, channels = config.data.image_size, config.data.num_channels
  guided = mode == "conditional" and config.model.num_classes > 0  # classifier-free guidance
  if mode == "conditional":
    if not guided:
      validate_classifier_config(config)
    if images or from_dataset:
      raise ValueError("mode='conditional' draws new samples; it takes --labels, not --image or --from_dataset")
    if labels is None:
      raise ValueError("mode='conditional' needs labels, e.g. --labels=0,1,2")
    labels = parse_labels(labels if isinstance(labels, str) else ",".join(map(str, labels)),
                          config.model.num_classes if guided else config.classifier.num_classes)
    if guided and guidance_scale < 0:
      raise ValueError(f"guidance_scale={guidance_scale} must be >= 0 (classifier-free guidance weight w)")
  else:
    if bool(images) == bool(from_dataset):
      raise ValueError(f"mode={mode!r} needs exactly one of --image=PATH[,PATH...] and --from_dataset=N")
    if mode == "colorize" and channels < 2:
      raise ValueError(f"colorize needs a colour model; data.num_channels={channels}")
    mask_array = get_mask(mask, size, seed) if mode == "inpaint" else None
    originals = read_images(images, size, channels) if images else dataset_images(config, from_dataset)

  config = trained_run_config(workdir, config)  # the run's own config.json, with the sampling section of `config`
  run = RunSetup(config, companions=("guide",))  # its path, network and guide (read once); never its teacher
  eps = run.sampling_eps
  model, variables, step = trained_model.load_model(workdir)
  sde = run.sde.bind(variables)  # a learned schedule's parameters are the model's
  score_fn = get_score_fn(sde, model, variables, continuous=config.training.continuous)
  scaler, inverse_scaler = datasets.get_data_scaler(config), datasets.get_data_inverse_scaler(config)
  options, rng = _sampling_options(config, eps), jax.random.PRNGKey(seed)
  start = time.time()
  logging.info("%s with checkpoint %d: %d steps of %s + %s", mode, step, sde.N, options["predictor"],
               options["corrector"])
  if mode == "inpaint":
    out = controllable.pc_inpaint(rng, score_fn, sde, scaler(jnp.asarray(originals)), mask_array, **options)
    rows = [originals, mask_array * originals + (1 - mask_array) * 0.5, np.asarray(inverse_scaler(out.samples))]
    tag = mask if mask in MASKS else os.path.splitext(os.path.basename(mask))[0]
  elif mode == "colorize":
    gray = originals.mean(axis=-1, keepdims=True)
    out = controllable.pc_colorize(rng, score_fn, sde, scaler(jnp.asarray(gray)), channels=channels, **options)
    rows = [originals, np.repeat(gray, channels, axis=-1), np.asarray(inverse_scaler(out.samples))]
    tag = None
  elif guided:
    out = _guided_samples(config, model, sde, variables, labels, guidance_scale, eps, rng, run.guide)
    rows = [np.asarray(out.samples)]
    tag = f"cfg{guidance_scale:g}"
  else:
    classifier_model, classifier_variables = classifier.load_classifier(config, workdir)
    log_prob_grad_fn = classifier.get_log_prob_grad_fn(config, classifier_model, classifier_variables)
    out = controllable.pc_conditional_sample(rng, score_fn, log_prob_grad_fn, sde, jnp.asarray(labels),
                                             (len(labels), size, size, channels), scale=guidance_scale, **options)
    rows = [np.asarray(inverse_scaler(out.samples))]
    tag = f"scale{guidance_scale:g}"
  logging.info("%s: %d network evaluations in %.1f s", mode, int(out.nfe), time.time() - start)

  directory = os.path.join(workdir, EDIT_DIR)
  os.makedirs(directory, exist_ok=True)
  path = os.path.join(directory, (name or "_".join(filter(None, [mode, tag, f"step{step}"]))) + ".png")
  grid = grid_image(rows)
  Image.fromarray(grid[..., 0] if channels == 1 else grid).save(path)
  return path
