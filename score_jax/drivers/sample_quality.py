"""Sample quality of any set of images against any other: the commands behind `main.py --mode=fid` and
`main.py --mode=fid_stats --samples=...`.

  python main.py --mode=fid --samples=runs/digits/png --ref=runs/digits/stats/digits_16_stats.npz
  python main.py --mode=fid --samples=a.npz --ref=/data/my_images --features=digits --out=report.json
  python main.py --mode=fid_stats --samples=/data/my_images --out=my_images_stats.npz

Images come from a folder or zip (`score_jax.image_folder`: PNG, JPEG, WebP), or a `.npz` with `images`
(uint8 NHWC, as `--mode=sample` writes) or `samples` (floats in [0, 1], as training snapshots and
`--mode=eval` write). A reference is images, or statistics: a `.npz` with the features of its images
(`features`, or `pool_3` as `--mode=fid_stats` of a run writes) or only their `mu` and `sigma` (then FID
alone). Features are the FID Inception-v3's pool3 (`inception`, pytorch-fid's weights: the standard FID)
or the shipped digits classifier's 64 features (`digits`: for digit-like data and offline checks; not
comparable with published FIDs). The report: FID, KID, precision and recall (k = 3), and the Inception
score for `inception`, with the feature network's name.
"""

import json
import os

import numpy as np
from absl import logging

from score_jax import image_folder
from score_jax.metrics import distances

FEATURES = ("inception", "digits")
PRECISION_RECALL_K = 3


def load_images(path, what="--samples"):
  """uint8 NHWC images of a folder, zip or `.npz` (see the module's docstring); errors name `what`."""
  path = str(path)
  if path.endswith(".npz"):
    if not os.path.isfile(path):
      raise ValueError(f"{what}={path!r} does not exist")
    with np.load(path, allow_pickle=False) as data:
      if "images" in data:
        images = np.asarray(data["images"])
      elif "samples" in data:
        images = np.clip(np.asarray(data["samples"], np.float64) * 255.0, 0, 255).astype(np.uint8)  # as eval
      else:
        raise ValueError(f"{path!r} has no 'images' (uint8) or 'samples' ([0, 1]) array; it has: "
                         f"{', '.join(data.files)}")
    if images.ndim != 4 or images.dtype != np.uint8:
      raise ValueError(f"{path!r}: expected NHWC images, got {images.dtype} of shape {images.shape}")
    return images
  files = image_folder.ImageFiles(path, what=what)
  files.scan()
  images = [files[i] for i in range(len(files))]
  shapes = sorted({image.shape for image in images})
  if len(shapes) > 1:
    raise ValueError(f"the images of {path!r} have {len(shapes)} different shapes ({shapes[0]}, {shapes[-1]}, ...); "
                     "metrics compare images of one size")
  return np.stack(images)


def feature_network(name, config=None):
  """`features_fn(uint8 NHWC images) -> (features (N, D), logits (N, K))` of the network `name`.

  `inception` reads its weights as evaluation does (`eval.inception_path`, `eval.inception_url`,
  `eval.inception_cache_dir` of `config`, default the base config's); greyscale images are repeated to
  three channels. `digits` averages colour images to one channel.
  """
  if name not in FEATURES:
    raise ValueError(f"--features={name!r} is not valid; choose one of: {', '.join(FEATURES)}")
  if name == "digits":
    from score_jax.metrics import digits

    digits_fn = digits.digits_features_fn()

    def features_fn(images):
      images = images if images.shape[-1] == 1 else np.rint(images.mean(-1, keepdims=True)).astype(np.uint8)
      output = digits_fn(images)
      return output.features, output.logits

    return features_fn
  from score_jax import base_config
  from score_jax.metrics import inception

  ev = (config if config is not None else base_config.get_config()).eval
  inception_fn = inception.get_inception_fn(path=ev.inception_path or None, url=ev.inception_url or None,
                                            cache_dir=ev.inception_cache_dir or None)

  def features_fn(images):
    output = inception_fn(np.repeat(images, 3, axis=-1) if images.shape[-1] == 1 else images)
    return output.pool3, output.logits

  return features_fn


def _stored_features(path, network):
  """`(features or None, mu, sigma)` of a statistics file."""
  with np.load(path, allow_pickle=False) as data:
    stored = str(data["feature_network"]) if "feature_network" in data else ("inception" if "pool_3" in data else None)
    if stored is not None and stored != network:
      raise ValueError(f"{path!r} holds {stored} features; compare with --features={stored} (not {network})")
    features = data["features"] if "features" in data else data["pool_3"] if "pool_3" in data else None
    if features is not None:
      return np.asarray(features), *distances.feature_statistics(features)
    if "mu" in data and "sigma" in data:
      return None, np.asarray(data["mu"]), np.asarray(data["sigma"])
  raise ValueError(f"{path!r} holds neither images nor feature statistics (features / pool_3, or mu and sigma)")


def _is_statistics(path):
  if not str(path).endswith(".npz") or not os.path.isfile(path):
    return False
  with np.load(path, allow_pickle=False) as data:
    return "images" not in data and "samples" not in data


def compare(samples, ref, *, features="inception", config=None, features_fn=None):
  """The report of `samples` (a path) against `ref` (a path to images or statistics); see the module."""
  features_fn = features_fn or feature_network(features, config)
  images = load_images(samples)
  if _is_statistics(ref):
    ref_features, mu, sigma = _stored_features(ref, features)
    num_ref = None if ref_features is None else len(ref_features)
  else:
    ref_features, _ = features_fn(load_images(ref, "--ref"))
    mu, sigma = distances.feature_statistics(ref_features)
    num_ref = len(ref_features)
  sample_features, logits = features_fn(images)
  report = {"feature_network": features, "samples": str(samples), "reference": str(ref),
            "num_samples": len(images), "num_reference": num_ref,
            "fid": distances.frechet_distance(*distances.feature_statistics(sample_features), mu, sigma)}
  if ref_features is not None:
    report["kid"] = distances.kernel_inception_distance(ref_features, sample_features)
    report["precision"], report["recall"] = distances.precision_recall(ref_features, sample_features,
                                                                        k=PRECISION_RECALL_K)
  else:
    logging.warning("%s holds only mu and sigma: FID alone (KID, precision and recall need the features)", ref)
  if features == "inception":
    report["inception_score"] = distances.inception_score(logits)
  return report


def write_report(report, out=None):
  text = json.dumps(report, indent=1)
  if out:
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out + ".tmp", "w") as f:
      f.write(text)
    os.replace(out + ".tmp", out)
  return text


def write_statistics(samples, out, *, features="inception", config=None, features_fn=None):
  """The features of the images at `samples`, with their mean and covariance, to the `.npz` `out`."""
  if not str(out).endswith(".npz"):
    raise ValueError(f"--out={out!r}: statistics are written to a .npz file")
  features_fn = features_fn or feature_network(features, config)
  values, _ = features_fn(load_images(samples))
  mu, sigma = distances.feature_statistics(values)
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  tmp = str(out)[:-len(".npz")] + ".tmp.npz"
  np.savez_compressed(tmp, features=values, mu=mu, sigma=sigma, feature_network=np.asarray(features))
  os.replace(tmp, out)
  logging.info("Wrote the %s statistics of %d images of %s to %s", features, len(values), samples, out)
  return out
