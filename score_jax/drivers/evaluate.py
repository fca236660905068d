"""`evaluate(config, workdir)`: held-out loss, likelihood and samples for each snapshot checkpoint.

For flat (2-D toy) data the report has the held-out NLL in nats/dim and the
sliced Wasserstein distance between samples and held-out data; for images,
bits/dim (dequantised, `score_jax.likelihood.bits_per_dim`). Models trained on a
likelihood bound (`training.objective='vdm'`, `training.likelihood_weighting`)
also report the held-out ELBO (`elbo_nats_per_dim` / `elbo_bpd`, `score_jax.elbo`).

Checkpoint k is the snapshot of step `k * training.snapshot_freq`, as in the
reference. Each finished checkpoint leaves `report_<k>.json` in the eval folder
and is skipped when evaluation is run again; within a checkpoint, every sampling
round and likelihood batch is saved in `ckpt_<k>/` as it finishes, so a killed
evaluation resumes without recomputing or skipping anything (the reference's
resumed bits/dim loop skipped batches: see docs/differences.md#eval-resume).

With several processes (`main.py --coordinator_address=...`), every sampling round and
likelihood batch is split over all devices of all processes, each process computing its share;
the results are gathered on every process, and process 0 alone writes files, so the report is
that of a single-process run. The workdir must be shared by all processes (as for checkpoints).
"""

import json
import os
import time

import jax
import numpy as np
from absl import logging

import tqdm

from score_jax import checkpoint, parallel, plotting, toy_data, trained_model
from score_jax.metrics import distances
from score_jax.run_setup import RunSetup, trained_run_config
from score_jax.train_state import MODEL_ITEM, OBJECTIVE_ITEM


def _wait_for_step(manager, step, timeout):
  deadline = time.time() + timeout
  while True:
    manager.reload()
    if step in manager.all_steps():
      return True
    if time.time() >= deadline:
      return False
    logging.info("Waiting for the checkpoint of step %d ...", step)
    time.sleep(min(60.0, max(1.0, deadline - time.time())))


def _rounds(directory, name, num_rounds, compute_fn):
  """Runs `compute_fn(r) -> dict of arrays` for r < num_rounds, each result saved as `<name>_<r>.npz`.

  A round already on disk is loaded instead of recomputed, so an evaluation killed at any point
  resumes where it stopped; rounds are deterministic in r, so the totals equal an uninterrupted run's.
  Process 0 decides which rounds exist, so that all processes compute the same rounds together.
  """
  results = []
  for r in tqdm.trange(num_rounds, desc=name, disable=jax.process_index() != 0):
    path = os.path.join(directory, f"{name}_{r}.npz")
    if parallel.from_process_0(np.asarray(os.path.exists(path))):
      with np.load(path) as saved:
        results.append(dict(saved))
      continue
    result = parallel.gather(compute_fn(r))  # the whole round, on every process
    if jax.process_index() == 0:
      np.savez(path + ".tmp.npz", **result)
      os.replace(path + ".tmp.npz", path)  # atomic: a round exists only when complete
    results.append(result)
  return results


