"""A trained model loads as its network alone (`trained_model.load_model`), from today's checkpoints and from
those of the one-item layout before; frozen companions (teachers, guides) are read once and checked against
the model they serve; a --config that disagrees with a run's config.json is refused."""

import os
import shutil

import jax
import numpy as np
import pytest

from score_jax import checkpoint, convert, datasets, objectives, run_setup, sampling, trained_model
from score_jax.drivers import evaluate, generate, train
from tests.helpers import FIXTURES, save_untrained_run, tiny_toy_config
from tests.test_generate import tiny_config as tiny_image_config

LEGACY = FIXTURES / "legacy_checkpoints"


def flat(variables):
  return {jax.tree_util.keystr(path): np.asarray(leaf) for path, leaf in jax.tree_util.tree_leaves_with_path(variables)}


@pytest.mark.parametrize("name, step", [("teacher", 20), ("student", 10)])
def test_checkpoints_of_the_one_item_layout_still_load(name, step):
  """Vendored workdirs written by score_jax before the checkpoint items (tests/fixtures/legacy_checkpoints):
  the EMA variables that load_model returned then, exactly; the distilled student's teacher is absent."""
  model, variables, loaded_step = trained_model.load_model(str(LEGACY / name))
  expected = np.load(LEGACY / f"{name}_ema_step{step}.npz")
  got = flat(variables)
  assert loaded_step == step and sorted(got) == sorted(expected.files)
  for key in got:
    np.testing.assert_array_equal(got[key], expected[key])
  if name == "student":  # distilled from a teacher whose workdir does not exist here
    assert not os.path.exists(trained_model.run_config(str(LEGACY / name)).training.teacher_workdir)
    assert type(model.parameterization).__name__ == "Consistency"  # recorded later: from its objective


@pytest.fixture(scope="module")
def distilled(tmp_path_factory):
  """A teacher trained 5 steps, a consistency-distilled student trained 5 steps from it, then the teacher's
  workdir deleted."""
  root = tmp_path_factory.mktemp("distilled")
  teacher, student = str(root / "teacher"), str(root / "student")
  short = {"training.n_iters": 5, "training.n_jitted_steps": 5, "training.log_freq": 5, "training.eval_freq": 5,
           "training.snapshot_freq": 5, "training.snapshot_freq_for_preemption": 5, "training.sde": "vpsde"}
  train.train_and_evaluate(tiny_toy_config(**short), teacher)
  config = tiny_toy_config(**short, **{"training.objective": "consistency_distillation",
                                       "training.teacher_workdir": teacher, "sampling.method": "consistency"})
  train.train_and_evaluate(config, student)
  shutil.rmtree(teacher)
  return config, student


def test_a_distilled_student_samples_evaluates_and_converts_without_its_teacher(distilled, tmp_path):
  config, student = distilled
  model, variables, step = trained_model.load_model(student)
  assert step == 5 and type(model.parameterization).__name__ == "Consistency"
  run = run_setup.RunSetup(run_setup.trained_run_config(student), companions=("guide",))
  samples = np.asarray(run.sampler(64)(jax.random.PRNGKey(0), variables).samples)
  assert samples.shape == (64, 2) and np.isfinite(samples).all()
  config.eval.enable_sampling, config.eval.enable_loss = True, True  # the loss needs the teacher: left out
  config.eval.begin_ckpt = config.eval.end_ckpt = 1
  reports = evaluate.evaluate(config, student, "eval_without_teacher")
  assert "eval_loss" not in reports[1] and np.isfinite(reports[1]["sliced_wasserstein"])
  path = convert.export_checkpoint(student, "safetensors", str(tmp_path / "student.safetensors"))
  _, exported, ema_exported = convert.import_safetensors(path)
  for a, b in zip(jax.tree_util.tree_leaves(ema_exported["params"]), jax.tree_util.tree_leaves(variables["params"])):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  with pytest.raises(ValueError, match="training.teacher_workdir"):  # resuming its training needs the teacher
    run_setup.RunSetup(config)


def test_checkpoints_that_the_config_cannot_read_are_named(tmp_path):
  save_untrained_run(tiny_toy_config(), str(tmp_path))
  wider = tiny_toy_config(**{"model.nf": 32})
  checkpoint.save_run_config(run_setup.prepare_config(wider), str(tmp_path))  # config.json no longer fits
  with pytest.raises(ValueError, match=r"has checkpoints \(steps 2\) but none is readable as the network of its "
                                       r"config.json; the newest: step 2: "):
    trained_model.load_model(str(tmp_path))
  with pytest.raises(ValueError, match="has no checkpoint of step 7; its steps: 2"):
    trained_model.load_model(str(tmp_path), step=7)


def test_a_config_that_disagrees_with_the_runs_own_is_refused(tmp_path):
  """A run trained with overrides that keep the parameter shapes (the path, the data's scaling) samples with its
  own config.json; a --config without those overrides is refused in one line naming them."""
  trained = tiny_image_config(**{"training.sde": "subvpsde", "data.centered": False})
  save_untrained_run(trained, str(tmp_path / "run"))
  with pytest.raises(ValueError, match=r"--config disagrees with .*config.json on what defines the trained model: "
                                       r"training.sde='vpsde' \(the run: 'subvpsde'\)") as error:
    generate.generate(tiny_image_config(), str(tmp_path / "run"), "0", str(tmp_path / "out"))
  assert "data.centered=True (the run: False)" in str(error.value) and "\n" not in str(error.value)
  config = run_setup.trained_run_config(str(tmp_path / "run"),
                                        tiny_image_config(**{"training.sde": "subvpsde", "data.centered": False,
                                                             "sampling.snr": 0.3, "model.ema_rate": 0.5}))
  assert config.training.sde == "subvpsde" and not config.data.centered and config.sampling.snr == 0.3
  assert run_setup.trained_run_config(str(tmp_path / "run")).sampling.snr == trained.sampling.snr


