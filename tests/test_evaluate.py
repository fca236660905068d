"""`main.py --mode=eval` on the toy: held-out loss and sample plots per checkpoint, resumable."""

import json
import os

import numpy as np
import pytest

from score_jax import toy_data
from score_jax.drivers import evaluate, train
from tests.helpers import tiny_toy_config


def test_evaluate_reports_each_checkpoint_and_skips_finished_ones(tmp_path):
  config = tiny_toy_config(**{"eval.begin_ckpt": 1, "eval.end_ckpt": 3, "sampling.predictor": "euler_maruyama",
                              "sampling.corrector": "none"})
  workdir = str(tmp_path)
  train.train_and_evaluate(config, workdir)  # snapshots at steps 20 and 40 = checkpoints 1 and 2
  reports = evaluate.evaluate(config, workdir)
  assert sorted(reports) == [1, 2]  # checkpoint 3 does not exist: evaluation stops there
  for ckpt in (1, 2):
    report = json.load(open(tmp_path / "eval" / f"report_{ckpt}.json"))
    assert report["step"] == 20 * ckpt and np.isfinite(report["eval_loss"])
    assert np.isfinite(report["nll_nats_per_dim"]) and report["sliced_wasserstein"] > 0
    assert os.path.getsize(report["samples_png"]) > 1000
    samples = np.load(tmp_path / "eval" / f"ckpt_{ckpt}_samples.npz")["samples"]
    assert samples.shape == (config.eval.num_samples, 2) and np.isfinite(samples).all()
    assert report["on_checkerboard"] == toy_data.on_checkerboard(samples)
  # Finished checkpoints are not recomputed: a changed report on disk is returned as it is.
  with open(tmp_path / "eval" / "report_1.json", "w") as f:
    json.dump({"ckpt": 1, "marker": True}, f)
  again = evaluate.evaluate(config, workdir)
  assert again[1] == {"ckpt": 1, "marker": True}
  assert again[2]["eval_loss"] == reports[2]["eval_loss"]


def test_fid_stats_and_sample_quality_plumbing(tmp_path, monkeypatch):
  """--mode=fid_stats then eval with FID on (the Inception network replaced by a fixed random projection;
  the network itself is tested in test_inception.py, the formulas in test_distances.py)."""
  from configs import digits
  from score_jax.metrics import distances
  from score_jax.metrics import inception

  projection = np.random.default_rng(0).normal(size=(8 * 8 * 1, 16))

  def fake_features(images):
    flat = np.asarray(images, np.float32).reshape(len(images), -1) / 255.0
    pool3 = flat @ projection
    return inception.InceptionOutput(pool3=pool3, logits=pool3[:, :10])

  monkeypatch.setattr(inception, "get_inception_fn", lambda **kwargs: fake_features)
  config = digits.get_config()
  config.data.image_size = 8
  config.model.nf = 8
  config.model.ch_mult = (1,)
  config.model.attn_resolutions = ()
  config.model.num_scales = 5
  config.training.n_iters = config.training.snapshot_freq = 2
  config.training.log_freq = config.training.eval_freq = config.training.snapshot_freq_for_preemption = 2
  config.training.n_jitted_steps = 1
  config.training.batch_size = config.sampling.batch_size = 8
  config.training.snapshot_sampling = False
  config.eval.batch_size = config.eval.num_samples = 32
  config.eval.begin_ckpt = config.eval.end_ckpt = 1
  config.eval.enable_fid = True
  config.sampling.predictor, config.sampling.corrector = "euler_maruyama", "none"
  workdir = str(tmp_path)
  with pytest.raises(ValueError, match="--mode=fid_stats"):
    train.train_and_evaluate(config, workdir)
    evaluate.evaluate(config, workdir)
  path = evaluate.compute_fid_stats(config, workdir)
  stats = np.load(path)
  assert stats["pool_3"].shape == (1500, 16)  # every training digit
  report = evaluate.evaluate(config, workdir)[1]
  samples = np.load(tmp_path / "eval" / "ckpt_1_samples.npz")["samples"]
  features = fake_features(np.clip(samples * 255.0, 0, 255).astype(np.uint8))  # the reference's cast
  expected = distances.frechet_distance_from_features(stats["pool_3"], features.pool3)
  np.testing.assert_allclose(report["fid"], expected, rtol=1e-6)
  np.testing.assert_allclose(report["kid"], distances.kernel_inception_distance(stats["pool_3"], features.pool3),
                             rtol=1e-6)
  np.testing.assert_allclose(report["inception_score"], distances.inception_score(features.logits), rtol=1e-6)
  assert np.isfinite(report["eval_loss"])  # eval.num_eval_batches = 0: the whole held-out split
  assert report["digits_fd"] > 0  # the digits classifier's Frechet distance of the (untrained) samples


class _Killed(Exception):
  pass


def test_killed_evaluation_resumes_without_recomputing(tmp_path, monkeypatch):
  """Interrupt evaluation inside a checkpoint's sampling and likelihood rounds; the resumed run
  computes only the missing rounds and reports exactly the numbers of an uninterrupted run."""
  config = tiny_toy_config(**{"eval.begin_ckpt": 1, "eval.end_ckpt": 1, "eval.num_samples": 192,
                              "sampling.predictor": "euler_maruyama", "sampling.corrector": "none"})
  train.train_and_evaluate(config, str(tmp_path / "run"))
  uninterrupted = evaluate.evaluate(config, str(tmp_path / "run"), eval_folder="eval_a")[1]

  calls, kill_at = [], [4]
  original = evaluate._rounds

  def flaky_rounds(directory, name, num_rounds, compute_fn):
    def counted(r):
      calls.append((name, r))
      if len(calls) == kill_at[0]:
        raise _Killed  # "killed" while computing the 4th round
      return compute_fn(r)
    return original(directory, name, num_rounds, counted)

  monkeypatch.setattr(evaluate, "_rounds", flaky_rounds)
  with pytest.raises(_Killed):
    evaluate.evaluate(config, str(tmp_path / "run"), eval_folder="eval_b")
  done_before = calls[:3]
  calls.clear()
  kill_at[0] = None
  resumed = evaluate.evaluate(config, str(tmp_path / "run"), eval_folder="eval_b")[1]
  assert not set(calls) & set(done_before), "finished rounds were recomputed"
  # loss (1) + likelihood (4 batches) + samples (3 rounds) = 8 rounds in all.
  assert len(calls) + len(done_before) == 8
  for key in ("eval_loss", "nll_nats_per_dim", "sliced_wasserstein"):
    assert resumed[key] == uninterrupted[key], key


def test_vdm_run_reports_its_elbo(tmp_path):
  """A learned-schedule VDM run through train and eval: the ELBO beside the ODE likelihood, both finite,
  and the ELBO's rounds saved like the others."""
  config = tiny_toy_config(**{"eval.begin_ckpt": 1, "eval.end_ckpt": 1, "sampling.predictor": "euler_maruyama",
                              "sampling.corrector": "none", "training.sde": "learned_vpsde",
                              "training.objective": "vdm", "model.parameterization": "eps",
                              "model.schedule_features": 8, "eval.elbo_num_times": 2, "training.n_iters": 20})
  train.train_and_evaluate(config, str(tmp_path))
  report = evaluate.evaluate(config, str(tmp_path))[1]
  assert np.isfinite(report["elbo_nats_per_dim"]) and np.isfinite(report["nll_nats_per_dim"])
  assert (tmp_path / "eval" / "ckpt_1" / "elbo_0.npz").exists()
  assert "elbo_bpd" not in report and evaluate.has_bound(config)
