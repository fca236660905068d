"""Shared pytest fixtures: the reference fixtures of tests/fixtures/; the suite's XLA:CPU settings."""

import os

# The tests are compile-bound (tiny networks, a few steps): unoptimised XLA:CPU code compiles several times
# faster. Set before any computation (XLA reads the flags when its CPU client starts); subprocesses inherit it,
# and a caller's own XLA_FLAGS win.
os.environ.setdefault("XLA_FLAGS", "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from tests.helpers import FIXTURES  # noqa: E402


@pytest.fixture(scope="session")
def refcheck():
  """Loads `tests/fixtures/<name>.npz` (the reference's numbers, shipped with the repository)."""
  def load(name):
    return dict(np.load(FIXTURES / f"{name}.npz"))
  return load
