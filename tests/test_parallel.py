"""Data parallelism: training, sampling, likelihood and evaluation on 1 device or process, and on
4 (fake CPU) devices or 2 processes (jax.distributed on localhost), give the same numbers."""

import json
import os
import subprocess
import sys

import numpy as np

from score_jax import run_setup

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

TRAIN_SCRIPT = """
import sys, numpy as np, jax
from score_jax.drivers import train
from tests.helpers import tiny_toy_config
config = tiny_toy_config(**{"training.n_iters": 20, "training.batch_size": 64})
state = train.train_and_evaluate(config, sys.argv[3])
assert jax.device_count() == int(sys.argv[2]), jax.devices()
leaves = jax.tree_util.tree_leaves((state.params, state.ema_params))
np.savez(sys.argv[1], *[np.asarray(x) for x in leaves])
"""


def _child_env(device_count=None):
  """This process's environment for a child on the CPU: its XLA_FLAGS (so the child compiles at this
  process's XLA optimisation level, tests/conftest.py), less any fake device count, plus `device_count`."""
  flags = [flag for flag in os.environ.get("XLA_FLAGS", "").split()
           if not flag.startswith("--xla_force_host_platform_device_count")]
  if device_count is not None:
    flags.append(f"--xla_force_host_platform_device_count={device_count}")
  return dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=" ".join(flags))


def test_children_compile_at_this_process_optimisation_level(monkeypatch):
  monkeypatch.setenv("XLA_FLAGS", "--xla_backend_optimization_level=0 --xla_force_host_platform_device_count=8")
  assert _child_env(4)["XLA_FLAGS"] == ("--xla_backend_optimization_level=0 "
                                        "--xla_force_host_platform_device_count=4")
  assert _child_env()["XLA_FLAGS"] == "--xla_backend_optimization_level=0"
  monkeypatch.delenv("XLA_FLAGS")
  assert _child_env()["XLA_FLAGS"] == ""


def _run_on_devices(script, tmp_path, device_counts=(1, 4), timeout=300):
  """Runs `script OUT DEVICES WORKDIR` once per device count (fake CPU devices), all at once; their npz files."""
  logs = {n: tmp_path / f"devices_{n}.log" for n in device_counts}
  processes = {n: subprocess.Popen(
      [sys.executable, "-c", script, str(tmp_path / f"out_{n}.npz"), str(n), str(tmp_path / f"run{n}")],
      cwd=REPO, env=_child_env(n),
      stdout=logs[n].open("w"), stderr=subprocess.STDOUT) for n in device_counts}
  _wait(processes.values(), timeout, logs.values())
  return [dict(np.load(tmp_path / f"out_{n}.npz")) for n in device_counts]


def _wait(processes, timeout, logs):
  """Waits for every process; fails with the end of each log unless all exit with 0."""
  try:
    codes = [p.wait(timeout=timeout) for p in processes]
  finally:
    for p in processes:
      p.kill()
  assert set(codes) == {0}, "\n".join(f"{log}: {log.read_text()[-2000:]}" for log in logs)


def test_four_devices_match_one_device(tmp_path):
  one, four = _run_on_devices(TRAIN_SCRIPT, tmp_path)
  assert len(one) == len(four)
  for key in one:
    np.testing.assert_allclose(one[key], four[key], rtol=2e-5, atol=2e-6, err_msg=key)


SAMPLE_SCRIPT = """
import sys, numpy as np, jax, flax.linen as nn
from score_jax import likelihood, parallel, sampling, sde as sde_lib
from tests.helpers import tiny_toy_config
devices = int(sys.argv[2])
assert jax.device_count() == devices, jax.devices()
mesh = parallel.make_mesh()


class GaussianScore(nn.Module):  # exact for N(0, I) data under VE: s(x, sigma) = -x / (1 + sigma^2)
  @nn.compact
  def __call__(self, x, sigma, train=False):
    return -self.param("scale", nn.initializers.ones, (x.shape[-1],)) * x / (1.0 + sigma[:, None]**2)


config = tiny_toy_config(**{"training.sde": "vesde"})  # PC: reverse diffusion + Langevin (batch norms)
sde, model = sde_lib.VESDE(sigma_min=0.01, sigma_max=4.0, N=20), GaussianScore()
variables = model.init(jax.random.key(0), np.zeros((1, 2), np.float32), np.ones((1,), np.float32))
shape, out = (32, 2), {}

def check_split(x):  # the batch lies split over every device
  assert len(x.sharding.device_set) == devices and x.addressable_shards[0].data.shape[0] == 32 // devices

pc = sampling.get_sampling_fn(config, sde, model, shape, lambda x: x, eps=1e-3)(jax.random.key(1), variables)
config.sampling.method, config.sampling.steps = "dpm_solver", 6
dpm = sampling.get_sampling_fn(config, sde, model, shape, lambda x: x, eps=1e-3)(jax.random.key(2), variables)
# A public sampler runs split like its latent: z from prior_draw, the same draw as z=None.
draw = jax.jit(sampling.prior_draw, static_argnums=(1, 2), out_shardings=parallel.data_sharded(mesh))
score_fn = lambda x, t: -x / (1.0 + sde.sigma(t)[:, None]**2)
ddim = sampling.sample(jax.random.key(3), score_fn, sde, shape, method="ddim", steps=5, eta=1.0,
                       z=draw(jax.random.key(3), sde, shape))
bpd_fn = likelihood.get_likelihood_fn(config, sde, model, lambda v: (v + 1) / 2, rtol=1e-4, atol=1e-4)
x = np.random.default_rng(0).uniform(-1, 1, shape).astype(np.float32)
bpd = bpd_fn(jax.random.key(4), variables, x)
for name, value in [("pc", pc.samples), ("dpm", dpm.samples), ("ddim", ddim.samples), ("bpd", bpd.bpd)]:
  check_split(value)
  out[name] = np.asarray(value)
out["nfe"] = np.array([int(pc.nfe), int(dpm.nfe), int(bpd.nfe)])
if devices > 1:  # a batch that does not split evenly fails before compiling, naming the batch
  for build in [lambda: sampling.get_sampling_fn(config, sde, model, (devices + 2, 2), lambda x: x, eps=1e-3),
                lambda: bpd_fn(jax.random.key(4), variables, x[:devices + 2])]:
    try:
      build()
      raise AssertionError("no ValueError")
    except ValueError as error:
      assert "batch size" in str(error) and f"device count ({devices})" in str(error), error
np.savez(sys.argv[1], **out)
"""


