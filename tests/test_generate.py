"""`--mode=sample`: one image per seed, the same whatever the batch size or device count; resumable; npz."""

import json
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
from score_jax.models import get_model, init_model
from tests.helpers import save_untrained_run, tiny_toy_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OVERRIDES = {"data.image_size": 8, "model.nf": 8, "model.ch_mult": (1,), "model.attn_resolutions": (),
             "model.num_scales": 20, "sampling.corrector": "langevin"}  # Langevin: a batch-wide step size


def tiny_config(**extra):
  config = digits.get_config()
  for key, value in {**OVERRIDES, **extra}.items():
    config.update_from_flattened_dict({key: value})
  return config


save_untrained = save_untrained_run  # a workdir with config.json and an untrained checkpoint


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
  variables, model = init_model(jax.random.PRNGKey(0), config), get_model(config)
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
  # Another choice of labels is refused, for a finished npz as for a folder.
  os.utime(out, (0, 0))
  assert generate.generate(config, str(tmp_path), "0-2", out, class_label=7) == out and os.stat(out).st_mtime == 0
  assert_refused(lambda: generate.generate(config, str(tmp_path), "0-2", out, class_label=3),
                 "holds images made with class_label=7, not class_label=3 as now")
  assert_refused(lambda: generate.generate(config, str(tmp_path), "0-2", out, labels="7"),
                 "holds images made with class_label=7, not class_label=None as now")
  folder = str(tmp_path / "cycled")
  generate.generate(config, str(tmp_path), "0-2", folder, batch_size=3, labels="1,8")
  assert_refused(lambda: generate.generate(config, str(tmp_path), "0-2", folder, batch_size=3),
                 "holds images made with labels=[1, 8], not labels=None as now")
  assert_refused(lambda: generate.generate(config, str(tmp_path), "5,0-2", folder, batch_size=3, labels="1,8"),
                 "seed_labels.0=1, not seed_labels.0=8")  # --labels cycle over the seeds in order: seed 0 now an 8
  generate.generate(config, str(tmp_path), "3-4", folder, batch_size=3, labels="1,8")  # other seeds: added
  with open(os.path.join(folder, generate.MANIFEST)) as f:
    assert json.load(f)["seed_labels"] == {"0": 1, "1": 8, "2": 1, "3": 1, "4": 8}


@pytest.mark.parametrize("kwargs,message", [
    (dict(seeds="3-a"), "--seeds='3-a': '3-a' is neither a seed nor a range"),
    (dict(seeds="0-3", grid=3), "--grid=3 needs 9 seeds"),
    (dict(seeds="0-3", labels="1"), "--labels / --class need a class-conditional model"),
    (dict(seeds="0-3", step=7), "has no checkpoint of step 7; its steps: 2"),
    (dict(seeds="0-3", batch_size=0), "--batch_size=0 must be >= 1"),
    (dict(seeds="0-3", flat=True), "writes images; this model's data are 2-D points"),
])
def test_bad_requests_are_refused_before_sampling(workdir, tmp_path, kwargs, message):
  seeds = kwargs.pop("seeds")
  config = tiny_config()
  if kwargs.pop("flat", False):  # a run of 2-D points
    config, workdir = tiny_toy_config(), str(tmp_path / "flat")
    save_untrained(config, workdir)
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


@pytest.mark.parametrize("text,message", [
    ("3-", "'3-' is neither a seed nor a range LOW-HIGH with both ends; write e.g. 0-99"),
    ("-3", "'-3' is neither a seed nor a range LOW-HIGH"),
    ("0-9,20-15", "the range '20-15' runs backwards; write 15-20"),
    ("4294967296", "'4294967296' leaves [0, 4294967295] (jax.random.PRNGKey takes uint32 seeds); write e.g. 0-99"),
    ("0-9,10-4294967296", "'10-4294967296' leaves [0, 4294967295]"),
    (",", "must name one or more seeds, e.g. 0-99"),
])
def test_bad_seeds_are_refused_in_one_line_naming_the_part(text, message):
  with pytest.raises(ValueError) as error:
    generate.parse_seeds(text)
  assert str(error.value).startswith(f"--seeds={text!r}: " if message[0] != "m" else f"--seeds={text!r} ")
  assert message in str(error.value) and "\n" not in str(error.value)


