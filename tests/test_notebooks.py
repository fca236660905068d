"""The colab notebooks run end to end: headless, offline, with tiny parameters, on this interpreter.

Each notebook is executed with nbclient after a cell that overrides its `parameters` cell (as
papermill does), in a temporary working directory, with a kernel spec written for `sys.executable`
(so the user's own Jupyter kernels never matter). The playground runs after the tutorial in the same
directory and loads the digits checkpoint that the tutorial trained; run alone, it trains one itself.
"""

import os
import pathlib
import sys
import time

import pytest

nbformat = pytest.importorskip("nbformat", reason="the notebook tests need nbformat (pip install -e '.[test]')")
nbclient = pytest.importorskip("nbclient", reason="the notebook tests need nbclient (pip install -e '.[test]')")
pytest.importorskip("ipykernel", reason="the notebook tests need ipykernel (pip install -e '.[test]')")

REPO = pathlib.Path(__file__).resolve().parents[1]
KERNEL_NAME = "score_jax_tests"
NOTEBOOK_TIMEOUT = 600  # seconds per notebook; measured 110 s (tutorial) and 146 s (playground) on 2 busy CPU cores

# A one-level DDPM++ of width 8 on the 8x8 digits: every code path, compiled in seconds.
TINY_IMAGE_MODEL = {"model.nf": 8, "model.ch_mult": (1,), "model.attn_resolutions": (), "data.image_size": 8}
TINY_PARAMETERS = {  # VP reverse diffusion needs N > beta_max = 20 steps (its discrete betas must stay below 1)
    "tutorial.ipynb": dict(TOY_TRAIN_STEPS=50, DIGITS_TRAIN_STEPS=5, NUM_SAMPLES=128, NUM_IMAGES=4, PC_STEPS=30,
                           IMAGE_STEPS=25, SAMPLER_STEPS=(2, 3), GRID=8, ODE_TOLERANCE=1e-3, WORKDIR="runs/tutorial",
                           CONFIG_OVERRIDES=TINY_IMAGE_MODEL),
    "checkpoint_playground.ipynb": dict(WORKDIR="runs/tutorial/digits", CONFIG_OVERRIDES=TINY_IMAGE_MODEL,
                                        TRAIN_STEPS=5, CLASSIFIER_STEPS=2, NUM_SAMPLES=4, IMAGE_STEPS=25,
                                        STEP_COUNTS=(25,), SAMPLER_STEPS=2, INTERPOLATION_FRAMES=4,
                                        ODE_TOLERANCE=1e-3, COLOR_WORKDIR="runs/playground/blobs",
                                        TORCH_CHECKPOINT=""),
}


def with_parameters(notebook, parameters):
  """Inserts a cell assigning `parameters` right after the cell tagged `parameters`."""
  index = next((i for i, cell in enumerate(notebook.cells) if "parameters" in cell.metadata.get("tags", [])), None)
  assert index is not None, "the notebook has no cell tagged `parameters`"
  cell = nbformat.v4.new_code_cell("\n".join(f"{name} = {value!r}" for name, value in parameters.items()))
  cell.metadata["tags"] = ["injected-parameters"]
  notebook.cells.insert(index + 1, cell)
  return notebook


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  """The notebooks' shared working directory."""
  return tmp_path_factory.mktemp("notebooks")


@pytest.fixture(scope="module")
def kernel_env(tmp_path_factory):
  """Environment of a kernel spec for this interpreter, plus a headless, CPU-only, shared-cache setup."""
  from ipykernel.kernelspec import install

  prefix = tmp_path_factory.mktemp("kernel")
  install(kernel_name=KERNEL_NAME, prefix=str(prefix))
  return {
      "JUPYTER_PATH": str(prefix / "share" / "jupyter"),  # searched before the user's kernels
      "MPLBACKEND": "Agg",
      "JAX_PLATFORMS": "cpu",
      "SCORE_JAX_REPO": str(REPO),
      # Both notebooks compile the same digits network: the second one reuses the executables.
      "JAX_COMPILATION_CACHE_DIR": str(tmp_path_factory.mktemp("jax_cache")),
      # Tiny runs are all compilation: unoptimised XLA:CPU code compiles about 4x faster.
      "XLA_FLAGS": "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true",
  }


def run_notebook(name, workdir, kernel_env, monkeypatch):
  for key, value in kernel_env.items():
    monkeypatch.setenv(key, value)
  notebook = with_parameters(nbformat.read(REPO / "colab" / name, as_version=4), TINY_PARAMETERS[name])
  deadline = time.monotonic() + NOTEBOOK_TIMEOUT
  client = nbclient.NotebookClient(
      notebook, kernel_name=KERNEL_NAME, resources={"metadata": {"path": str(workdir)}},
      timeout_func=lambda cell: max(1, int(deadline - time.monotonic())), startup_timeout=120)
  try:
    client.execute()
  except nbclient.exceptions.CellTimeoutError:
    pytest.fail(f"{name} ran past {NOTEBOOK_TIMEOUT} s")
  return notebook


def test_tutorial(workdir, kernel_env, monkeypatch):
  run_notebook("tutorial.ipynb", workdir, kernel_env, monkeypatch)
  assert (workdir / "runs" / "tutorial" / "digits" / "checkpoints").is_dir()


def test_checkpoint_playground(workdir, kernel_env, monkeypatch):
  run_notebook("checkpoint_playground.ipynb", workdir, kernel_env, monkeypatch)


def test_notebooks_are_stored_without_outputs():
  for path in sorted((REPO / "colab").glob("*.ipynb")):
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    for cell in notebook.cells:
      if cell.cell_type == "code":
        assert not cell.outputs and cell.execution_count is None, f"{path.name}: clear the outputs before committing"


def test_kernel_is_this_interpreter(kernel_env):
  import json

  spec = json.loads((pathlib.Path(kernel_env["JUPYTER_PATH"]) / "kernels" / KERNEL_NAME / "kernel.json").read_text())
  assert spec["argv"][0] == sys.executable
  assert os.path.exists(spec["argv"][0])
