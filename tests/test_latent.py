"""Latent data (score_jax.latent_data, score_jax.latent_cache): a run on the latents of the tiny diffusers
SD-VAE fixture (16 px, factor 2, 4 channels) over a folder of 16x16 RGB images written here."""

import json
import lzma
import os
import pathlib
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from configs import digits as digits_config
from score_jax import autoencoder as autoencoder_lib, datasets, latent_cache, latent_data, run_setup, trained_model
from score_jax.drivers import edit, generate, train
from tests.helpers import FIXTURES

VAE = FIXTURES / "diffusers" / "autoencoder_kl" / "sd"
REPO = pathlib.Path(__file__).resolve().parents[1]
NUM_IMAGES, NUM_EVAL = 40, 8


@pytest.fixture(scope="module")
def vae(tmp_path_factory):
  """The fixture folder as the Hub has it (its weights unpacked)."""
  target = tmp_path_factory.mktemp("vae") / "sd"
  target.mkdir()
  shutil.copy(VAE / "config.json", target)
  with lzma.open(VAE / "diffusion_pytorch_model.safetensors.xz") as f:
    (target / "diffusion_pytorch_model.safetensors").write_bytes(f.read())
  return str(target)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
  """A folder of smooth 16x16 RGB images (colour gradients at random angles)."""
  root = tmp_path_factory.mktemp("images")
  rng = np.random.default_rng(0)
  grid = np.stack(np.meshgrid(np.linspace(-1, 1, 16), np.linspace(-1, 1, 16), indexing="ij"), -1)
  for i in range(NUM_IMAGES):
    directions = rng.normal(size=(2, 3))
    image = 0.5 + 0.4 * np.tanh(grid @ directions + rng.normal(size=3))
    Image.fromarray(np.uint8(np.round(image * 255))).save(root / f"{i:05d}.png")
  return str(root)


def latent_config(vae, images, cache, **overrides):
  config = digits_config.get_config()
  settings = {"data.dataset": "folder", "data.path": images, "data.num_channels": 3, "data.num_eval": NUM_EVAL,
              "data.autoencoder": vae, "data.latent_cache": str(cache), "data.autoencoder_batch_size": 8,
              "training.batch_size": 8, "eval.batch_size": 8, "sampling.batch_size": 4, "model.nf": 8,
              "model.ch_mult": (1,), "model.num_res_blocks": 1, "model.attn_resolutions": (), "model.num_scales": 4,
              **overrides}
  for key, value in settings.items():
    config.update_from_flattened_dict({key: value})
  return config


def pixels_of(config, split="train"):
  """The uint8 images of the folder data set in index order."""
  source = datasets.get_dataset(config)
  source = source.train_source if split == "train" else source.eval_source
  return np.stack([source[i] for i in range(len(source))])


def test_the_network_input_follows_the_latents(vae, images, tmp_path):
  config = run_setup.prepare_config(latent_config(vae, images, tmp_path))
  assert (config.data.latent_channels, config.data.latent_factor) == (4, 2)
  run = run_setup.RunSetup(config, companions=())  # reads no autoencoder: --mode=fid_stats reads the pixels
  assert run.data_shape == (8, 8, 4) and run.dataset.train_source[0].shape == (16, 16, 3)


def test_the_cache_holds_the_direct_encoding(vae, images, tmp_path):
  config = run_setup.prepare_config(latent_config(vae, images, tmp_path / "cache"))
  ae = autoencoder_lib.load_autoencoder(vae)
  caches = latent_data.get_latent_data(config, ae).dataset().caches
  for split in ("train", "eval"):
    x = pixels_of(config, split)[:len(caches[split])].astype(np.float32) / 127.5 - 1.0
    mean, logvar = ae.encode(x)
    got_mean, got_std, labels = caches[split].gather(np.arange(len(caches[split])))
    assert labels is None and len(got_mean) == (NUM_IMAGES - NUM_EVAL if split == "train" else NUM_EVAL)
    np.testing.assert_allclose(got_mean, mean, atol=1e-5)
    np.testing.assert_allclose(got_std, np.exp(0.5 * np.asarray(logvar)), rtol=1e-5)