def test_sampling_and_likelihood_on_four_devices_match_one_device(tmp_path):
  one, four = _run_on_devices(SAMPLE_SCRIPT, tmp_path, timeout=120)
  np.testing.assert_array_equal(one["nfe"], four["nfe"])
  for name in ("pc", "dpm", "ddim", "bpd"):
    np.testing.assert_allclose(one[name], four[name], rtol=1e-5, atol=1e-5, err_msg=name)


def _free_port():
  import socket
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def _main_on_two_processes(tmp_path, name, *flags):
  """Starts `main.py FLAGS` as 2 processes of one jax.distributed run on localhost, one CPU device each,
  compiling at this process's XLA optimisation level (their numbers are compared with this process's)."""
  port = _free_port()
  env = _child_env()
  logs = [tmp_path / f"{name}_{i}.log" for i in range(2)]
  processes = [subprocess.Popen(
      [sys.executable, "main.py", "--config=tests/configs/tiny_checkerboard.py", f"--coordinator_address=localhost:{port}",
       "--num_processes=2", f"--process_id={i}", *flags], cwd=REPO, env=env, stdout=logs[i].open("w"),
      stderr=subprocess.STDOUT) for i in range(2)]
  return processes, logs


def test_two_processes_match_one_process(tmp_path):
  """`main.py` on 2 local processes (jax.distributed, gloo) trains to the parameters of 1 process, and
  evaluates a checkpoint to the report of 1 process (samples, likelihood, loss), resuming from a
  likelihood batch already on disk."""
  from score_jax import checkpoint
  from score_jax.drivers import evaluate, train
  from tests.helpers import tiny_toy_config

  processes, logs = _main_on_two_processes(tmp_path, "train", f"--workdir={tmp_path / 'two'}",
                                           "--config.training.n_iters=20")
  # Euler-Maruyama: the DDPM discretisation of reverse diffusion degenerates at beta_max / N = 1 (N = 20),
  # and its samples swamp the sliced Wasserstein distance's dependence on the held-out data.
  evaluation = {"eval.begin_ckpt": 1, "eval.end_ckpt": 1, "sampling.predictor": "euler_maruyama"}
  config = tiny_toy_config(**{"training.n_iters": 20}, **evaluation)
  single = train.train_and_evaluate(config, str(tmp_path / "one"))  # meanwhile, in this process
  _wait(processes, 300, logs)
  run = run_setup.RunSetup(config)
  manager = checkpoint.get_manager(os.path.join(tmp_path / "two", checkpoint.SNAPSHOT_DIR))
  restored = checkpoint.restore(manager, 20, run.init_state())
  for a, b in zip(jax_leaves(single), jax_leaves(restored)):
    np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6)

  # Evaluate the 1-process checkpoint on 1 and on 2 processes. Evaluation resumes inside a checkpoint:
  # the 2 processes find one finished likelihood batch (a copy of the 1-process one) and skip it.
  report = evaluate.evaluate(config, str(tmp_path / "one"))[1]
  rounds = tmp_path / "one" / "eval_two" / "ckpt_1"
  rounds.mkdir(parents=True)
  (rounds / "nll_1.npz").write_bytes((tmp_path / "one" / "eval" / "ckpt_1" / "nll_1.npz").read_bytes())
  processes, logs = _main_on_two_processes(tmp_path, "eval", f"--workdir={tmp_path / 'one'}", "--mode=eval",
                                           "--eval_folder=eval_two", "--config.training.n_iters=20",
                                           *[f"--config.{key}={value}" for key, value in evaluation.items()])
  _wait(processes, 300, logs)
  two = json.loads((tmp_path / "one" / "eval_two" / "report_1.json").read_text())
  assert sorted(two) == sorted(report)
  for key in ("eval_loss", "sliced_wasserstein", "nfe_per_batch"):
    np.testing.assert_allclose(two[key], report[key], rtol=1e-5, err_msg=key)
  # The adaptive ODE solver's error norm is a float32 sum over the batch, reduced in another order
  # across processes: step sizes, and so the likelihoods, agree to the solver's tolerance.
  np.testing.assert_allclose(two["nll_nats_per_dim"], report["nll_nats_per_dim"], rtol=1e-4)
  samples = [np.load(tmp_path / "one" / folder / "ckpt_1_samples.npz")["samples"] for folder in ("eval", "eval_two")]
  np.testing.assert_allclose(samples[0], samples[1], rtol=1e-5, atol=1e-5)
  assert sorted(os.listdir(rounds)) == sorted(os.listdir(tmp_path / "one" / "eval" / "ckpt_1"))


def jax_leaves(state):
  import jax
  return [np.asarray(x) for x in jax.tree_util.tree_leaves((state.params, state.ema_params))]
