"""score_jax command line: flags only; the work is in the library.

  python main.py --config=configs/toy/checkerboard.py --workdir=runs/checkerboard --mode=train
  python main.py --config=configs/toy/checkerboard.py --workdir=runs/checkerboard --mode=eval
  python main.py --config=configs/classifier/digits.py --workdir=runs/digits --mode=train_classifier
  python main.py --config=configs/digits.py --workdir=runs/digits --mode=inpaint --from_dataset=8 --mask=half
  python main.py --config=configs/digits_cfg.py --workdir=runs/cfg --mode=conditional --labels=0,1,2 --guidance_scale=2
  python main.py --config=configs/digits_cfg.py --workdir=runs/cfg --mode=reconstruct_ema --sigma_rel=0.08
  python main.py --config=configs/digits.py --workdir=runs/digits --mode=sample --seeds=0-99 --out=runs/digits/png
  python main.py --mode=fid --samples=runs/digits/png --ref=runs/digits_ref --features=digits
"""

import importlib.util
import logging as std_logging
import os
import sys
import tempfile

from absl import app, flags, logging
from ml_collections import config_flags

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Training configuration file. The modes that read a trained run "
                                "(sample, eval, the edits, reconstruct_ema) build its model from <workdir>/config.json "
                                "and take only the sampling and eval sections from --config, which may be left out.",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and samples.")
flags.DEFINE_enum("mode", "train", ["train", "eval", "fid_stats", "train_classifier", "inpaint", "colorize",
                                    "conditional", "reconstruct_ema", "sample", "fid"],
                  "Train, evaluate checkpoints, compute the data set's (or --samples') feature statistics for FID, "
                  "train the noise-conditional classifier, edit images with the trained score model, write a "
                  "post-hoc EMA checkpoint (model.ema_type=power), write images for --seeds, or measure --samples "
                  "against --ref.")
flags.DEFINE_string("eval_folder", "eval", "Subdirectory of workdir for evaluation results.")
flags.DEFINE_multi_string("image", [], "Edit modes: input image file(s) (repeat the flag or separate by commas).")
flags.DEFINE_integer("from_dataset", 0, "Edit modes: edit this many images of the held-out split instead.")
flags.DEFINE_string("mask", "half", "--mode=inpaint: a mask image (white = known) or one of score_jax.drivers.edit.MASKS.")
flags.DEFINE_string("labels", None, "--mode=conditional: comma-separated class labels, one sample each; "
                    "--mode=sample: the labels, cycled over the seeds.")
flags.DEFINE_float("guidance_scale", 1.0, "--mode=conditional: weight of the classifier's gradient, or the "
                   "classifier-free guidance weight w of a class-conditional model (model.num_classes > 0).")
flags.DEFINE_float("sigma_rel", None, "--mode=reconstruct_ema: relative width of the post-hoc EMA (EDM2).")
flags.DEFINE_integer("ema_step", None, "--mode=reconstruct_ema: the EMA snapshot's step (default: the newest).")
flags.DEFINE_integer("seed", 0, "Edit modes: random seed of the sampler.")
flags.DEFINE_string("seeds", None, "--mode=sample: seeds and ranges, e.g. 0-49999 or 0,5,10-19: one image each.")
flags.DEFINE_string("out", None, "--mode=sample: a folder (one PNG per seed) or FILE.npz; --mode=fid: the report's "
                    "JSON file; --mode=fid_stats --samples=...: the statistics' .npz.")
flags.DEFINE_integer("step", None, "--mode=sample: the checkpoint's step (default: the newest).")
flags.DEFINE_integer("batch_size", 64, "--mode=sample: seeds per sampler call (no image depends on it).")
flags.DEFINE_integer("class", None, "--mode=sample: the class of every image (class-conditional models).")
flags.DEFINE_integer("grid", 0, "--mode=sample: also write an N x N grid of the first N^2 seeds.")
flags.DEFINE_string("samples", None, "--mode=fid / fid_stats: images: a folder, a zip or an .npz.")
flags.DEFINE_string("ref", None, "--mode=fid: reference images (folder, zip, .npz) or statistics (.npz).")
flags.DEFINE_string("features", "inception", "--mode=fid / fid_stats: the feature network: inception | digits.")
flags.DEFINE_string("coordinator_address", None, "host:port of process 0, for multi-host runs.")
flags.DEFINE_integer("num_processes", None, "Number of processes (hosts) of a multi-host run.")
flags.DEFINE_integer("process_id", None, "This process's index in a multi-host run.")
flags.DEFINE_bool("distributed", False, "Call jax.distributed.initialize() with auto-detection (TPU pods, SLURM).")


