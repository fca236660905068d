"""Metrics to the console, a JSON-lines file and TensorBoard, from process 0 only."""

import json
import os
import time

import jax
from absl import logging


class MetricWriter:
  """`write(step, **scalars)` logs a readable line, appends to `metrics.jsonl`, and writes TensorBoard."""

  def __init__(self, workdir, filename="metrics.jsonl", tensorboard=True):
    self.active = jax.process_index() == 0
    self._tb = None
    if not self.active:
      return
    os.makedirs(workdir, exist_ok=True)
    self._path = os.path.join(workdir, filename)
    if tensorboard:
      from tensorboardX import SummaryWriter  # a light dependency: no TensorFlow needed
      self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))

  def write(self, step, note="", **scalars):
    """Records `scalars` at `step`; `note` (e.g. the progress) goes on the console line only."""
    if not self.active:
      return
    scalars = {k: float(v) for k, v in scalars.items()}
    line = ", ".join(f"{k} {v:.5g}" for k, v in scalars.items())
    logging.info("step %d: %s%s", step, line, f" | {note}" if note else "")
    with open(self._path, "a") as f:
      f.write(json.dumps({"step": int(step), "time": time.time(), **scalars}) + "\n")
    if self._tb is not None:
      for key, value in scalars.items():
        self._tb.add_scalar(key, value, int(step))

  def truncate_after(self, step):
    """Drops records after `step`, which a resumed run is about to write again."""
    if not self.active or not os.path.exists(self._path):
      return
    kept = [r for r in read_metrics(self._path) if r["step"] <= step]
    with open(self._path, "w") as f:
      f.writelines(json.dumps(r) + "\n" for r in kept)

  def close(self):
    if self._tb is not None:
      self._tb.flush()
      self._tb.close()


def read_metrics(path):
  """The records of a `metrics.jsonl` file."""
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]
