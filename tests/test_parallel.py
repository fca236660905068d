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


def _free_port():
  import socket
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def test_two_processes_match_one_process(tmp_path):
  """`main.py` on 2 local processes (jax.distributed, gloo) ends with the parameters of 1 process."""
  from score_jax import checkpoint, train
  from tests.helpers import tiny_toy_config

  port = _free_port()
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  env.pop("XLA_FLAGS", None)
  workdir = tmp_path / "two"
  logs = [open(tmp_path / f"p{i}.log", "w") for i in range(2)]
  processes = [subprocess.Popen(
      [sys.executable, "main.py", "--config=tests/configs/tiny_checkerboard.py", f"--workdir={workdir}",
       f"--coordinator_address=localhost:{port}", "--num_processes=2", f"--process_id={i}",
       "--config.training.n_iters=20"], cwd=REPO, env=env, stdout=logs[i], stderr=subprocess.STDOUT)
      for i in range(2)]
  try:
    codes = [p.wait(timeout=300) for p in processes]
  finally:
    for p in processes:
      p.kill()
  assert codes == [0, 0], (tmp_path / "p0.log").read_text()[-3000:] + (tmp_path / "p1.log").read_text()[-3000:]
  config = tiny_toy_config(**{"training.n_iters": 20})
  single = train.train_and_evaluate(config, str(tmp_path / "one"))
  run = train._Setup(config)
  manager = checkpoint.get_manager(os.path.join(workdir, checkpoint.SNAPSHOT_DIR))
  restored = checkpoint.restore(manager, 20, run.init_state())
  for a, b in zip(jax_leaves(single), jax_leaves(restored)):
    np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6)


def jax_leaves(state):
  import jax
  return [np.asarray(x) for x in jax.tree_util.tree_leaves((state.params, state.ema_params))]