class _QuietLibraries:
  """Keeps orbax's INFO chatter out of the readable log; its warnings still pass."""

  def filter(self, record):
    return record.levelno >= std_logging.WARNING or "orbax" not in record.pathname


def _images_only():
  """Modes that measure image files and need neither a config nor a workdir."""
  return FLAGS.mode == "fid" or (FLAGS.mode == "fid_stats" and FLAGS.samples is not None)


def _missing_workdir():
  """None, or the one-line refusal of a --workdir that is no directory where the mode does not start a run:
  the others read a trained one (the image-only modes only write their log there), so they never create it."""
  if os.path.isdir(FLAGS.workdir) or (FLAGS.mode in ("train", "train_classifier", "fid_stats") and not _images_only()):
    return None
  where = f"--workdir={FLAGS.workdir} " + ("is not a directory" if os.path.exists(FLAGS.workdir) else "does not exist")
  if _images_only():
    return f"main.py: {where}; --mode={FLAGS.mode} needs no workdir: leave --workdir out or name an existing one"
  return f"main.py: {where}; --mode={FLAGS.mode} needs a training workdir (the --workdir of --mode=train)"


def _measure_images():
  from score_jax.drivers import sample_quality

  if FLAGS.samples is None:
    raise ValueError(f"--mode={FLAGS.mode} needs --samples=DIR|FILE.npz")
  if FLAGS.mode == "fid_stats":
    if not FLAGS.out:
      raise ValueError("--mode=fid_stats --samples=... needs --out=FILE.npz, where the statistics go")
    print(sample_quality.write_statistics(FLAGS.samples, FLAGS.out, features=FLAGS.features, config=FLAGS.config))
    return
  if FLAGS.ref is None:
    raise ValueError("--mode=fid needs --ref=DIR|FILE.npz (reference images or statistics)")
  report = sample_quality.compare(FLAGS.samples, FLAGS.ref, features=FLAGS.features, config=FLAGS.config)
  print(sample_quality.write_report(report, FLAGS.out))