def test_an_interrupted_encoding_resumes_to_the_same_cache(vae, images, tmp_path, monkeypatch):
  monkeypatch.setattr(latent_cache, "CHUNK", 8)  # 4 chunks of training images
  ae = autoencoder_lib.load_autoencoder(vae)
  whole = latent_data.get_latent_data(run_setup.prepare_config(latent_config(vae, images, tmp_path / "a")), ae)
  expected = whole.dataset().caches["train"].gather(np.arange(NUM_IMAGES - NUM_EVAL))
  config = run_setup.prepare_config(latent_config(vae, images, tmp_path / "b"))
  latent_data.get_latent_data(config, ae).dataset().caches  # noqa: B018 -- encodes
  train_dir = tmp_path / "b" / "train"
  shutil.rmtree(train_dir / "chunk_00002")  # killed while writing chunk 2: its temporary folder is left
  shutil.rmtree(train_dir / "chunk_00003")
  (train_dir / "chunk_00002.tmp123").mkdir()
  (train_dir / "chunk_00002.tmp123" / "mean.npy").write_bytes(b"partial")
  calls = []
  original = latent_cache.encode_split
  monkeypatch.setattr(latent_cache, "encode_split", lambda *a, **k: calls.append(original(*a, **k)) or calls[-1])
  resumed = latent_data.get_latent_data(config, ae).dataset().caches["train"]
  assert calls == [2, 0]  # the two missing training chunks, no held-out one
  for got, want in zip(resumed.gather(np.arange(NUM_IMAGES - NUM_EVAL))[:2], expected[:2]):
    np.testing.assert_array_equal(got, want)


def test_a_cache_of_another_autoencoder_is_refused(vae, images, tmp_path):
  ae = autoencoder_lib.load_autoencoder(vae)
  config = run_setup.prepare_config(latent_config(vae, images, tmp_path / "cache"))
  latent_data.get_latent_data(config, ae).dataset().caches  # noqa: B018 -- encodes
  other = str(tmp_path / "other_vae")
  shutil.copytree(vae, other)
  config = run_setup.prepare_config(latent_config(other, images, tmp_path / "cache"))
  with pytest.raises(ValueError, match="data.latent_cache=.*another autoencoder or data.*autoencoder") as error:
    latent_data.get_latent_data(config, ae).dataset().caches  # noqa: B018
  assert "\n" not in str(error.value)


def test_training_draws_have_the_stored_moments(vae, images, tmp_path):
  """z = mean + std eps: (z - mean) / std over many steps is N(0, 1); flips pick either encoding."""
  config = run_setup.prepare_config(latent_config(vae, images, tmp_path, **{"data.random_flip": True}))
  data = latent_data.get_latent_data(config, autoencoder_lib.load_autoencoder(vae))
  dataset = data.dataset()
  cache = dataset.caches["train"]
  size = len(cache)
  mean, std, _ = cache.gather(np.arange(size))
  assert mean.shape == (size, 2, 8, 8, 4)  # as is, mirrored
  ae = autoencoder_lib.load_autoencoder(vae)
  mirrored = pixels_of(config)[:, :, ::-1].astype(np.float32) / 127.5 - 1.0
  np.testing.assert_allclose(mean[:, 1], ae.encode(mirrored)[0], atol=1e-5)
  steps = 120
  z = dataset.train_batches(0, steps).reshape((steps * 8,) + mean.shape[2:])
  positions = np.arange(steps * 8)
  indices = datasets.example_indices(config.seed, size, positions)
  as_is = (z - mean[indices, 0]) / std[indices, 0]
  flipped = (z - mean[indices, 1]) / std[indices, 1]
  unit = np.where((np.abs(as_is).max(axis=(1, 2, 3)) < np.abs(flipped).max(axis=(1, 2, 3)))[:, None, None, None],
                  as_is, flipped)  # each draw's own orientation: the one it is a unit Gaussian of
  picked_flip = np.abs(as_is).max(axis=(1, 2, 3)) >= np.abs(flipped).max(axis=(1, 2, 3))
  assert 0.35 < picked_flip.mean() < 0.65
  assert abs(unit.mean()) < 0.02 and abs(unit.std() - 1.0) < 0.02
  np.testing.assert_allclose(data.scaler(z), (z - 0.0) * 0.18215, rtol=1e-6)  # latent_norm "scaling"
  np.testing.assert_array_equal(dataset.train_batches(5, 2), dataset.train_batches(5, 2))  # a function of the step
  held_out = list(dataset.eval_batches())
  assert len(held_out) == 1 and held_out[0].shape == (8, 8, 8, 4)  # eval.batch_size 8 of the 8 held-out latents
  mean, std, _ = dataset.caches["eval"].gather(np.arange(8))
  eps = (held_out[0] - mean) / std
  assert np.abs(eps).max() < 6 and 0.8 < eps.std() < 1.2  # unflipped draws
  np.testing.assert_array_equal(held_out[0], next(dataset.eval_batches()))


