"""Safetensors files: score_jax checkpoints as flat tensors with the config as metadata, and back.

Read and written with the `safetensors` package's numpy backend (no torch). A safetensors file is a JSON
header of names, dtypes, shapes and byte ranges followed by the raw bytes: nothing in it is executed, and
`read` refuses a header that does not describe the file exactly (sizes that overrun or leave bytes over,
overlapping ranges) with a `ValueError` before any tensor is used.

`export_checkpoint(config, workdir, path)` writes the newest checkpoint of a training workdir: its
parameters under `params/...`, its EMA parameters under `ema_params/...`, non-trained variables (the
Fourier features) under `constants/...`, and the config as JSON in the metadata (`score_jax_config`);
`import_checkpoint(path)` gives back `(config, variables, ema_variables)`.
"""

import json
import os

import jax
import ml_collections
import numpy as np

SEPARATOR = "/"
CONFIG_KEY = "score_jax_config"


def read(path):
  """`(tensors, metadata)` of a safetensors file: a dict of numpy arrays and the header's string metadata."""
  from safetensors import SafetensorError, safe_open  # noqa: I001 -- an optional dependency of interop
  if not os.path.isfile(path):
    raise ValueError(f"{path!r} is not a file")
  try:
    with safe_open(path, framework="numpy") as f:
      metadata = f.metadata() or {}
      tensors = {key: f.get_tensor(key) for key in f.keys()}
  except (SafetensorError, OSError, json.JSONDecodeError, ValueError) as error:
    raise ValueError(f"{path} is not a valid safetensors file: {error}") from None
  return tensors, metadata


def write(path, tensors, metadata=None):
  """Writes numpy `tensors` (a flat dict) with string `metadata` to `path` atomically."""
  from safetensors.numpy import save_file  # noqa: I001 -- an optional dependency of interop
  save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, path + ".tmp", metadata=metadata)
  os.replace(path + ".tmp", path)


def flatten(tree, prefix):
  """`{"prefix/a/b": array}` of a nested dict of arrays."""
  flat = {}
  for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
    flat[SEPARATOR.join([prefix] + [str(getattr(k, "key", k)) for k in path])] = np.asarray(leaf)
  return flat


def unflatten(flat, prefix):
  """The nested dict under `prefix/` of `flatten`'s output."""
  tree = {}
  for name, value in flat.items():
    parts = name.split(SEPARATOR)
    if parts[0] != prefix:
      continue
    node = tree
    for part in parts[1:-1]:
      node = node.setdefault(part, {})
    node[parts[-1]] = value
  return tree


def export_checkpoint(workdir, path):
  """Writes the newest checkpoint of `workdir` (raw and EMA parameters, constants, its config.json) to `path`."""
  from score_jax import trained_model  # noqa: PLC0415 -- a trained model needs the model stack; this module does not
  _, variables, step = trained_model.load_model(workdir, ema=False)
  _, ema_variables, _ = trained_model.load_model(workdir, ema=True)
  tensors = {**flatten(variables["params"], "params"), **flatten(ema_variables["params"], "ema_params")}
  tensors.update(flatten({k: v for k, v in variables.items() if k != "params"}, "constants"))
  config = trained_model.run_config(workdir)
  write(path, tensors, {CONFIG_KEY: config.to_json(), "step": str(step), "format": "score_jax"})
  return path


def import_checkpoint(path):
  """`(config, variables, ema_variables)` of a file written by `export_checkpoint` (or `save`)."""
  tensors, metadata = read(path)
  if CONFIG_KEY not in metadata:
    raise ValueError(f"{path} has no score_jax config in its metadata (not written by score_jax)")
  config = ml_collections.ConfigDict(json.loads(metadata[CONFIG_KEY]))
  constants = unflatten(tensors, "constants")
  variables = {**constants, "params": unflatten(tensors, "params")}
  ema_variables = {**constants, "params": unflatten(tensors, "ema_params") or variables["params"]}
  return config, variables, ema_variables


def save(path, config, variables, ema_variables=None):
  """Writes `variables` (and `ema_variables`) with `config` as `export_checkpoint` does, from memory."""
  tensors = {**flatten(variables["params"], "params"),
             **flatten({k: v for k, v in variables.items() if k != "params"}, "constants")}
  if ema_variables is not None:
    tensors.update(flatten(ema_variables["params"], "ema_params"))
  write(path, tensors, {CONFIG_KEY: config.to_json(), "format": "score_jax"})
  return path
