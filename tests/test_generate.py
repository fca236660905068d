"""`--mode=sample`: one image per seed, the same whatever the batch size or device count; resumable; npz."""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from configs import digits
from score_jax import checkpoint, datasets, optim, sampling, sde as sde_lib
from score_jax.drivers import generate
from score_jax.models import get_model
from score_jax.train_state import init_train_state
from tests.helpers import tiny_toy_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OVERRIDES = {"data.image_size": 8, "model.nf": 8, "model.ch_mult": (1,), "model.attn_resolutions": (),
             "model.num_scales": 20, "sampling.corrector": "langevin"}  # Langevin: a batch-wide step size


def tiny_config(**extra):
  config = digits.get_config()
  for key, value in {**OVERRIDES, **extra}.items():
    config.update_from_flattened_dict({key: value})
  return config


def save_untrained(config, workdir, step=2):
  """A checkpoint of the initial state (no training: no compile)."""
  state = init_train_state(jax.random.PRNGKey(0), config, optim.get_optimizer(config))
  checkpoint.save(checkpoint.get_manager(os.path.join(workdir, checkpoint.SNAPSHOT_DIR)), step,
                  state.replace(step=jnp.asarray(step, jnp.int32)))
  return state


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("generate"))
  save_untrained(tiny_config(), workdir)
  return workdir


def read_pngs(folder, seeds):
  return np.stack([np.asarray(Image.open(os.path.join(folder, generate.png_name(s)))) for s in seeds])


def test_a_sample_depends_on_its_seed_alone():
  """Float samples of the seed sampler: equal across batch sizes and batch companions, and equal to the
  configured sampler's batch of one from PRNGKey(seed) (its Langevin step size from that sample alone)."""
  config = tiny_config()
  state = init_train_state(jax.random.PRNGKey(0), config, optim.get_optimizer(config))
  variables, model = state.variables(), get_model(config)
  sde, eps = sde_lib.get_sde(config)
  inverse = datasets.get_data_inverse_scaler(config)

  def samples(seeds, batch):
    fn = sampling.get_seed_sampling_fn(config, sde, model, (batch, 8, 8, 1), inverse, eps)
    return np.asarray(fn(jax.vmap(jax.random.PRNGKey)(jnp.asarray(seeds)), variables).samples)

  three, four = samples([5, 1, 9], 3), samples([9, 5, 0, 2], 4)
  np.testing.assert_allclose(three[0], four[1], rtol=0, atol=1e-6)
  np.testing.assert_allclose(three[2], four[0], rtol=0, atol=1e-6)
  single = sampling.get_sampling_fn(config, sde, model, (1, 8, 8, 1), inverse, eps)(jax.random.PRNGKey(5), variables)
  np.testing.assert_allclose(three[0], np.asarray(single.samples)[0], rtol=0, atol=1e-6)
  assert np.abs(three[0] - three[1]).max() > 0.1  # different seeds, different images


def test_batch_sizes_give_identical_images_and_a_killed_run_resumes(workdir, tmp_path):
  config = tiny_config()
  a, b = str(tmp_path / "a"), str(tmp_path / "b")
  generate.generate(config, workdir, "0-6", a, batch_size=3, grid=2)
  generate.generate(config, workdir, [0, 1, 2, 3, 4, 5, 6], b, batch_size=8)
  seeds = range(7)
  np.testing.assert_array_equal(read_pngs(a, seeds), read_pngs(b, seeds))
  assert os.path.exists(os.path.join(a, "grid.png"))
  # A run killed after some seeds: the files written stay, the missing ones (and no half-written one) are made.
  kept = os.path.join(b, generate.png_name(1))
  os.utime(kept, (0, 0))
  for seed in (4, 6):
    os.remove(os.path.join(b, generate.png_name(seed)))
  open(os.path.join(b, generate.png_name(5) + ".tmp.png"), "wb").close()
  generate.generate(config, workdir, "0-6", b, batch_size=3)
  assert os.stat(kept).st_mtime == 0  # not rewritten
  np.testing.assert_array_equal(read_pngs(a, seeds), read_pngs(b, seeds))
  # The npz holds the same images, in the order of the seeds.
  out = str(tmp_path / "samples.npz")
  generate.generate(config, workdir, "6,2,4", out, batch_size=2)
  with np.load(out) as saved:
    np.testing.assert_array_equal(saved["images"][..., 0], read_pngs(a, [6, 2, 4]))
    np.testing.assert_array_equal(saved["seeds"], [6, 2, 4])
  assert not os.path.exists(out + ".parts")