def test_latent_keys_are_checked_and_channel_normalisation_inverts(vae, images, tmp_path):
  config = run_setup.prepare_config(latent_config(vae, images, tmp_path, **{
      "data.latent_norm": "channels", "data.latent_mean": (1.0, 2.0, 3.0, 4.0),
      "data.latent_std": (2.0, 2.0, 4.0, 4.0)}))
  normalize, denormalize = latent_data.get_normalizer(config, None)
  z = np.random.default_rng(0).normal(size=(2, 8, 8, 4)).astype(np.float32)
  np.testing.assert_allclose(normalize(z)[..., 2], (z[..., 2] - 3.0) / 4.0 * 0.5, rtol=1e-6)
  np.testing.assert_allclose(denormalize(normalize(z)), z, rtol=1e-5, atol=1e-6)
  with pytest.raises(ValueError, match="data.latent_std has 3 values"):
    run_setup.prepare_config(latent_config(vae, images, tmp_path, **{
        "data.latent_norm": "channels", "data.latent_mean": (0.0,) * 4, "data.latent_std": (1.0,) * 3}))
  with pytest.raises(ValueError, match="eval.enable_bpd"):
    run_setup.prepare_config(latent_config(vae, images, tmp_path, **{"eval.enable_bpd": True}))
  with pytest.raises(ValueError, match="data.latent_channels=8 and data.latent_factor=2 .* differ"):
    run_setup.prepare_config(latent_config(vae, images, tmp_path, **{"data.latent_channels": 8,
                                                                     "data.latent_factor": 2}))
  with pytest.raises(ValueError, match="data.centered=True"):
    run_setup.prepare_config(latent_config(vae, images, tmp_path, **{"data.centered": False}))
  with pytest.raises(ValueError, match="--mode=inpaint edits pixels"):
    edit.edit(latent_config(vae, images, tmp_path), str(tmp_path), "inpaint", from_dataset=1)


def test_train_then_sample_decoded_pixels_and_load_the_network_alone(vae, images, tmp_path):
  own_vae = str(tmp_path / "vae")
  shutil.copytree(vae, own_vae)
  workdir = str(tmp_path / "run")
  config = latent_config(own_vae, images, tmp_path / "cache", **{
      "training.n_iters": 1, "training.n_jitted_steps": 1, "training.snapshot_freq": 1, "training.log_freq": 1,
      "training.eval_freq": 100, "training.snapshot_sampling": True, "sampling.method": "ddim", "sampling.steps": 2})
  train.train_and_evaluate(config, workdir)
  snapshot = np.load(os.path.join(workdir, "samples", "iter_1.npz"))
  assert snapshot[snapshot.files[0]].shape[1:] == (16, 16, 3)  # decoded pixels
  with open(os.path.join(workdir, "config.json")) as f:
    recorded = json.load(f)["data"]
  assert (recorded["latent_channels"], recorded["latent_factor"]) == (4, 2)
  run = run_setup.RunSetup(config, companions=("guide",))
  variables = trained_model.load_model(workdir)[1]
  program = jax.eval_shape(run.sampler(4).jitted, jax.random.PRNGKey(0), variables, None)
  assert program.samples.shape == (4, 8, 8, 4)  # the decoder runs after the sampler's program, not inside it
  out = str(tmp_path / "samples")
  generate.generate(config, workdir, "0-2", out, batch_size=3)
  for seed in range(3):
    image = np.asarray(Image.open(os.path.join(out, generate.png_name(seed))))
    assert image.shape == (16, 16, 3)
  shutil.rmtree(own_vae)  # the network loads from config.json and the checkpoint alone
  model, variables, step = trained_model.load_model(workdir)
  out = model.apply(variables, jnp.zeros((1, 8, 8, 4)), jnp.ones((1,)))
  assert step == 1 and out.shape == (1, 8, 8, 4)


