"""Training runs for the benchmarks that measure trained models: through main.py, reused when finished."""

import json
import pathlib
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]


def train(config_path, workdir, overrides):
  """Trains `config_path` (relative to the repository) into `workdir` through main.py with `overrides`
  ({dotted key: value}); a finished run returns at once. Returns the seconds its first complete training took
  (kept in `<workdir>/benchmark_seconds.json`)."""
  workdir = pathlib.Path(workdir)
  record = workdir / "benchmark_seconds.json"
  if record.exists():
    return json.loads(record.read_text())["seconds"]
  command = [sys.executable, str(ROOT / "main.py"), f"--config={ROOT / config_path}", f"--workdir={workdir}",
             "--mode=train"] + [f"--config.{key}={value}" for key, value in overrides.items()]
  start = time.time()
  subprocess.run(command, check=True, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  seconds = time.time() - start
  record.write_text(json.dumps({"seconds": seconds}))
  return seconds
