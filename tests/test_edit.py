"""The edit command: inpainting and class-conditional grids from a tiny trained model, inputs, masks, errors."""

import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from PIL import Image

from configs.classifier import digits as digits_classifier
from score_jax import checkpoint, classifier
from score_jax.drivers import edit, train
from tests.helpers import save_untrained_run

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZE, SCALE_TO = 8, 384


def tiny_config():
  """DDPM++ with 8 channels and one resolution on 8 px digits, 10 sampling steps, and a WRN-10-1 classifier."""
  config = digits_classifier.get_config()
  config.data.image_size = SIZE
  model = config.model
  model.nf, model.ch_mult, model.attn_resolutions, model.num_scales = 8, (1,), (), 10
  training = config.training
  training.batch_size, training.n_iters, training.n_jitted_steps = 8, 2, 1
  training.log_freq = training.snapshot_freq = training.snapshot_freq_for_preemption = 2
  training.eval_freq = 1000                 # no held-out loss: one compile less
  training.snapshot_sampling = False
  config.eval.batch_size = config.sampling.batch_size = 8
  c = config.classifier
  c.blocks_per_group, c.channel_multiplier, c.embedding_size, c.temb_dim = 1, 1, 8, 16
  return config


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  """A score model trained for 2 steps and an (untrained) classifier checkpoint beside it."""
  workdir = str(tmp_path_factory.mktemp("edit"))
  config = tiny_config()
  train.train_and_evaluate(config, workdir)
  state = classifier.init_state(jax.random.PRNGKey(0), config, classifier.get_optimizer(config))
  checkpoint.save(classifier.checkpoint_manager(config, workdir), 1, state)
  return workdir


def grid_cells(path, rows, columns):
  """The PNG grid back as `(rows, columns, SIZE, SIZE)` uint8 cells (checks the grid's size on the way)."""
  width = columns * (SIZE + 2) + 2
  scale = SCALE_TO // width
  grid = np.asarray(Image.open(path))
  assert grid.shape == ((rows * (SIZE + 2) + 2) * scale, width * scale)
  pixels = grid[scale // 2::scale, scale // 2::scale]  # one sample per enlarged pixel
  return np.stack([[pixels[2 + r * (SIZE + 2):][:SIZE, 2 + i * (SIZE + 2):][:, :SIZE] for i in range(columns)]
                   for r in range(rows)])


@pytest.mark.parametrize("mask", ["half", "random"])
def test_inpaint_writes_a_grid_and_keeps_known_pixels(workdir, mask):
  path = edit.edit(tiny_config(), workdir, "inpaint", from_dataset=4, mask=mask)
  assert path == os.path.join(workdir, "edits", f"inpaint_{mask}_step2.png")
  original, masked, result = grid_cells(path, 3, 4)
  known = edit.get_mask(mask, SIZE)[..., 0].astype(bool)
  np.testing.assert_array_equal(result[:, known], original[:, known])
  np.testing.assert_array_equal(masked[:, known], original[:, known])
  assert np.all(masked[:, ~known] == 128)  # unknown pixels shown mid-gray
  assert np.abs(result[:, ~known].astype(int) - original[:, ~known]).max() > 0  # something was sampled


def test_conditional_writes_one_row_per_label(workdir):
  path = edit.edit(tiny_config(), workdir, "conditional", labels="0,1,2", guidance_scale=2.0)
  assert os.path.basename(path) == "conditional_scale2_step2.png"
  assert grid_cells(path, 1, 3).shape == (1, 3, SIZE, SIZE)


def test_conditional_with_a_class_conditional_model_uses_classifier_free_guidance(tmp_path):
  """A model with `model.num_classes` needs no classifier: its samples come from the guided score; labels are
  checked against its classes."""
  config = tiny_config()
  config.model.num_classes, config.training.class_dropout = 10, 0.1
  config.classifier.num_classes = 3  # not read: no classifier is involved
  save_untrained_run(config, str(tmp_path))  # untrained: no compile
  path = edit.edit(config, str(tmp_path), "conditional", labels="0,7,9", guidance_scale=2.0)
  assert not os.path.exists(os.path.join(tmp_path, classifier.CLASSIFIER_DIR))
  assert os.path.basename(path) == "conditional_cfg2_step2.png"
  cells = grid_cells(path, 1, 3)
  assert len({cell.tobytes() for cell in cells[0]}) == 3
  with pytest.raises(ValueError, match=r"must be one or more integers in \[0, 10\)"):
    edit.edit(config, str(tmp_path), "conditional", labels="10", guidance_scale=2.0)


def test_image_files_and_mask_files_are_cropped_resized_and_matched(tmp_path):
  rgb = np.zeros((20, 12, 3), np.uint8)
  rgb[:, :6] = 255  # left half white; the centre 12 x 12 crop keeps it
  Image.fromarray(rgb).save(tmp_path / "a.png")
  images = edit.read_images([str(tmp_path / "a.png")], SIZE, 1)
  assert images.shape == (1, SIZE, SIZE, 1)
  assert images[0, :, 0].min() > 0.9 and images[0, :, -1].max() < 0.1
  assert edit.read_images([str(tmp_path / "a.png")], SIZE, 3).shape == (1, SIZE, SIZE, 3)
  mask = edit.get_mask(str(tmp_path / "a.png"), SIZE)
  np.testing.assert_array_equal(mask[..., 0], edit.get_mask("half", SIZE)[..., 0])


def test_bad_inputs_raise_value_errors_before_any_work(tmp_path):
  config, empty = tiny_config(), str(tmp_path)  # no checkpoint: errors must come first
  with pytest.raises(ValueError, match="mask='circle' is neither an image file nor a named mask; choose one of: "
                                       "box, half, outpaint, random, top"):
    edit.edit(config, empty, "inpaint", from_dataset=2, mask="circle")
  with pytest.raises(ValueError, match="mode='denoise' is not valid; choose one of: colorize, conditional, inpaint"):
    edit.edit(config, empty, "denoise", from_dataset=2)
  with pytest.raises(ValueError, match="colorize needs a colour model"):
    edit.edit(config, empty, "colorize", from_dataset=2)
  with pytest.raises(ValueError, match="exactly one of"):
    edit.edit(config, empty, "inpaint")
  with pytest.raises(ValueError, match="cannot read image"):
    edit.edit(config, empty, "inpaint", images=[str(tmp_path / "missing.png")])
  with pytest.raises(ValueError, match=r"integers in \[0, 10\)"):
    edit.edit(config, empty, "conditional", labels="3,10")
  with pytest.raises(ValueError, match="cannot read the run.s config"):
    edit.edit(config, empty, "inpaint", from_dataset=2)


def test_command_line_error_is_one_line(tmp_path):
  result = subprocess.run([sys.executable, "main.py", "--config=configs/digits.py", f"--workdir={tmp_path}",
                           "--mode=inpaint", "--from_dataset=2", "--mask=circle"],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
  assert result.returncode != 0
  assert result.stderr.strip().splitlines()[-1].startswith("main.py: mask='circle' is neither an image file")
  assert "Traceback" not in result.stderr