def test_class_conditional_seeds_take_their_class(tmp_path):
  config = tiny_config(**{"model.num_classes": 10})
  save_untrained(config, str(tmp_path))
  assert generate.seed_labels([3, 14, 27], 10).tolist() == [3, 4, 7]
  assert generate.seed_labels([3, 14, 27], 10, class_label=2).tolist() == [2, 2, 2]
  assert generate.seed_labels([3, 14, 27], 10, labels="1,8").tolist() == [1, 8, 1]
  out = str(tmp_path / "cond.npz")
  generate.generate(config, str(tmp_path), "0-2", out, batch_size=3, class_label=7)
  with np.load(out) as saved:
    assert saved["labels"].tolist() == [7, 7, 7]


@pytest.mark.parametrize("kwargs,message", [
    (dict(seeds="3-a"), "--seeds='3-a' must be seeds and ranges"),
    (dict(seeds="0-3", grid=3), "--grid=3 needs 9 seeds"),
    (dict(seeds="0-3", labels="1"), "--labels / --class need a class-conditional model"),
    (dict(seeds="0-3", step=7), "has no checkpoint of step 7; its steps: 2"),
    (dict(seeds="0-3", batch_size=0), "--batch_size=0 must be >= 1"),
    (dict(seeds="0-3", flat=True), "writes images; this model's data are 2-D points"),
])
def test_bad_requests_are_refused_before_sampling(workdir, tmp_path, kwargs, message):
  seeds = kwargs.pop("seeds")
  config = tiny_toy_config() if kwargs.pop("flat", False) else tiny_config()
  with pytest.raises(ValueError) as error:
    generate.generate(config, workdir, seeds, str(tmp_path / "out"), **kwargs)
  assert message in str(error.value)
  assert not os.path.exists(tmp_path / "out")


def test_command_line_on_two_devices_writes_the_same_images(workdir, tmp_path):
  """main.py --mode=sample in a process with two (fake CPU) devices: the images of the in-process run."""
  reference = str(tmp_path / "one_device")
  generate.generate(tiny_config(), workdir, "0-4", reference, batch_size=1)
  out = str(tmp_path / "two_devices")
  overrides = [f"--config.{key}={value}" for key, value in OVERRIDES.items()]
  env = dict(os.environ, XLA_FLAGS=os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2",
             JAX_PLATFORMS="cpu")
  result = subprocess.run([sys.executable, "main.py", "--config=configs/digits.py", f"--workdir={workdir}",
                           "--mode=sample", "--seeds=0-4", f"--out={out}", "--batch_size=4", *overrides],
                          cwd=REPO, capture_output=True, text=True, timeout=300, env=env)
  assert result.returncode == 0, result.stderr[-2000:]
  np.testing.assert_array_equal(read_pngs(out, range(5)), read_pngs(reference, range(5)))
  bad = subprocess.run([sys.executable, "main.py", "--config=configs/digits.py", f"--workdir={workdir}",
                        "--mode=sample", "--seeds=0-4", f"--out={out}", "--batch_size=3", *overrides],
                       cwd=REPO, capture_output=True, text=True, timeout=300, env=env)
  assert bad.returncode != 0 and "Traceback" not in bad.stderr
  assert bad.stderr.strip().splitlines()[-1].startswith("main.py: --batch_size=3"), bad.stderr[-500:]


def test_run_config_reads_the_config_a_run_wrote(tmp_path):
  """`trained_model.run_config`: config.json as data, completed with the base's defaults (keys it predates)."""
  from score_jax import trained_model

  config = tiny_config()
  values = config.to_dict()
  del values["sampling"]["guidance_interval"]  # a run older than this key
  (tmp_path / "config.json").write_text(__import__("json").dumps(values, default=list))
  loaded = trained_model.run_config(str(tmp_path))
  assert loaded.model.nf == 8 and tuple(loaded.model.ch_mult) == (1,) and loaded.sampling.corrector == "langevin"
  assert tuple(loaded.sampling.guidance_interval) == ()
  get_model(loaded)  # lists where the run had tuples build the same network
  with pytest.raises(ValueError, match="is .* a training workdir"):
    trained_model.run_config(str(tmp_path / "nowhere"))
