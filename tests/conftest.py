"""Shared test helpers: the reference fixtures and a float64-free CPU setup."""

import os
import pathlib

import numpy as np
import pytest

# The test programs are tiny, so their time is mostly XLA compilation: unoptimised XLA:CPU code
# compiles several times faster (the suite runs ~25% faster). SCORE_JAX_TEST_XLA_OPT=1 tests the
# optimised code instead. Set before any test module imports jax; subprocesses inherit it.
if os.environ.get("SCORE_JAX_TEST_XLA_OPT") != "1":
  os.environ["XLA_FLAGS"] = " ".join([os.environ.get("XLA_FLAGS", ""), "--xla_backend_optimization_level=0",
                                      "--xla_llvm_disable_expensive_passes=true"]).strip()

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
