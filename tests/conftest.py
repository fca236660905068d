"""Shared test helpers: the reference fixtures and a float64-free CPU setup."""

import os
import pathlib

import numpy as np
import pytest

REFCHECK = pathlib.Path(os.environ.get(
    "SCORE_JAX_REFCHECK", pathlib.Path(__file__).resolve().parents[2] / "shared" / "refcheck"))


@pytest.fixture(scope="session")
def refcheck():
  """Loads `../shared/refcheck/fixtures/<name>.npz`; skips when the fixtures are absent."""
  def load(name):
    path = REFCHECK / "fixtures" / f"{name}.npz"
    if not path.exists():
      pytest.skip(f"reference fixture {path} not found (set SCORE_JAX_REFCHECK)")
    return dict(np.load(path))
  return load