def main(argv):
  del argv
  if _images_only() and FLAGS.workdir is None:
    logging.set_stderrthreshold(logging.INFO)
    try:
      _measure_images()
    except (ValueError, FileNotFoundError, OSError) as error:
      sys.exit(f"main.py: {error}")
    return
  if FLAGS.workdir is None:
    sys.exit("main.py: --workdir is required (the directory for checkpoints, logs and samples).")
  if FLAGS.config is None and FLAGS.mode in ("train", "train_classifier", "fid_stats"):
    sys.exit(f"main.py: --mode={FLAGS.mode} needs --config (a configuration file such as configs/toy/checkerboard.py)")
  if _missing_workdir():
    sys.exit(_missing_workdir())
  try:
    os.makedirs(FLAGS.workdir, exist_ok=True)
    with tempfile.TemporaryFile(dir=FLAGS.workdir):
      pass
  except OSError as error:
    sys.exit(f"main.py: --workdir={FLAGS.workdir} cannot be created or written: {error.strerror or error}")
  logging.get_absl_handler().use_absl_log_file("log", FLAGS.workdir)
  logging.set_stderrthreshold(logging.INFO)
  logging.get_absl_handler().addFilter(_QuietLibraries())
  import jax

  if FLAGS.coordinator_address or FLAGS.distributed:
    jax.distributed.initialize(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id)
    logging.info("Process %d of %d, %d local / %d global devices", jax.process_index(), jax.process_count(),
                 jax.local_device_count(), jax.device_count())
  from score_jax import posthoc_ema
  from score_jax.drivers import edit, evaluate, generate, train, train_classifier  # after flag parsing: fails fast

  try:
    if _images_only():
      _measure_images()
    elif FLAGS.mode == "sample":
      if FLAGS.seeds is None or FLAGS.out is None:
        raise ValueError("--mode=sample needs --seeds (e.g. 0-99) and --out (a folder, or FILE.npz)")
      print(generate.generate(FLAGS.config, FLAGS.workdir, FLAGS.seeds, FLAGS.out, step=FLAGS.step,
                              batch_size=FLAGS.batch_size, labels=FLAGS.labels, class_label=getattr(FLAGS, "class"),
                              grid=FLAGS.grid))
    elif FLAGS.mode == "train":
      train.train_and_evaluate(FLAGS.config, FLAGS.workdir)
    elif FLAGS.mode == "eval":
      evaluate.evaluate(FLAGS.config, FLAGS.workdir, FLAGS.eval_folder)
    elif FLAGS.mode == "fid_stats":
      evaluate.compute_fid_stats(FLAGS.config, FLAGS.workdir)
    elif FLAGS.mode == "train_classifier":
      train_classifier.train_classifier(FLAGS.config, FLAGS.workdir)
    elif FLAGS.mode == "reconstruct_ema":
      if FLAGS.sigma_rel is None:
        raise ValueError("--mode=reconstruct_ema needs --sigma_rel, e.g. --sigma_rel=0.08")
      directory, step = posthoc_ema.write_reconstruction(FLAGS.config, FLAGS.workdir, FLAGS.sigma_rel,
                                                         step=FLAGS.ema_step)
      print(directory)
      logging.info("Post-hoc EMA of step %d in %s: evaluate it with --mode=eval --workdir=%s", step, directory,
                   directory)
    else:
      images = [path for value in FLAGS.image for path in value.split(",") if path]
      path = edit.edit(FLAGS.config, FLAGS.workdir, FLAGS.mode, images=images, from_dataset=FLAGS.from_dataset,
                       mask=FLAGS.mask, labels=FLAGS.labels, guidance_scale=FLAGS.guidance_scale, seed=FLAGS.seed)
      print(path)
  except (ValueError, FileNotFoundError, FloatingPointError, train.NonFiniteLossError) as error:
    sys.exit(f"main.py: {error}")


def _config_keys(argv, dotted):
  """The keys of the config node at `dotted` (e.g. "training"), read from the --config file; [] if unknown."""
  path = next((a.split("=", 1)[1].split(":")[0] for a in argv if a.startswith("--config=")), None)
  try:
    spec = importlib.util.spec_from_file_location("_config_of_main", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    node = module.get_config()
    for part in filter(None, dotted.split(".")):
      node = node[part]
    return sorted(node.keys())
  except Exception:  # noqa: BLE001 -- only for the message; the real error is reported anyway
    return []


def _parse_flags(argv):
  """absl's parser, with a `--config.<key>` override that names no key of the config in one line."""
  try:
    return FLAGS(argv)
  except flags.Error as error:  # a bad value or an unknown flag
    sys.exit(f"main.py: {error}")
  except (AttributeError, KeyError) as error:  # ml_collections: no such field in a locked ConfigDict
    missing = str(error).strip("\"'")
    for arg in argv:
      name = arg.split("=", 1)[0][2:]
      parts = name.split(".")
      if arg.startswith("--config.") and missing in parts[1:]:
        section = ".".join(parts[1:parts.index(missing, 1)])
        valid = _config_keys(argv, section)
        where = f"config.{section}" if section else "the config"
        sys.exit(f"main.py: --{name}: {where} has no key {missing!r}"
                 + (f"; choose one of: {', '.join(valid)}" if valid else ""))
    raise


def _config_error_in_one_line():
  """Turns a missing or broken --config into a one-line message instead of a traceback."""
  args = sys.argv[1:]
  images_only = "--mode=fid" in args or ("--mode=fid_stats" in args and any(a.startswith("--samples=") for a in args))
  for arg in args:
    if arg.startswith("--config="):
      path = arg.split("=", 1)[1].split(":")[0]
      if not os.path.isfile(path):
        sys.exit(f"main.py: cannot read config file {path!r}")
      return
  if "--helpfull" not in sys.argv and "--help" not in sys.argv and not images_only:
    sys.exit("main.py: --config=PATH is required (for example configs/toy/checkerboard.py)")


if __name__ == "__main__":
  _config_error_in_one_line()
  app.run(main, flags_parser=_parse_flags)
