"""Images for a list of seeds from a trained model: the command behind `main.py --mode=sample`.

  python main.py --config=configs/digits.py --workdir=runs/digits --mode=sample --seeds=0-99 --out=runs/digits/png
  python main.py --config=configs/digits_cfg.py --workdir=runs/cfg --mode=sample --seeds=0-999 --out=cfg.npz --class=3

The image of seed s is the configured sampler's (`config.sampling`, guidance included) for a batch of one
drawn from `jax.random.PRNGKey(s)` (`sampling.get_seed_sampling_fn`): the same whatever `--batch_size`,
the device count or the other seeds asked for, so two checkpoints can be compared on the same seeds and a
killed run resumes by skipping the files already written. A folder gets `<seed:06d>.png` per seed; a
`.npz` gets `images` (uint8 NHWC, in the order of the seeds), `seeds`, `labels` and `manifest` once every
seed is done (the PNGs of the seeds done so far wait in `<FILE>.npz.parts/`). A class-conditional model
draws seed s of class s mod num_classes unless `--class` or `--labels` says otherwise.

A folder's `manifest.json` (the npz's `manifest`: the same JSON as a string) says how its images were
made: the workdir, checkpoint step, EMA choice, `config.sampling`, `--class`, `--labels` and each seed's
label (`run_manifest`). A run that would add images made otherwise to an `--out` is refused, as is a
folder of PNGs without a manifest; more seeds with the same settings are fine.
"""

import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import tqdm
from absl import logging
from PIL import Image

from score_jax import parallel, plotting, sampling, trained_model
from score_jax.run_setup import RunSetup, trained_run_config

MAX_SEED = 2**32 - 1  # jax.random.PRNGKey's seeds are uint32
MANIFEST = "manifest.json"  # how the images of an --out folder were made (`run_manifest`)


def parse_seeds(text):
  """'0-3,10,12-13' -> [0, 1, 2, 3, 10, 12, 13] (in the order given, each once).

  Raises:
    ValueError: a part that is neither a seed nor a range LOW-HIGH with LOW <= HIGH, or a seed outside
      [0, 2**32) (`jax.random.PRNGKey`'s uint32 seeds); the message names the part.
  """
  seeds = []
  for part in str(text).split(","):
    part = part.strip()
    if not part:
      continue
    low, dash, high = part.partition("-")
    try:
      low, high = int(low), int(high) if dash else int(low)
    except ValueError:
      raise ValueError(f"--seeds={text!r}: {part!r} is neither a seed nor a range LOW-HIGH with both ends; "
                       "write e.g. 0-99 or 0,5,10-19") from None
    if low > high:
      raise ValueError(f"--seeds={text!r}: the range {part!r} runs backwards; write {high}-{low}")
    if low < 0 or high > MAX_SEED:
      raise ValueError(f"--seeds={text!r}: {part!r} leaves [0, {MAX_SEED}] (jax.random.PRNGKey takes uint32 "
                       "seeds); write e.g. 0-99")
    seeds.extend(range(low, high + 1))
  if not seeds:
    raise ValueError(f"--seeds={text!r} must name one or more seeds, e.g. 0-99 or 0,5,10-19")
  return list(dict.fromkeys(seeds))


def seed_labels(seeds, num_classes, labels=None, class_label=None):
  """The class of each seed: `class_label` for all, `labels` (comma-separated) cycled over the seeds in
  order, or seed mod num_classes; None for an unconditional model."""
  if not num_classes:
    if labels is not None or class_label is not None:
      raise ValueError("--labels / --class need a class-conditional model (model.num_classes > 0)")
    return None
  if labels is not None and class_label is not None:
    raise ValueError("give --labels or --class, not both")
  if class_label is not None:
    values = [int(class_label)]
  elif labels is not None:
    try:
      values = [int(v) for v in str(labels).split(",") if v.strip()]
    except ValueError:
      raise ValueError(f"--labels={labels!r} must be comma-separated integers, e.g. 0,1,2") from None
  else:
    return np.asarray(seeds, np.int64) % num_classes
  if not values or min(values) < 0 or max(values) >= num_classes:
    raise ValueError(f"class labels {values} must be integers in [0, {num_classes}) (model.num_classes)")
  return np.resize(np.asarray(values, np.int64), len(seeds))


def to_uint8(images):
  """Samples in [0, 1] -> uint8, rounded to the nearest level."""
  return np.clip(np.rint(np.asarray(images, np.float32) * 255.0), 0, 255).astype(np.uint8)


def _write_png(path, image):
  tmp = path + ".tmp.png"
  Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(tmp)
  os.replace(tmp, path)  # a killed run leaves no half-written image under a seed's name


