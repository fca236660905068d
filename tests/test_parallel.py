"""Data parallelism: the same training on 1 and on 4 (fake CPU) devices gives the same parameters."""

import os
import subprocess
import sys

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

TRAIN_SCRIPT = """
import sys, numpy as np, jax
from score_jax import train
from tests.helpers import tiny_toy_config
config = tiny_toy_config(**{"training.n_iters": 20, "training.batch_size": 64})
state = train.train_and_evaluate(config, sys.argv[1])
assert jax.device_count() == int(sys.argv[3]), jax.devices()
leaves = jax.tree_util.tree_leaves((state.params, state.ema_params))
np.savez(sys.argv[2], *[np.asarray(x) for x in leaves])
"""


def _train(tmp_path, devices):
  env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}", JAX_PLATFORMS="cpu")
  out = tmp_path / f"params_{devices}.npz"
  result = subprocess.run([sys.executable, "-c", TRAIN_SCRIPT, str(tmp_path / f"run{devices}"), str(out),
                           str(devices)], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  data = np.load(out)
  return [data[k] for k in sorted(data.files, key=lambda k: int(k.split("_")[1]))]


def test_four_devices_match_one_device(tmp_path):
  one, four = _train(tmp_path, 1), _train(tmp_path, 4)
  assert len(one) == len(four)
  for a, b in zip(one, four):
    np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6)
