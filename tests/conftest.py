"""Shared pytest fixtures: the reference fixtures of tests/fixtures/."""

import numpy as np
import pytest

from tests.helpers import FIXTURES


@pytest.fixture(scope="session")
def refcheck():
  """Loads `tests/fixtures/<name>.npz` (the reference's numbers, shipped with the repository)."""
  def load(name):
    return dict(np.load(FIXTURES / f"{name}.npz"))
  return load
