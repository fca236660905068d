"""`main.py --mode=eval` on the toy: held-out loss and sample plots per checkpoint, resumable."""

import json
import os

import numpy as np

from score_jax import evaluate, train
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
  # Finished checkpoints are not recomputed: a changed report on disk is returned as it is.
  with open(tmp_path / "eval" / "report_1.json", "w") as f:
    json.dump({"ckpt": 1, "marker": True}, f)
  again = evaluate.evaluate(config, workdir)
  assert again[1] == {"ckpt": 1, "marker": True}
  assert again[2]["eval_loss"] == reports[2]["eval_loss"]
