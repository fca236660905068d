"""The training loop: a real run, exact resumption, kill -9, corrupt checkpoints, NaN losses, errors."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys

import jax
import numpy as np
import pytest
from absl import logging as absl_logging

from score_jax import checkpoint, datasets, posthoc_ema, run_setup, trained_model
from score_jax.drivers import loop, train
from score_jax.run_setup import validate_config
from score_jax.metric_writer import read_metrics
from tests.helpers import tiny_toy_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _final_state(config, workdir):
  """The newest snapshot of `workdir`, restored."""
  run = run_setup.RunSetup(config)
  manager = checkpoint.get_manager(os.path.join(workdir, checkpoint.SNAPSHOT_DIR))
  return checkpoint.restore(manager, manager.latest_step(), run.init_state())


def _assert_same_state(a, b):
  for x, y in zip(jax.tree_util.tree_leaves((a.params, a.ema_params, a.opt_state)),
                  jax.tree_util.tree_leaves((b.params, b.ema_params, b.opt_state))):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
  """One uninterrupted 40-step run that the other tests compare against."""
  workdir = str(tmp_path_factory.mktemp("uninterrupted"))
  config = tiny_toy_config()
  state = train.train_and_evaluate(config, workdir)
  return config, workdir, state


def test_training_writes_logs_checkpoints_and_learns(uninterrupted):
  config, workdir, state = uninterrupted
  assert int(state.step) == 40
  records = read_metrics(os.path.join(workdir, "metrics.jsonl"))
  assert [r["step"] for r in records if "loss" in r] == [10, 20, 30, 40]
  assert [r["step"] for r in records if "eval_loss" in r] == [20, 40]
  assert all(np.isfinite(r.get("loss", r.get("eval_loss"))) for r in records)
  assert os.listdir(os.path.join(workdir, "tensorboard"))
  assert sorted(os.listdir(os.path.join(workdir, checkpoint.SNAPSHOT_DIR))) == ["20", "40"]
  assert sorted(os.listdir(os.path.join(workdir, checkpoint.PREEMPTION_DIR))) == ["10", "30"]


def test_resume_continues_exactly(uninterrupted, tmp_path):
  config, _, reference = uninterrupted
  workdir = str(tmp_path)
  half = tiny_toy_config(**{"training.n_iters": 25})
  train.train_and_evaluate(half, workdir)          # stops at step 25: snapshot 25
  resumed = train.train_and_evaluate(config, workdir)
  _assert_same_state(resumed, reference)
  steps = [r["step"] for r in read_metrics(os.path.join(workdir, "metrics.jsonl")) if "loss" in r]
  assert steps == sorted(set(steps))  # no duplicated log lines after the resume
  with open(os.path.join(workdir, "config.json")) as f:  # the config of the latest run, as data
    saved = json.load(f)
  assert saved["training"]["n_iters"] == config.training.n_iters != half.training.n_iters
  assert saved["model"]["name"] == config.model.name


def test_corrupt_latest_checkpoint_falls_back_with_warning(uninterrupted, tmp_path, caplog):
  config, source, reference = uninterrupted
  workdir = str(tmp_path / "run")
  shutil.copytree(source, workdir)
  latest = os.path.join(workdir, checkpoint.SNAPSHOT_DIR, "40")
  for root, _, files in os.walk(latest):
    for name in files:
      with open(os.path.join(root, name), "wb") as f:
        f.write(b"\0garbage")
  # A half-written step (orbax's temporary directory) must be ignored too.
  os.makedirs(os.path.join(workdir, checkpoint.SNAPSHOT_DIR, "50.orbax-checkpoint-tmp-1"))
  run = run_setup.RunSetup(config)
  managers = [checkpoint.get_manager(os.path.join(workdir, d)) for d in
              (checkpoint.PREEMPTION_DIR, checkpoint.SNAPSHOT_DIR)]
  with caplog.at_level("WARNING"):
    absl_logging.get_absl_logger().propagate = True
    _, step = checkpoint.restore_latest(managers, run.init_state())
  assert step == 30
  assert any("unreadable" in r.getMessage() for r in caplog.records)
  shutil.rmtree(latest)  # the corrupt step is recomputed from step 30
  resumed = train.train_and_evaluate(config, workdir)
  _assert_same_state(resumed, reference)


def test_nan_loss_stops_without_saving_nans(tmp_path, monkeypatch):
  original = datasets.ToyDataset.train_batches

  def poisoned(self, step, n):
    batches = original(self, step, n)
    return batches * np.nan if step >= 20 else batches

  monkeypatch.setattr(datasets.ToyDataset, "train_batches", poisoned)
  config = tiny_toy_config()
  with pytest.raises(train.NonFiniteLossError, match="step 20"):
    train.train_and_evaluate(config, str(tmp_path))
  for directory in (checkpoint.SNAPSHOT_DIR, checkpoint.PREEMPTION_DIR):
    for step in os.listdir(tmp_path / directory):
      assert int(step) <= 20
  state = _final_state(config, str(tmp_path))
  assert all(np.isfinite(x).all() for x in jax.tree_util.tree_leaves(state.params))


def _main(workdir, *extra):
  """Starts `main.py` on the tiny config; its output goes to `<workdir>.out` (a pipe could fill and block)."""
  cmd = [sys.executable, "main.py", "--config=tests/configs/tiny_checkerboard.py", f"--workdir={workdir}", *extra]
  log = open(f"{workdir}.out", "a")
  return subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, text=True)


# The kill -9 runs train a class-conditional model with label dropout and EDM2's power EMA, so that the
# labelled data, the tracked averages and their snapshots (every 15 steps) resume exactly too.
KILL_RUN = {"training.n_iters": 80, "training.snapshot_freq": 40, "model.num_classes": 8,
            "training.class_dropout": 0.2, "model.ema_type": "power", "training.ema_snapshot_freq": 15}


@pytest.fixture(scope="module")
def uninterrupted_80(tmp_path_factory):
  """An uninterrupted 80-step run (snapshots at 40 and 80) for the kill -9 tests."""
  config = tiny_toy_config(**KILL_RUN)
  workdir = str(tmp_path_factory.mktemp("uninterrupted_80"))
  train.train_and_evaluate(config, workdir)
  return config, workdir


def _ema_snapshots(workdir):
  manager = posthoc_ema.snapshot_manager(workdir)
  return {step: checkpoint.restore(manager, step, None) for step in manager.all_steps()}


@pytest.mark.parametrize("kill_at, when", [(50, "after"), (60, "before")])
def test_kill_9_and_restart_gives_identical_parameters(uninterrupted_80, tmp_path, kill_at, when):
  """SIGKILL right after (or right before) a preemption checkpoint; the restarted run ends bit-identical.

  tests/kill_main.py kills main.py at that checkpoint save: deterministic, no timing involved. At step 60
  the first save is the EMA snapshot's, so `before` kills before the snapshot is written.
  """
  config, reference_dir = uninterrupted_80
  overrides = [f"--config.{key}={value}" for key, value in KILL_RUN.items()]
  killed_dir = tmp_path / "killed"
  cmd = [sys.executable, "tests/kill_main.py", "--config=tests/configs/tiny_checkerboard.py",
         f"--workdir={killed_dir}", *overrides]
  killed = subprocess.run(cmd, cwd=REPO, env={**os.environ, "KILL_AT_STEP": str(kill_at), "KILL_WHEN": when},
                          capture_output=True, text=True)
  assert killed.returncode == -signal.SIGKILL, killed.stdout + killed.stderr
  saved = sorted(int(p.name) for p in (killed_dir / checkpoint.PREEMPTION_DIR).iterdir() if p.name.isdigit())
  assert saved[-1] == (kill_at if when == "after" else kill_at - 10), saved
  assert not (killed_dir / checkpoint.SNAPSHOT_DIR / "80").exists()
  assert max(posthoc_ema.snapshot_manager(str(killed_dir)).all_steps()) == 45
  restarted = _main(killed_dir, *overrides)
  assert restarted.wait(timeout=300) == 0
  output = open(f"{killed_dir}.out").read()
  assert f"Resuming from the checkpoint of step {saved[-1]}" in output
  final, reference = _final_state(config, str(killed_dir)), _final_state(config, reference_dir)
  _assert_same_state(final, reference)
  for x, y in zip(jax.tree_util.tree_leaves(final.power_ema), jax.tree_util.tree_leaves(reference.power_ema)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  snapshots, reference_snapshots = _ema_snapshots(str(killed_dir)), _ema_snapshots(reference_dir)
  assert sorted(snapshots) == sorted(reference_snapshots) == [15, 30, 45, 60, 75, 80]
  for x, y in zip(jax.tree_util.tree_leaves(snapshots), jax.tree_util.tree_leaves(reference_snapshots)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_posthoc_ema_through_main_reproduces_a_tracked_width(uninterrupted_80):
  """`main.py --mode=reconstruct_ema` writes a checkpoint that `trained_model.load_model` reads: for a tracked
  sigma_rel it is the tracked average (relative error <= 1e-4); an untracked one differs from both."""
  config, workdir = uninterrupted_80
  result = subprocess.run([sys.executable, "main.py", "--config=tests/configs/tiny_checkerboard.py",
                           f"--workdir={workdir}", "--mode=reconstruct_ema", "--sigma_rel=0.05",
                           *[f"--config.{key}={value}" for key, value in KILL_RUN.items()]],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-2000:]
  directory = result.stdout.strip().splitlines()[-1]
  _, variables, step = trained_model.load_model(directory)
  assert step == 80
  tracked = _final_state(config, workdir).power_ema
  for x, y in zip(jax.tree_util.tree_leaves(variables["params"]), jax.tree_util.tree_leaves(tracked["profile_0"])):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-4, atol=1e-4 * np.abs(np.asarray(y)).max())
  untracked = posthoc_ema.reconstruct(config, workdir, 0.07)
  for name in ("profile_0", "profile_1"):
    difference = jax.tree_util.tree_map(lambda a, b: np.abs(np.asarray(a) - np.asarray(b)).max(), untracked,
                                        tracked[name])
    assert max(jax.tree_util.tree_leaves(difference)) > 1e-5
  with pytest.raises(ValueError, match="step=70 has no EMA snapshot"):
    posthoc_ema.reconstruct(config, workdir, 0.05, step=70)


@pytest.mark.parametrize("args, message", [
    (["--config=tests/configs/tiny_checkerboard.py"], "--workdir is required"),
    (["--config=configs/no_such_file.py", "--workdir=/tmp/x"], "cannot read config file"),
    (["--workdir=/tmp/x"], "--config=PATH is required"),
    (["--config=tests/configs/tiny_checkerboard.py", "--workdir={tmp}", "--config.training.sde=linear"],
     "training.sde='linear' is not valid; choose one of: cosine, learned_vpsde, rectified_flow, subvpsde, vesde, "
     "vpsde"),
    (["--config=tests/configs/tiny_checkerboard.py", "--workdir={tmp}", "--config.training.nonexistent=1"],
     "--config.training.nonexistent: config.training has no key 'nonexistent'; choose one of: async_checkpoint, batch_size,"),
    (["--config=tests/configs/tiny_checkerboard.py", "--workdir=/proc/x"], "--workdir=/proc/x cannot be created"),
    (["--config=tests/configs/tiny_checkerboard.py", "--workdir={tmp}", "--config.optim.lr=-1"],
     "optim.lr=-1.0 must be > 0"),
    (["--config=tests/configs/tiny_checkerboard.py", "--workdir={tmp}", "--config.optim.lr=abc"],
     "could not convert string to float: 'abc'"),
    (["--config=tests/configs/tiny_checkerboard.py", "--workdir={tmp}", "--config.model.num_scales=0"],
     "model.num_scales=0 must be >= 1"),
])
def test_main_reports_bad_invocations_in_one_line(tmp_path, args, message):
  args = [a.replace("{tmp}", str(tmp_path)) for a in args]
  result = subprocess.run([sys.executable, "main.py", *args], cwd=REPO, capture_output=True, text=True, timeout=120)
  assert result.returncode != 0
  last_line = result.stderr.strip().splitlines()[-1]
  assert message in last_line and last_line.startswith("main.py:")


@pytest.mark.parametrize("key, value, message", [
    ("training.sde", "vp",
     "training.sde='vp' is not valid; choose one of: cosine, learned_vpsde, rectified_flow, subvpsde, vesde, vpsde"),
    ("model.name", "unet", "model.name='unet' is not valid; choose one of:"),
    ("data.dataset", "cifar100", "data.dataset='cifar100' is not valid"),
    ("sampling.predictor", "heun", "sampling.predictor='heun' is not valid"),
    ("sampling.corrector", "hmc", "sampling.corrector='hmc' is not valid"),
    ("training.log_freq", 7, "training.log_freq=7 must be a positive multiple of training.n_jitted_steps"),
    ("training.batch_size", 0, "training.batch_size=0 must be a positive multiple of the device count"),
    ("model.ema_rate", 1.0, "model.ema_rate=1.0 must lie in"),
    ("optim.warmup", -5, "optim.warmup=-5 must be >= 0"),
    ("model.sigma_max", 0.001, "model.sigma_max=0.001 must exceed model.sigma_min"),
    ("model.dropout", 1.5, "model.dropout=1.5 must lie in [0, 1)"),
    ("training.eps", 0.0, "training.eps=0.0 must lie in (0, 1)"),
    ("sampling.snr", -0.1, "sampling.snr=-0.1 must be >= 0"),
    ("model.parameterization", "score",
     "model.parameterization='score' is not valid; choose one of: autoencoder, average_velocity, consistency, edm, eps, flow,"),
    ("model.dtype", "int8", "model.dtype='int8' is not valid"),
])
def test_validate_config_names_the_bad_key(key, value, message):
  section, name = key.split(".")
  config = tiny_toy_config()
  config[section][name] = value
  with pytest.raises(ValueError, match=re.escape(message)):
    validate_config(config)


@pytest.mark.parametrize("options, message", [
    (dict(method="ddim", schedule="cosine"), "schedule='cosine' is not valid; choose one of: logsnr,"),
    (dict(method="ddim", steps=0), "ddim: steps must be an int >= 1"),
    (dict(method="dpm_solver", order=4), "dpm_solver: order=4 is not valid"),
    (dict(method="ode", rtol=0.0), "ode: rtol=0.0 must be positive"),
])
def test_validate_config_asks_the_sampler_to_check_its_options(options, message):
  config = tiny_toy_config()
  config.sampling.update(options)
  with pytest.raises(ValueError, match=message):
    validate_config(config)


def test_dispatched_steps_equal_scanned_steps(tmp_path):
  scanned = train.train_and_evaluate(tiny_toy_config(**{"training.step_loop": "scan"}), str(tmp_path / "scan"))
  dispatched = train.train_and_evaluate(tiny_toy_config(**{"training.step_loop": "dispatch"}),
                                        str(tmp_path / "dispatch"))
  for a, b in zip(jax.tree_util.tree_leaves(scanned.params), jax.tree_util.tree_leaves(dispatched.params)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)


def test_image_model_trains_a_few_steps(tmp_path):
  """A real U-Net (DDPM++ blocks) on the synthetic `blobs` images: steps and the snapshot grid (the held-out
  loss of an image model is checked in tests/test_evaluate.py; here it would be one more compile)."""
  from configs import digits

  config = digits.get_config()
  config.data.dataset = "blobs"
  config.data.image_size = 8
  config.data.num_channels = 3
  config.model.nf = 8
  config.model.ch_mult = (1, 2)
  config.model.attn_resolutions = (4,)
  config.model.num_scales = 10
  config.training.batch_size = config.eval.batch_size = config.sampling.batch_size = 4
  config.training.n_iters = config.training.snapshot_freq = 2
  config.training.log_freq = config.training.snapshot_freq_for_preemption = 2
  config.training.eval_freq = 1000
  config.training.n_jitted_steps = 1
  config.training.snapshot_sampling = True
  config.sampling.predictor, config.sampling.corrector = "euler_maruyama", "none"
  state = train.train_and_evaluate(config, str(tmp_path))
  assert int(state.step) == 2
  records = read_metrics(os.path.join(tmp_path, "metrics.jsonl"))
  assert records and all(np.isfinite(r["loss"]) for r in records if "loss" in r)
  grid = tmp_path / "samples" / "iter_2.png"
  assert grid.exists() and np.load(tmp_path / "samples" / "iter_2.npz")["samples"].shape == (4, 8, 8, 3)


def test_progress_line_reports_speed_and_time_left(monkeypatch):
  clock = iter([100.0, 104.0, 106.0])
  monkeypatch.setattr(loop.time, "perf_counter", lambda: next(clock))
  progress = loop.Progress(200, 1000)
  assert progress.line(600) == "600/1000 (60%), 100 steps/s, ETA 0:00:04"  # 400 steps in 4 s, 400 left
  assert progress.line(1000) == "1000/1000 (100%), 200 steps/s, ETA 0:00:00"


def test_training_logs_its_progress(tmp_path, caplog):
  caplog.set_level("INFO")
  train.train_and_evaluate(tiny_toy_config(**{"training.n_iters": 20}), str(tmp_path))
  lines = [r.getMessage() for r in caplog.records if "steps/s" in r.getMessage()]
  assert lines and lines[0].startswith("step 10: loss ") and "10/20 (50%)" in lines[0] and "ETA" in lines[0]


def test_run_setup_builds_each_component_once(monkeypatch):
  """Following the config from the training driver: the SDE, model, parameterization, optimizer,
  objective and sampler are each built once (RunSetup, the initial state, the train / eval steps)."""
  from score_jax import objectives, optim, parameterization, sampling, sde as sde_lib
  from score_jax.models import registry
  calls = {}

  def count(module, name):
    original = getattr(module, name)

    def wrapper(*args, **kwargs):
      calls[name] = calls.get(name, 0) + 1
      return original(*args, **kwargs)
    for loaded in list(sys.modules.values()):  # every module that imported the builder by name
      if getattr(loaded, "__name__", "").startswith("score_jax") and getattr(loaded, name, None) is original:
        monkeypatch.setattr(loaded, name, wrapper)

  for module, name in [(sde_lib, "get_sde"), (registry, "get_model"), (parameterization, "get_parameterization"),
                       (optim, "get_optimizer"), (objectives, "get_objective"),
                       (sampling.registry, "config_options")]:
    count(module, name)
  run = run_setup.RunSetup(tiny_toy_config())
  jax.eval_shape(run.init_state)
  assert calls == {name: 1 for name in ("get_sde", "get_model", "get_parameterization", "get_optimizer",
                                        "get_objective", "config_options")}, calls


def test_the_config_enters_each_module_once(tmp_path):
  """Following `config` from `train_and_evaluate` (a short toy run with its eval, snapshot and sampling): each
  score_jax module is entered once by a call that passes it a ConfigDict from another module (the config is
  prepared once at the entry; the builders take what they need, none climbs back to complete or re-derive it)."""
  import collections

  import ml_collections

  config = tiny_toy_config(**{"training.n_iters": 2, "training.n_jitted_steps": 1, "training.log_freq": 2,
                              "training.eval_freq": 2, "training.snapshot_freq": 2,
                              "training.snapshot_freq_for_preemption": 2})
  entries = []

  def profile(frame, event, arg):
    module = frame.f_globals.get("__name__", "")
    if event != "call" or not module.startswith("score_jax"):
      return
    code = frame.f_code
    arguments = code.co_varnames[:code.co_argcount + code.co_kwonlyargcount]
    caller = frame.f_back.f_globals.get("__name__", "") if frame.f_back else ""
    if caller != module and any(isinstance(frame.f_locals.get(a), ml_collections.ConfigDict) for a in arguments):
      entries.append(f"{module}.{code.co_name} <- {caller}")

  sys.setprofile(profile)
  try:
    train.train_and_evaluate(config, str(tmp_path))
  finally:
    sys.setprofile(None)
  per_module = collections.Counter(entry.split(" <- ")[0].rsplit(".", 1)[0] for entry in entries)
  assert {"score_jax.run_setup", "score_jax.models.registry", "score_jax.objectives", "score_jax.sde",
          "score_jax.datasets", "score_jax.checkpoint"} <= set(per_module), entries
  assert max(per_module.values()) == 1, [e for e in entries if per_module[e.split(" <- ")[0].rsplit(".", 1)[0]] > 1]
