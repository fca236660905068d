"""Shared pytest fixtures: the reference fixtures of tests/fixtures/; the suite's XLA:CPU settings."""

import os

# The suite's XLA:CPU code (docs/testing.md, "XLA optimisation level"). The tests are compile-bound (tiny networks, a few steps), and
# unoptimised code compiles about 3x faster and runs about 3x slower: on a quarter of the suite (slow files of
# each kind, interleaved runs on a quiet machine) it took 0.90x the time of optimised code.
# SCORE_JAX_TEST_XLA_OPTIMIZED=1 runs the suite on XLA's default, optimised code (what users run); a caller's
# own XLA_FLAGS win over both. Set before any computation (XLA reads the flags when its CPU client starts);
# subprocesses inherit them (tests/test_parallel.py passes them on).
UNOPTIMIZED_XLA_FLAGS = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
_OPTIMIZED = os.environ.get("SCORE_JAX_TEST_XLA_OPTIMIZED", "0")
if _OPTIMIZED not in ("0", "1"):
  raise ValueError(f"SCORE_JAX_TEST_XLA_OPTIMIZED={_OPTIMIZED!r}: use 1 (optimised XLA:CPU code) or 0 (the default)")
if _OPTIMIZED == "0":
  os.environ.setdefault("XLA_FLAGS", UNOPTIMIZED_XLA_FLAGS)

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from tests.helpers import FIXTURES  # noqa: E402


# The numerical tests: closed forms, the reference's fixtures, samplers, likelihoods and the data-parallel
# equalities. CI runs them a second time on optimised XLA:CPU code (`-m numerical`, README), what users run.
NUMERICAL_FILES = ("test_likelihood.py", "test_sampling.py", "test_fast_samplers.py", "test_sde.py",
                   "test_parallel.py")


def pytest_collection_modifyitems(config, items):
  for item in items:
    if item.path.name in NUMERICAL_FILES or "refcheck" in getattr(item, "fixturenames", ()) \
        or "match_reference" in item.name:
      item.add_marker(pytest.mark.numerical)


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
  """Each test module's compiled programs are released after it: XLA:CPU maps the code of every executable it
  keeps, and one process running the whole suite otherwise nears the kernel's limit on memory maps
  (vm.max_map_count, 65530 here), where a later compile crashes (a segfault in test_train.py, seen twice)."""
  yield
  import gc  # noqa: PLC0415

  import jax  # noqa: PLC0415 -- imported after XLA_FLAGS is set above

  jax.clear_caches()
  gc.collect()


def pytest_report_header(config):
  return f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r} (SCORE_JAX_TEST_XLA_OPTIMIZED={_OPTIMIZED})"


@pytest.fixture(scope="session")
def refcheck():
  """Loads `tests/fixtures/<name>.npz` (the reference's numbers, shipped with the repository)."""
  def load(name):
    return dict(np.load(FIXTURES / f"{name}.npz"))
  return load