def _sample(config, run, state, rng, directory):
  num_rounds = -(-config.eval.num_samples // config.eval.batch_size)
  sample_fn = run.sampler(config.eval.batch_size)

  def one_round(r):
    out = sample_fn(jax.random.fold_in(rng, r), state.variables(ema=True))
    return {"samples": out.samples, "nfe": out.nfe}

  rounds = _rounds(directory, "samples", num_rounds, one_round)
  samples = np.concatenate([r["samples"] for r in rounds])[:config.eval.num_samples]
  return samples, int(sum(int(r["nfe"]) for r in rounds))


def _negative_log_likelihood(config, run, state, rng, directory):
  """Mean held-out NLL: bits/dim of 8-bit images (dequantised), or nats/dim of flat data."""
  from score_jax import likelihood

  ev = config.eval
  repeats = ev.bpd_num_repeats
  flat = len(run.data_shape) == 1
  hutchinson = ev.hutchinson
  if flat:
    logp_fn = likelihood.get_log_likelihood_fn(config, run.sde, run.model, hutchinson=hutchinson,
                                               num_repeats=repeats, mesh=run.mesh)
    nll_fn = lambda rng, variables, x: -logp_fn(rng, variables, x).logp / x.shape[1]
  else:
    bpd_fn = likelihood.get_likelihood_fn(config, run.sde, run.model, run.data.inverse_scaler,
                                          hutchinson=hutchinson, num_repeats=repeats, mesh=run.mesh)
    nll_fn = lambda rng, variables, x: bpd_fn(rng, variables, x).bpd
  batches = list(run.dataset.eval_batches(split="train" if ev.bpd_dataset == "train" else "eval"))  # local parts
  rounds = _rounds(directory, "nll", len(batches), lambda i: {
      "nll": nll_fn(jax.random.fold_in(rng, i), state.variables(), parallel.shard_batch(run.mesh,
                                                                                         run.scaler(batches[i])))})
  return ("nll_nats_per_dim" if flat else "bpd"), float(np.mean(np.concatenate([r["nll"] for r in rounds])))


def _elbo(config, run, state, rng, directory):
  """Mean held-out ELBO (Kingma et al. 2021, `score_jax.elbo`): bits/dim of 8-bit images, nats/dim of flat data.

  Each batch averages `eval.elbo_num_times` antithetic time draws per example (an unbiased estimate).
  """
  from score_jax import elbo, objectives
  from score_jax.objectives.vdm import elbo_start

  elbo_fn = jax.jit(elbo.get_elbo_fn(run.sde, run.model, t0=elbo_start(run.sde, run.objective.settings),
                                     levels=objectives.pixel_levels(config)))
  num_times = config.eval.elbo_num_times
  shape = run.data_shape
  flat = len(shape) == 1

  def one_batch(i, batch):
    x = parallel.shard_batch(run.mesh, run.scaler(batch))
    nats = sum(elbo_fn(jax.random.fold_in(jax.random.fold_in(rng, i), k), state.variables(), x)
               for k in range(num_times)) / num_times
    return {"elbo": elbo.per_dim(nats, shape) if flat else elbo.bits_per_dim(nats, shape)}

  batches = list(run.dataset.eval_batches(split="train" if config.eval.bpd_dataset == "train" else "eval"))
  rounds = _rounds(directory, "elbo", len(batches), lambda i: one_batch(i, batches[i]))
  return ("elbo_nats_per_dim" if flat else "elbo_bpd"), float(np.mean(np.concatenate([r["elbo"] for r in rounds])))


def has_bound(config):
  """Whether evaluation reports the ELBO (`elbo_*`): for objectives that train it (`vdm`, likelihood
  weighting), or any model with `eval.enable_elbo`."""
  return (config.training.objective == "vdm" or bool(config.training.likelihood_weighting)
          or bool(config.eval.enable_elbo))


def _features_fn(config):
  """The FID Inception-v3 feature extractor named by `eval.inception_path` / `eval.inception_url`."""
  from score_jax.metrics import inception

  ev = config.eval
  return inception.get_inception_fn(path=ev.inception_path or None, url=ev.inception_url or None,
                                    cache_dir=ev.inception_cache_dir or None)


def _to_uint8(images):
  """The reference's cast before the Inception network: clip(x * 255, 0, 255) as uint8."""
  return np.clip(np.asarray(images) * 255.0, 0, 255).astype(np.uint8)


def _digits_fd(config, samples):
  """Fréchet distance of digit samples to the held-out digits in the feature space of a small
  classifier trained by score_jax (`score_jax.metrics.digits`) -- not FID."""
  from score_jax.metrics import digits as digits_metrics
  from score_jax.toy_data import DIGITS_TRAIN_SIZE, load_digits

  held_out = load_digits(config.data.image_size)[0][DIGITS_TRAIN_SIZE:]
  return digits_metrics.digits_frechet_distance(samples, held_out)


# A data set's own measure of its samples: data.dataset -> (report key, metric(config, samples)).
DATASET_METRICS = {
    "checkerboard": ("on_checkerboard", lambda config, samples: toy_data.on_checkerboard(samples)),  # on the squares
    "digits": ("digits_fd", _digits_fd),
}


def stats_path(config, workdir):
  """Where `--mode=fid_stats` writes and evaluation reads the data set's Inception features."""
  if config.eval.stats_path:
    return config.eval.stats_path
  return os.path.join(workdir, "stats", f"{config.data.dataset.lower()}_{config.data.image_size}_stats.npz")


def compute_fid_stats(config, workdir):
  """Inception pool3 features of every training image (uint8, no dequantisation), as the reference."""
  run = RunSetup(config, companions=())
  config = run.config  # prepared once (`run_setup.prepare_config`)
  source = getattr(run.dataset, "train_source", None)
  if source is None:
    raise ValueError(f"--mode=fid_stats needs an image data set with a training split, not {config.data.dataset!r}")
  features_fn = _features_fn(config)
  batch = config.eval.batch_size
  pool3 = []
  for start in tqdm.trange(0, len(source), batch, desc="data features", disable=jax.process_index() != 0):
    images = np.stack([np.asarray(source[i]) for i in range(start, min(start + batch, len(source)))])
    pool3.append(features_fn(images).pool3)
  pool3 = np.concatenate(pool3)
  path = stats_path(config, workdir)
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  mu, sigma = distances.feature_statistics(pool3)
  np.savez_compressed(path + ".tmp.npz", pool_3=pool3, mu=mu, sigma=sigma)
  os.replace(path + ".tmp.npz", path)
  logging.info("Wrote the Inception statistics of %d training images to %s", len(pool3), path)
  return path


def _sample_quality(config, workdir, samples, features_fn):
  """FID, KID and Inception score of image samples against the data set's statistics."""
  path = stats_path(config, workdir)
  if not os.path.exists(path):
    raise ValueError(f"no data statistics at {path}: run `python main.py --config=... --workdir={workdir} "
                     "--mode=fid_stats` first, or set eval.stats_path (or eval.enable_fid=False)")
  with np.load(path) as stats:
    data_pool3, mu, sigma = stats["pool_3"], stats["mu"], stats["sigma"]
  out = features_fn(_to_uint8(samples))
  return {"fid": distances.frechet_distance(mu, sigma, *distances.feature_statistics(out.pool3)),
          "kid": distances.kernel_inception_distance(data_pool3, out.pool3),
          "inception_score": distances.inception_score(out.logits)}


def _restore_for_evaluation(manager, step, target):
  """`target` (a train state) with the model of checkpoint `step` (`trained_model.restore_model_item`: a
  checkpoint of the one-item layout too) and, when the objective has state, the objective's item; the optimizer's
  state is not read."""
  items = target.checkpoint_items()
  items[MODEL_ITEM] = trained_model.restore_model_item(manager, step, items[MODEL_ITEM])
  if OBJECTIVE_ITEM in items:
    items.update(checkpoint.restore_item(manager, step, {OBJECTIVE_ITEM: items[OBJECTIVE_ITEM]}))
  return target.from_checkpoint_items(items)


def evaluate(config, workdir, eval_folder="eval"):
  """Evaluates checkpoints `eval.begin_ckpt .. eval.end_ckpt`; returns their reports."""
  config = trained_run_config(workdir, config)  # the run's own config.json, with the eval / sampling sections
  teacher_workdir = config.training.teacher_workdir
  has_teacher = not teacher_workdir or os.path.isdir(teacher_workdir)
  if config.eval.enable_loss and not has_teacher:
    logging.warning("The teacher %s (training.teacher_workdir) is gone: evaluating without the loss, which needs it",
                    teacher_workdir)
    config.eval.enable_loss = False
  run = RunSetup(config, companions=("teacher", "guide") if has_teacher else ("guide",))
  if not run.objective.generative and (config.eval.enable_sampling or config.eval.enable_bpd):
    logging.warning("training.objective=%r trains an autoencoder: evaluating its held-out loss alone (no samples, "
                    "no likelihood)", config.training.objective)
    config.eval.enable_sampling = config.eval.enable_bpd = False
  eval_dir = os.path.join(workdir, eval_folder)
  os.makedirs(eval_dir, exist_ok=True)
  manager = checkpoint.get_manager(os.path.join(workdir, checkpoint.SNAPSHOT_DIR))
  target = jax.jit(run.initial_state, out_shardings=parallel.replicated(run.mesh))(jax.random.PRNGKey(0))
  timeout = config.eval.checkpoint_timeout
  images = len(run.data_shape) == 3
  features_fn = _features_fn(config) if images and config.eval.enable_sampling and config.eval.enable_fid else None
  reports = {}
  for ckpt in range(config.eval.begin_ckpt, config.eval.end_ckpt + 1):
    report_path = os.path.join(eval_dir, f"report_{ckpt}.json")
    if parallel.from_process_0(np.asarray(os.path.exists(report_path))):  # the same decision on every process
      with open(report_path) as f:
        reports[ckpt] = json.load(f)
      logging.info("Checkpoint %d already evaluated: %s", ckpt, reports[ckpt])
      continue
    step = ckpt * config.training.snapshot_freq
    if not parallel.from_process_0(np.asarray(_wait_for_step(manager, step, timeout))):
      logging.warning("No checkpoint for step %d (checkpoint %d) in %s; stopping.", step, ckpt, manager.directory)
      break
    state = _restore_for_evaluation(manager, step, target)
    report = {"ckpt": ckpt, "step": step}
    rounds_dir = os.path.join(eval_dir, f"ckpt_{ckpt}")  # finished rounds of this checkpoint
    os.makedirs(rounds_dir, exist_ok=True)
    if config.eval.enable_loss:
      report["eval_loss"] = float(_rounds(rounds_dir, "loss", 1, lambda _: {
          "loss": run.eval_loss(state, config.eval.num_eval_batches)})[0]["loss"])
    rng = jax.random.fold_in(jax.random.PRNGKey(config.seed + 1), ckpt)
    if config.eval.enable_bpd:
      key, value = _negative_log_likelihood(config, run, state, jax.random.fold_in(rng, 1), rounds_dir)
      report[key] = value
    if has_bound(config):  # far cheaper than the ODE's likelihood: reported whenever the objective has it
      key, value = _elbo(config, run, state, jax.random.fold_in(rng, 3), rounds_dir)
      report[key] = value
    if config.eval.enable_sampling:
      samples, nfe = _sample(config, run, state, rng, rounds_dir)
      reference = None
      if samples.ndim == 2:  # the whole held-out set: each process reads its part of every batch
        reference = np.concatenate([parallel.gather(parallel.shard_batch(run.mesh, batch))
                                    for batch in run.dataset.eval_batches()])
        report["sliced_wasserstein"] = distances.sliced_wasserstein(samples, reference)
      stem = os.path.join(eval_dir, f"ckpt_{ckpt}_samples")
      report["samples_png"] = f"{stem}.png"
      if jax.process_index() == 0:
        plotting.save_samples(stem, samples, reference=reference, title=f"checkpoint {ckpt}")
      if features_fn is not None:
        report.update(_sample_quality(config, workdir, samples, features_fn))
      if config.data.dataset in DATASET_METRICS:
        name, metric = DATASET_METRICS[config.data.dataset]
        report[name] = metric(config, samples)
      report["nfe_per_batch"] = nfe // max(1, -(-config.eval.num_samples // config.eval.batch_size))
    if jax.process_index() == 0:
      with open(report_path + ".tmp", "w") as f:
        json.dump(report, f, indent=1)
      os.replace(report_path + ".tmp", report_path)  # atomic: a report exists only when complete
    logging.info("Checkpoint %d: %s", ckpt, report)
    reports[ckpt] = report
  return reports