def _read_png(path):
  with Image.open(path) as image:
    array = np.asarray(image, np.uint8)
  return array[..., None] if array.ndim == 2 else array


def png_name(seed):
  return f"{seed:06d}.png"


def run_manifest(config, workdir, step, ema, seeds, classes, labels=None, class_label=None):
  """How the images are made, as JSON data: compared field by field when a run adds to an `--out`."""
  return json.loads(json.dumps({
      "workdir": os.path.abspath(workdir), "step": int(step), "ema": bool(ema),
      "sampling": config.sampling.to_dict(),
      "class_label": class_label,
      "labels": None if labels is None else [int(v) for v in str(labels).split(",") if v.strip()],
      "seed_labels": None if classes is None else {str(s): int(c) for s, c in zip(seeds, classes)},
  }))


def _first_difference(old, new, field=""):
  """`(field, old value, new value)` of the first difference of two manifests, or None; `seed_labels`
  are compared on the seeds both name (more seeds are fine: a manifest says how, not which)."""
  if not (isinstance(old, dict) and isinstance(new, dict)):
    return None if old == new else (field, old, new)
  keys = [k for k in new if k in old] if field == "seed_labels" else [*new, *(k for k in old if k not in new)]
  for key in keys:
    found = _first_difference(old.get(key), new.get(key), f"{field}.{key}" if field else key)
    if found:
      return found
  return None


def _refuse_if_different(old, new, out):
  found = _first_difference(old, new)
  if found:
    field, before, now = found
    raise ValueError(f"--out={out} holds images made with {field}={before!r}, not {field}={now!r} as now: "
                     "use another --out")


def _folder_manifest(folder, manifest, out):
  """The manifest to keep in `folder` (its seeds' labels merged with this run's), or ValueError if its
  images were made otherwise or their provenance is unknown."""
  path = os.path.join(folder, MANIFEST)
  if os.path.exists(path):
    with open(path) as f:
      old = json.load(f)
    _refuse_if_different(old, manifest, out)
    if manifest["seed_labels"] is not None:
      manifest = {**manifest, "seed_labels": {**old["seed_labels"], **manifest["seed_labels"]}}
    return manifest
  if os.path.isdir(folder) and any(name.endswith(".png") for name in os.listdir(folder)):
    raise ValueError(f"--out={out}: {folder} holds PNGs but no {MANIFEST} (written before manifests were, or by "
                     "something else), so their checkpoint and sampler are unknown: delete them or use another --out")
  return manifest


def _seed_summary(seeds):
  return f"{seeds}" if len(seeds) <= 6 else f"[{seeds[0]}, {seeds[1]}, ..., {seeds[-1]}] ({len(seeds)} seeds)"


def _check_complete_npz(out, manifest, seeds):
  """Refuses (ValueError) a finished `out` whose images or seeds are not those asked for."""
  with np.load(out) as saved:
    old = json.loads(str(saved["manifest"])) if "manifest" in saved.files else None
    old_seeds = saved["seeds"].tolist()
  if old is None:
    raise ValueError(f"--out={out} has no manifest (written before manifests were), so its checkpoint and "
                     "sampler are unknown: delete it or use another --out")
  _refuse_if_different(old, manifest, out)
  if old_seeds != seeds:
    raise ValueError(f"--out={out} holds seeds={_seed_summary(old_seeds)}, not seeds={_seed_summary(seeds)} as "
                     "now: use another --out")


def _write_json(path, value):
  with open(path + ".tmp", "w") as f:
    json.dump(value, f, indent=1)
  os.replace(path + ".tmp", path)