def test_good_seeds_parse():
  assert generate.parse_seeds("0-99") == list(range(100))
  assert generate.parse_seeds("0,5,10-12, 7") == [0, 5, 10, 11, 12, 7]
  assert generate.parse_seeds("5,3-6") == [5, 3, 4, 6]
  assert generate.parse_seeds("4294967295") == [4294967295]


def test_seeds_up_to_2_32_make_images(workdir, tmp_path):
  """Seeds in [2**31, 2**32), which int32 cannot hold, are `jax.random.PRNGKey`'s uint32 seeds too."""
  out = str(tmp_path / "big")
  generate.generate(tiny_config(), workdir, "2147483648,4294967295", out, batch_size=2)
  images = read_pngs(out, [2**31, 2**32 - 1])
  assert np.abs(images[0].astype(int) - images[1]).max() > 0


def assert_refused(call, *messages):
  with pytest.raises(ValueError) as error:
    call()
  text = str(error.value)
  assert all(m in text for m in messages) and "\n" not in text, text


def test_a_resume_refuses_images_made_otherwise_and_adds_seeds_made_alike(tmp_path):
  """--out's manifest.json: another checkpoint step, sampler setting, EMA choice or workdir is refused
  before any image is written; more seeds with the same settings are added, the written ones kept."""
  config, run = tiny_config(), str(tmp_path / "run")
  save_untrained(config, run, step=2)
  save_untrained(config, run, step=4)
  out = str(tmp_path / "png")
  generate.generate(config, run, "0-2", out, step=2, batch_size=3)
  with open(os.path.join(out, generate.MANIFEST)) as f:
    manifest = json.load(f)
  assert manifest["workdir"] == os.path.abspath(run) and manifest["step"] == 2 and manifest["ema"] is True
  assert manifest["sampling"]["corrector"] == "langevin" and manifest["sampling"]["snr"] == config.sampling.snr
  assert manifest["class_label"] is None and manifest["labels"] is None and manifest["seed_labels"] is None
  other_run = str(tmp_path / "other_run")
  save_untrained(config, other_run, step=2)
  for call, message in [
      (lambda: generate.generate(config, run, "0-3", out, batch_size=3), "step=2, not step=4 as now"),
      (lambda: generate.generate(tiny_config(**{"sampling.snr": 0.2}), run, "0-3", out, step=2, batch_size=3),
       "sampling.snr=0.16, not sampling.snr=0.2 as now"),
      (lambda: generate.generate(config, run, "0-3", out, step=2, batch_size=3, ema=False), "ema=True, not ema=False"),
      (lambda: generate.generate(config, other_run, "0-3", out, step=2, batch_size=3),
       f"workdir={os.path.abspath(run)!r}, not workdir={os.path.abspath(other_run)!r}"),
  ]:
    assert_refused(call, f"--out={out} holds images made with {message}", "use another --out")
  assert sorted(os.listdir(out)) == sorted([generate.MANIFEST, *map(generate.png_name, range(3))])  # nothing added
  kept = os.path.join(out, generate.png_name(1))
  os.utime(kept, (0, 0))
  generate.generate(config, run, "0-4", out, step=2, batch_size=3)
  assert os.stat(kept).st_mtime == 0 and os.path.exists(os.path.join(out, generate.png_name(4)))
  # A finished npz: returned as it is for the same seeds and settings, refused for others.
  npz = str(tmp_path / "samples.npz")
  generate.generate(config, run, "0-2", npz, step=2, batch_size=3)
  with np.load(npz) as saved:
    assert json.loads(str(saved["manifest"]))["step"] == 2
    np.testing.assert_array_equal(saved["images"][..., 0], read_pngs(out, range(3)))
  os.utime(npz, (0, 0))
  assert generate.generate(config, run, "0-2", npz, step=2) == npz and os.stat(npz).st_mtime == 0
  assert_refused(lambda: generate.generate(config, run, "0-2", npz), f"--out={npz} holds images made with step=2")
  assert_refused(lambda: generate.generate(config, run, "0-3", npz, step=2), "holds seeds=[0, 1, 2], not seeds=[0, 1, 2, 3]")


