"""Training runs for the benchmarks that measure trained models: through main.py, reused when finished."""

import importlib.util
import json
import pathlib
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]

# A benchmark's --dry_run: its networks and training shrunk to compile and run in seconds on a CPU (each
# benchmark adds the keys of its own configs).
DRY_RUN_TRAINING = {"training.n_iters": 2, "training.n_jitted_steps": 1, "training.batch_size": 16,
                    "training.snapshot_freq": 2, "training.snapshot_sampling": False, "training.log_freq": 1}


def load_config(config_path, overrides):
  """The config of `config_path` (relative to the repository) with `overrides` ({dotted key: value}) set."""
  spec = importlib.util.spec_from_file_location("_benchmark_config", ROOT / config_path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config()
  for key, value in overrides.items():
    config.update_from_flattened_dict({key: str(value) if isinstance(value, pathlib.Path) else value})
  return config


def train(config_path, workdir, overrides, *, in_process=False):
  """Trains `config_path` (relative to the repository) into `workdir` through main.py with `overrides`
  ({dotted key: value}), or in this process (`in_process`: a benchmark's --dry_run, without main.py's start-up);
  a finished run returns at once. Returns the seconds its first complete training took (kept in
  `<workdir>/benchmark_seconds.json`)."""
  workdir = pathlib.Path(workdir)
  record = workdir / "benchmark_seconds.json"
  if record.exists():
    return json.loads(record.read_text())["seconds"]
  start = time.time()
  if in_process:
    from score_jax.drivers import train as train_driver

    train_driver.train_and_evaluate(load_config(config_path, overrides), str(workdir))
  else:
    command = [sys.executable, str(ROOT / "main.py"), f"--config={ROOT / config_path}", f"--workdir={workdir}",
               "--mode=train"] + [f"--config.{key}={value}" for key, value in overrides.items()]
    subprocess.run(command, check=True, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  seconds = time.time() - start
  record.write_text(json.dumps({"seconds": seconds}))
  return seconds