# --- frozen companions -----------------------------------------------------------------------------------------

def companion_workdir(tmp_path, name, **overrides):
  """A workdir holding only the config.json of `tiny_image_config(**overrides)`: the checks read it first."""
  workdir = str(tmp_path / name)
  checkpoint.save_run_config(tiny_image_config(**overrides), workdir)
  return workdir


@pytest.mark.parametrize("overrides, message", [
    ({"data.image_size": 16}, r"models data of shape \(16, 16, 1\), this run \(8, 8, 1\)"),
    ({"data.num_channels": 3}, r"models data of shape \(8, 8, 3\), this run \(8, 8, 1\)"),
    ({"data.centered": False}, "has data.centered=False, this run True"),
    ({"training.sde": "subvpsde"}, "was trained on another path"),
    ({"model.num_classes": 5}, "is conditioned on model.num_classes=5 classes, this run on 10"),
])
def test_a_teacher_that_does_not_fit_is_refused_before_its_weights_are_read(tmp_path, overrides, message):
  teacher = companion_workdir(tmp_path, "teacher", **{"training.sde": "vpsde", "model.num_classes": 10, **overrides})
  student = tiny_image_config(**{"training.sde": "vpsde", "training.objective": "consistency_distillation",
                                 "training.teacher_workdir": teacher, "sampling.method": "consistency",
                                 "model.num_classes": 10})
  with pytest.raises(ValueError, match=f"^training.teacher_workdir='{teacher}' {message}") as error:
    run_setup.RunSetup(student)
  assert "\n" not in str(error.value)


def test_a_guide_of_another_parameterization_or_data_is_refused(tmp_path):
  guide = companion_workdir(tmp_path, "guide", **{"model.parameterization": "eps"})
  main = tiny_image_config(**{"sampling.guidance_workdir": guide, "sampling.guidance_scale": 1.0})
  with pytest.raises(ValueError, match="sampling.guidance_workdir=.* has the Epsilon parameterization, this run "
                                       "Reference: both must share it"):
    run_setup.RunSetup(main)
  guide = companion_workdir(tmp_path, "guide_centered", **{"data.centered": False})
  main.sampling.guidance_workdir = guide
  with pytest.raises(ValueError, match="sampling.guidance_workdir=.* has data.centered=False"):
    run_setup.RunSetup(main)


def test_samplers_open_no_files(tmp_path):
  """A sampler is given its guide: a config naming one without it is refused, not read from disk."""
  guide = companion_workdir(tmp_path, "guide")
  main = run_setup.prepare_config(tiny_image_config(**{"sampling.guidance_workdir": guide,
                                                       "sampling.guidance_scale": 1.0}))
  run = run_setup.RunSetup(main, companions=())
  with pytest.raises(ValueError, match="is set but no guide was passed"):
    sampling.get_sampling_fn(main, run.sde, run.model, (4, 8, 8, 1), datasets.get_data_inverse_scaler(main),
                             run.sampling_eps)


# --- one training step of every teacher objective with a trained teacher read from its workdir ----------------

TEACHERS = {  # name: (teacher overrides, student overrides)
    "cd_continuous_vp": ({"training.sde": "vpsde"},
                         {"training.sde": "vpsde", "training.objective": "consistency_distillation"}),
    "cd_discrete_ddpm": ({"training.sde": "vpsde", "training.continuous": False, "model.num_scales": 100},
                         {"training.sde": "vpsde", "model.num_scales": 100,
                          "training.objective": "consistency_distillation"}),
    "reflow_class_conditional": (
        {"training.sde": "rectified_flow", "model.parameterization": "flow", "model.num_classes": 8,
         "training.class_dropout": 0.1},
        {"training.sde": "rectified_flow", "model.parameterization": "flow", "model.num_classes": 8,
         "training.objective": "reflow", "training.teacher_steps": 4}),
    "scd": ({"training.sde": "cosine", "model.parameterization": "flow"},
            {"training.sde": "cosine", "training.objective": "scm", "training.loss_weighting": "uncertainty"}),
}


@pytest.mark.parametrize("case", sorted(TEACHERS))
def test_one_step_of_each_teacher_objective_with_a_trained_teacher(tmp_path, case):
  teacher_overrides, student_overrides = TEACHERS[case]
  teacher = str(tmp_path / "teacher")
  short = {"training.n_iters": 5, "training.n_jitted_steps": 5, "training.log_freq": 5, "training.eval_freq": 5,
           "training.snapshot_freq": 5, "training.snapshot_freq_for_preemption": 5}
  train.train_and_evaluate(tiny_toy_config(**short, **teacher_overrides), teacher)
  student = tiny_toy_config(**short, **student_overrides, **{"training.teacher_workdir": teacher})
  run = run_setup.RunSetup(student)
  _, teacher_variables, _ = trained_model.load_model(teacher)
  frozen = run.objective.frozen_variables()["teacher"]
  for a, b in zip(jax.tree_util.tree_leaves(frozen), jax.tree_util.tree_leaves(teacher_variables)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  state = run.init_state()
  state, losses = run.multi_step(state, run.train_batches(0))
  assert int(state.step) == 5 and np.isfinite(np.asarray(losses)).all()
  assert "teacher" not in (state.objective_state or {})  # never part of the student's checkpoints
  assert isinstance(run.objective, objectives.OBJECTIVES[student.training.objective])