def test_images_of_unknown_provenance_are_refused(workdir, tmp_path):
  """PNGs, or an npz, written before manifests were: refused, not taken as this run's."""
  old = tmp_path / "old"
  old.mkdir()
  Image.fromarray(np.zeros((8, 8), np.uint8)).save(old / generate.png_name(0))
  assert_refused(lambda: generate.generate(tiny_config(), workdir, "0-2", str(old)),
                 "holds PNGs but no manifest.json", "delete them or use another --out")
  npz = str(tmp_path / "old.npz")
  np.savez(npz, images=np.zeros((1, 8, 8, 1), np.uint8), seeds=np.zeros(1, np.int64), labels=-np.ones(1, np.int64))
  assert_refused(lambda: generate.generate(tiny_config(), workdir, "0", npz), "has no manifest", "delete it")


@pytest.mark.parametrize("args,message", [
    (["--config=configs/digits.py", "--mode=sample", "--seeds=0-3", "--out={tmp}/png"],
     "does not exist; --mode=sample needs a training workdir (the --workdir of --mode=train)"),
    (["--config=tests/configs/tiny_checkerboard.py", "--mode=eval"], "does not exist; --mode=eval needs a training"),
    (["--config=configs/digits.py", "--mode=inpaint", "--from_dataset=2"], "--mode=inpaint needs a training workdir"),
    (["--mode=fid", "--samples={tmp}", "--ref={tmp}"], "does not exist; --mode=fid needs no workdir: leave --workdir out"),
])
def test_modes_that_read_a_run_do_not_create_a_missing_workdir(tmp_path, args, message):
  """main.py refuses in one line, before it makes the workdir or its log file."""
  workdir = tmp_path / "no_such_run"
  result = subprocess.run([sys.executable, "main.py", f"--workdir={workdir}", *(a.format(tmp=tmp_path) for a in args)],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
  assert result.returncode != 0 and not workdir.exists() and "Traceback" not in result.stderr, result.stderr[-2000:]
  lines = result.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith(f"main.py: --workdir={workdir} ") and message in lines[0], lines


# pc (with Langevin's batch-wide step size) is test_a_sample_depends_on_its_seed_alone's.
SAMPLER_FAMILIES = ["ode", "ddim", "dpm_solver", "heun", "adaptive_sde", "consistency"]


@pytest.mark.parametrize("data,method", [("images", method) for method in SAMPLER_FAMILIES] + [
    pytest.param("points", method, marks=pytest.mark.xfail(
        reason="the toy MLP's output for one sample differs in the last float32 bit between a (vmapped) batch of 3 "
               "and of 1 (XLA:CPU's dot kernels by shape), and the adaptive step control turns that into other "
               "steps (ode: 585 against 609 evaluations for seed 9, samples 1.5e-5 apart relatively): the seed "
               "sampler is batch-independent to float rounding only, exactly where the network is",
        raises=AssertionError, strict=False)) for method in ("ode", "adaptive_sde")])
def test_every_sampler_family_samples_a_seed_alone(data, method):
  """`get_seed_sampling_fn` (what `--mode=sample` runs) for every family: the image of a seed, and its network
  evaluations (the adaptive solvers' own steps), are the same in a batch of 3 as alone."""
  if data == "images":
    config, shape = tiny_config(**{"sampling.method": method}), (8, 8, 1)
  else:
    config, shape = tiny_toy_config(**{"sampling.method": method}), (2,)
  config.sampling.steps = 3
  model, variables = get_model(config), init_model(jax.random.PRNGKey(0), config)
  sde, eps = sde_lib.get_sde(config)
  inverse = datasets.get_data_inverse_scaler(config)

  def samples(seeds):
    fn = sampling.get_seed_sampling_fn(config, sde, model, (len(seeds),) + shape, inverse, eps)
    out = fn(jax.vmap(jax.random.PRNGKey)(jnp.asarray(seeds)), variables)
    return np.asarray(out.samples), np.asarray(out.nfe)

  (three, three_nfe), (alone, alone_nfe) = samples([5, 1, 9]), samples([9])
  assert three_nfe[2] == alone_nfe[0] > 0, (three_nfe, alone_nfe)
  np.testing.assert_allclose(three[2], alone[0], rtol=1e-6, atol=1e-6)
  assert np.isfinite(three).all() and np.abs(three[0] - three[1]).max() > 0.1  # different seeds, different samples