def test_a_companion_must_model_the_same_latents(vae, images, tmp_path):
  """check_companion compares latent shapes (recorded in both configs), and pixels vs latents and their norm."""
  config = run_setup.prepare_config(latent_config(vae, images, tmp_path, **{"training.teacher_workdir": "teacher"}))
  same = run_setup.prepare_config(latent_config(vae, images, tmp_path))
  trained_model.check_companion(same, config, "training.teacher_workdir", shares=("data",))
  channels = run_setup.prepare_config(latent_config(vae, images, tmp_path, **{
      "data.latent_norm": "channels", "data.latent_mean": (0.0,) * 4, "data.latent_std": (1.0,) * 4}))
  with pytest.raises(ValueError, match="training.teacher_workdir='teacher' models channels data, this run scaling"):
    trained_model.check_companion(channels, config, "training.teacher_workdir", shares=("data",))
  pixels = run_setup.prepare_config(latent_config("", images, tmp_path, **{"data.image_size": 8,
                                                                           "data.num_channels": 4}))
  with pytest.raises(ValueError, match="models pixels data, this run scaling"):
    trained_model.check_companion(pixels, config, "training.teacher_workdir", shares=("data",))
  smaller = run_setup.prepare_config(latent_config(vae, images, tmp_path, **{"data.image_size": 8}))
  with pytest.raises(ValueError, match=r"models data of shape \(4, 4, 4\), this run \(8, 8, 4\)"):
    trained_model.check_companion(smaller, config, "training.teacher_workdir", shares=("data",))


ENCODE_SCRIPT = """
import sys, jax
from score_jax import latent_data, run_setup
from tests.test_latent import latent_config
assert jax.local_device_count() == 4, jax.devices()
config = run_setup.prepare_config(latent_config(sys.argv[1], sys.argv[2], sys.argv[3],
                                                **{"data.autoencoder_batch_size": 12}))
latent_data.get_latent_data(config, latent_data.data_autoencoder(config)).dataset().caches
"""


def test_four_devices_encode_what_one_does(vae, images, tmp_path):
  """The encoding batch split over 4 fake CPU devices (12 a batch: the last one padded) gives the same cache."""
  flags = [f for f in os.environ.get("XLA_FLAGS", "").split() if "device_count" not in f]
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             XLA_FLAGS=" ".join(flags + ["--xla_force_host_platform_device_count=4"]))
  subprocess.run([sys.executable, "-c", ENCODE_SCRIPT, vae, images, str(tmp_path / "four")], cwd=REPO, env=env,
                 check=True, capture_output=True)
  config = run_setup.prepare_config(latent_config(vae, images, tmp_path / "one"))
  one = latent_data.get_latent_data(config, autoencoder_lib.load_autoencoder(vae)).dataset().caches
  for split in ("train", "eval"):
    four = latent_cache.LatentCache(str(tmp_path / "four" / split), len(one[split]))
    everything = np.arange(len(one[split]))
    for a, b in zip(four.gather(everything)[:2], one[split].gather(everything)[:2]):
      np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_repa_in_a_latent_run_aligns_with_the_decoded_clean_images(vae, images, tmp_path):
  """A latent DiT run with REPA: its term equals the term of the pixel pipeline on the batch decoded outside by
  `load_autoencoder(...).decode` (the normaliser inverted by hand); the driver's steps receive the decoder's
  variables as a frozen input and train."""
  from score_jax.objectives import repa

  config = latent_config(vae, images, tmp_path / "cache", **{
      "model.name": "dit", "model.hidden_size": 16, "model.depth": 2, "model.num_heads": 2, "model.patch_size": 2,
      "training.repa_weight": 0.5, "training.repa_depth": 1, "training.repa_hidden": 16,
      "training.repa_encoder": "digits", "training.n_jitted_steps": 1})
  run = run_setup.RunSetup(config)
  assert set(run._frozen) == {repa.ROLE, repa.DECODER_ROLE}
  settings = run.objective.settings.repa
  assert settings.latent and settings.decode is not None
  variables = run.init_state().params
  x = jax.random.normal(jax.random.key(0), (3, 8, 8, 4))
  tokens = (jax.random.normal(jax.random.key(1), (3, 16, 16)),) * 2
  term = repa.repa_term(settings, run.model, {"params": variables}, tokens, x, run.repa_encoder, run.repa_decoder)
  loaded = autoencoder_lib.load_autoencoder(vae)
  pixels = loaded.decode(x / loaded.scaling_factor + loaded.shift_factor)
  pixel_settings = repa.RepaConfig(weight=0.5, depth=1, encoder="digits", centered=True)
  expected = repa.repa_term(pixel_settings, run.model, {"params": variables}, tokens, jnp.clip(pixels, -1, 1),
                            run.repa_encoder)
  np.testing.assert_allclose(term, expected, rtol=1e-5, atol=1e-6)
  state = run.init_state()
  state, losses = run.multi_step(state, run.train_batches(0))
  assert int(state.step) == 1 and np.isfinite(np.asarray(losses)).all()