def generate(config, workdir, seeds, out, *, step=None, batch_size=64, labels=None, class_label=None, grid=0,
             ema=True):
  """Writes one image per seed of `seeds` ('0-99' or a list of ints) to `out` (a folder, or a `.npz`);
  returns `out`.

  Args:
    step: the checkpoint's step (default: the newest readable one).
    batch_size: seeds per sampler call (a multiple of the device count); does not change any image.
    labels, class_label: classes of a class-conditional model (see `seed_labels`).
    grid: also write an N x N grid of the first N^2 seeds (`grid.png` in the folder, `<FILE>_grid.png`).
    ema: the EMA parameters (default) or the raw ones.

  Raises:
    ValueError: bad seeds, labels, batch size or config, no such checkpoint, or an `out` whose images were
      made otherwise (another manifest; see the module's docstring) -- all before any compile.
  """
  config = trained_run_config(workdir, config)  # the run's own config.json, with the sampling section of `config`
  if config.data.dim:
    raise ValueError(f"--mode=sample writes images; this model's data are {config.data.dim}-D points "
                     "(data.dim): --mode=eval samples and plots them")
  seeds = parse_seeds(seeds if isinstance(seeds, str) else ",".join(str(int(s)) for s in seeds))
  mesh = parallel.make_mesh()
  if batch_size < 1:
    raise ValueError(f"--batch_size={batch_size} must be >= 1")
  parallel.check_batch("--batch_size", batch_size, mesh)
  if grid < 0 or grid * grid > len(seeds):
    raise ValueError(f"--grid={grid} needs {grid * grid} seeds; --seeds names {len(seeds)}")
  as_npz = str(out).endswith(".npz")
  folder = str(out) + ".parts" if as_npz else str(out)
  run = RunSetup(config, companions=("guide",))  # its path, network and guide (read once); never its teacher
  run.check_samples()
  model, variables, step = trained_model.load_model(workdir, ema=ema, step=step)
  classes = seed_labels(seeds, config.model.num_classes, labels, class_label)

  manifest = run_manifest(config, workdir, step, ema, seeds, classes, labels, class_label)
  if as_npz and os.path.exists(out):
    _check_complete_npz(out, manifest, seeds)
    logging.info("%s is complete; nothing to do", out)
    return out
  refusal, kept = "", manifest
  if jax.process_index() == 0:  # process 0 writes the files: its view decides
    try:
      kept = _folder_manifest(folder, manifest, out)
    except ValueError as error:
      refusal = str(error)
  done = np.array([os.path.exists(os.path.join(folder, png_name(s))) for s in seeds])
  if jax.process_count() > 1:
    refused, done = parallel.from_process_0((np.asarray(bool(refusal)), done))
    refusal = refusal or (f"--out={out}: process 0 refused to add to it" if refused else "")
  if refusal:
    raise ValueError(refusal)
  todo = [i for i in range(len(seeds)) if not done[i]]
  logging.info("Sampling %d of %d seeds (%d already written) with checkpoint %d of %s, %s", len(todo), len(seeds),
               len(seeds) - len(todo), step, workdir, config.sampling.method)
  if todo:
    shape = (batch_size,) + run.data_shape
    sample_fn = sampling.get_seed_sampling_fn(config, run.sde, model, shape, run.data.inverse_scaler,
                                              run.sampling_eps, mesh=mesh, guide=run.guide)
    if jax.process_index() == 0:
      os.makedirs(folder, exist_ok=True)
      _write_json(os.path.join(folder, MANIFEST), kept)
    nfe = []
    with tqdm.tqdm(total=len(todo), desc="samples", unit="img", disable=jax.process_index() != 0) as progress:
      for start in range(0, len(todo), batch_size):
        chunk = todo[start:start + batch_size]
        padded = chunk + [chunk[-1]] * (batch_size - len(chunk))  # the last batch: repeats, thrown away
        keys = jax.vmap(jax.random.PRNGKey)(jnp.asarray([seeds[i] for i in padded], jnp.uint32))
        batch_labels = None if classes is None else jnp.asarray(classes[padded], jnp.int32)
        output = parallel.gather(sample_fn(keys, variables, batch_labels))
        nfe.extend(np.asarray(output.nfe)[:len(chunk)].tolist())
        if jax.process_index() == 0:
          for i, image in zip(chunk, to_uint8(output.samples[:len(chunk)])):
            _write_png(os.path.join(folder, png_name(seeds[i])), image)
        progress.update(len(chunk))
    logging.info("%d images, %.1f network evaluations each on average", len(todo), float(np.mean(nfe)))
  if jax.process_index() != 0:
    return out
  images = None
  if as_npz or grid:
    images = np.stack([_read_png(os.path.join(folder, png_name(s))) for s in (seeds if as_npz else seeds[:grid ** 2])])
  if grid:
    grid_path = (str(out)[:-len(".npz")] + "_grid.png") if as_npz else os.path.join(folder, "grid.png")
    plotting.save_image_grid(grid_path, (images[:grid ** 2] + 0.5) / 255.0)  # mid-level: the grid truncates
    logging.info("Wrote %s", grid_path)
  if as_npz:
    tmp = str(out) + ".tmp.npz"
    np.savez(tmp, images=images, seeds=np.asarray(seeds, np.int64),
             labels=np.full(len(seeds), -1, np.int64) if classes is None else classes,
             manifest=np.asarray(json.dumps(manifest)))
    os.replace(tmp, out)
    shutil.rmtree(folder)
  logging.info("Wrote %d images to %s", len(seeds), out)
  return out
