"""The benchmarks' plumbing, dry-run on CPU (tiny configs): what a short device loan will run, and every model,
sampler and row of the few-step, EDM2 and autoguidance benchmarks (`--dry_run`: tiny networks trained 2 steps)."""

import importlib
import json
import pathlib
import sys

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "benchmarks"))

import gpu_train  # noqa: E402


def test_gpu_benchmark_dry_run_writes_every_row(tmp_path):
  out = tmp_path / "gpu.json"
  # float32 rows: XLA:CPU compiles bf16 convolutions slowly (tests/test_mixed_precision.py covers bf16)
  gpu_train.main(["--dry_run", "--rows", "train:ddpmpp:tf32,sample_pc:ddpmpp:tf32",
                  "--json", str(out), "--cache_dir", str(tmp_path / "cache")])
  result = json.loads(out.read_text())
  assert [(r["kind"], r["precision"]) for r in result["rows"]] == [("train", "tf32"), ("sample_pc", "tf32")]
  for row in result["rows"]:
    assert row["images_per_s"] > 0 and row["compile_s"] > 0
  train = result["rows"][0]
  assert train["flops_per_step"] > 0 and train["achieved_tflops"] > 0 and train["parameters"] > 0
  assert result["rows"][1]["nfe"] == 1000  # the PC row is timed over a few steps and scaled to 1000
  assert result["bf16_over_tf32_images_per_s"] is None  # one of the two training rows ran
  assert gpu_train._ratio([dict(train, precision="bf16", images_per_s=90.0), train]) == 90.0 / train["images_per_s"]


def test_gpu_benchmark_dry_run_writes_the_latent_rows(tmp_path):
  """DiT-XL/2's training row (on latents of ImageNet-256's shape) and the SD-VAE's encode / decode rows."""
  out = tmp_path / "gpu.json"
  gpu_train.main(["--dry_run", "--rows", "train:dit_xl2:bf16,encode:sd_vae:float32,decode:sd_vae:float32",
                  "--json", str(out), "--cache_dir", str(tmp_path / "cache")])
  rows = json.loads(out.read_text())["rows"]
  assert [(r["kind"], r["model"]) for r in rows] == [("train", "dit_xl2"), ("encode", "sd_vae"), ("decode", "sd_vae")]
  assert all(r["images_per_s"] > 0 and r["parameters"] > 0 for r in rows)
  assert rows[0]["flops_per_step"] > 0 and rows[0]["batch_size"] == 4  # --dry_run's DiT batch


def test_rows_are_ordered_by_value_and_validated():
  assert gpu_train.ROWS[:2] == [("train", "ddpmpp", "bf16"), ("train", "ddpmpp", "tf32")]
  try:
    gpu_train.main(["--dry_run", "--rows", "train:unet:bf16"])
  except SystemExit as exit:
    assert "unknown row train:unet:bf16" in str(exit)
  else:
    raise AssertionError("an unknown row must be refused")


def _dry_run(script, tmp_path, *extra):
  """`benchmarks/<script>.py --dry_run` into tmp_path; its JSON rows."""
  module = importlib.import_module(script)
  module.main(["--dry_run", "--out_dir", str(tmp_path / "out"), "--workdir", str(tmp_path / "runs"), *extra])
  return json.loads((tmp_path / "out" / f"{script}.json").read_text())


def test_fewstep_dry_run_writes_every_model_and_sampler(tmp_path):
  import fewstep

  rows = _dry_run("fewstep", tmp_path)
  assert [m for m in fewstep.MODELS if any(r["model"] == m for r in rows)] == list(fewstep.MODELS)
  assert {(r["model"], r["sampler"]) for r in rows} >= {("vp_dsm", "pc"), ("edm", "heun"), ("reflow", "ddim"),
                                                        ("scd", "consistency"), ("trigflow", "dpm_solver")}
  for row in rows:
    assert 0.0 <= row["on_board"] <= 1.0 and row["nfe"] > 0 and row["train_steps"] == 2 and row["train_seconds"] > 0
  assert (tmp_path / "out" / "fewstep.png").exists()
  (tmp_path / "out" / "fewstep.png").unlink()
  again = _dry_run("fewstep", tmp_path, "--models", "consistency_distillation")  # its runs reused, others kept
  assert [r["model"] for r in again] == [r["model"] for r in rows]
  assert (tmp_path / "out" / "fewstep_consistency_distillation.png").exists()
  assert not (tmp_path / "out" / "fewstep.png").exists()
  assert fewstep.needed(["consistency_distillation"]) == ["edm", "consistency_distillation"]


def test_fewstep_digits_dry_run_writes_every_model(tmp_path):
  import fewstep_digits

  rows = _dry_run("fewstep_digits", tmp_path)
  assert [(r["model"], r["sampler"], r["nfe"]) for r in rows] == [
      ("edm_teacher", "heun", 3), ("edm_teacher", "dpm_solver", 3), *[(name, "consistency", n) for name in
                                                                     list(fewstep_digits.MODELS)[1:] for n in (1, 2)]]
  for row in rows:
    assert np.isfinite(row["digits_fd"]) and row["train_steps"] == 2 and row["num_samples"] == 64
  assert (tmp_path / "out" / "fewstep_digits.png").exists()


def test_edm2_digits_dry_run_writes_every_run_and_guidance(tmp_path):
  rows = _dry_run("edm2_digits", tmp_path, "--ddpmpp_workdir", str(tmp_path / "runs" / "ddpmpp"))
  assert [(r["model"], r["guidance"], r["w"]) for r in rows] == [
      ("ddpmpp", "none", 0.0), ("edm2", "none", 0.0), ("edm2", "autoguidance", 0.5),
      ("edm2", "autoguidance_same_size_guide", 0.5), ("edm2_conditional", "none", 0.0),
      ("edm2_conditional", "autoguidance", 0.5), ("edm2_conditional", "classifier_free", 0.5)]
  for row in rows:  # Heun at 2 steps: 3 evaluations, twice with a guide
    assert row["nfe"] == (3 if row["guidance"] == "none" else 6) and np.isfinite(row["digits_fd"])
    assert row["step"] == 2 and row["parameters"] > 0
  assert (tmp_path / "out" / "edm2_digits.png").exists()


def test_autoguidance_dry_run_writes_every_case_sampler_and_weight(tmp_path):
  import autoguidance

  rows = _dry_run("autoguidance", tmp_path)
  assert [(r["model"], r["guidance"], r["sampler"], r["w"]) for r in rows] == [
      (model, guidance, sampler, w) for model, guidance in [("main", "autoguidance"),
                                                            ("main_conditional", "autoguidance"),
                                                            ("main_conditional", "classifier_free")]
      for sampler in autoguidance.SAMPLERS for w in (0.0, 0.5)]
  for row in rows:
    assert 0.0 <= row["off_support"] <= 1.0 and row["min_share"] >= 0.0
  nfe = {(r["model"], r["guidance"], r["sampler"], r["w"]): r["nfe"] for r in rows}
  for (model, guidance, sampler, w), evaluations in nfe.items():  # a guided evaluation is two
    assert evaluations == (2 if w else 1) * nfe[(model, guidance, sampler, 0.0)] > 0
  assert (tmp_path / "out" / "autoguidance.png").exists()


def test_dit_digits_dry_run_writes_each_run_and_snapshot(tmp_path):
  """DiT and DiT + REPA (tiny, 2 steps, snapshots at 1 and 2): FD rows and the steps to reach DiT's final FD."""
  rows = _dry_run("dit_digits", tmp_path)
  snapshots = [(r["run"], r["step"]) for r in rows[:-1]]
  assert snapshots == [("dit", 1), ("dit", 2), ("dit_repa", 1), ("dit_repa", 2)]
  assert all(r["digits_fd"] > 0 and r["parameters"] > 0 for r in rows[:-1])
  assert rows[1]["parameters"] == rows[3]["parameters"]  # the network alone, without REPA's projector
  summary = rows[-1]
  assert summary["run"] == "summary" and summary["dit_final_fd"] == rows[1]["digits_fd"]
  assert summary["steps_to_reach"]["dit"] in (1, 2) and set(summary["steps_to_reach"]) == {"dit", "dit_repa"}


def test_latent_encoding_dry_run_times_the_cache_and_resumes_a_killed_encoding(tmp_path):
  """The tiny test VAE on 64 images of 16 px; the encoding killed with SIGKILL after two chunks resumes to the
  same cache."""
  import latent_encoding

  result = latent_encoding.main(["--dry_run", "--kill_demo", "--json", str(tmp_path / "latent_encoding.json")])
  assert result["images_per_s"] > 0 and result["latent_shape"] == [8, 8, 4]
  assert result["kill_demo"]["resume_identical"] and result["kill_demo"]["chunks_before_kill"] >= 2


def test_autoencoder_digits_dry_run_reconstructs_the_held_out_digits(tmp_path):
  """The project's own autoencoder (tiny, 2 steps): reconstruction MSE and digits FD of the 297 held-out digits
  from the posterior mean and a draw, beside the FD of real training digits."""
  result = _dry_run_single("autoencoder_digits", tmp_path)
  assert result["latent_shape"] == [4, 4, 2] and result["num_held_out"] == 297 and result["scaling_factor"] > 0
  assert set(result["reconstructions"]) == {"posterior_mean", "posterior_draw"}
  assert all(row["mse"] > 0 and row["digits_fd"] > 0 for row in result["reconstructions"].values())
  assert 0 < result["digits_fd_train_vs_held_out"] < min(r["digits_fd"] for r in result["reconstructions"].values())


def _dry_run_single(script, tmp_path):
  """`benchmarks/<script>.py --dry_run` into tmp_path; its one JSON object."""
  importlib.import_module(script).main(["--dry_run", "--out_dir", str(tmp_path / "out"), "--workdir",
                                        str(tmp_path / "runs")])
  return json.loads((tmp_path / "out" / f"{script}.json").read_text())


def test_meanflow_dry_run_writes_its_rows_and_the_step_cost(tmp_path):
  """The checkerboard MeanFlow run (2 steps): a flow-map row with each square's share, and the step-cost ratio."""
  result = _dry_run_single("meanflow", tmp_path)
  assert [(row["sampler"], row["steps"], row["nfe"]) for row in result["rows"]] == [("flow_map", 1, 1)]
  assert len(result["rows"][0]["square_shares"]) == 8 and result["step_cost"]["ratio"] > 0


def test_latent_digits_dry_run_decodes_each_snapshot(tmp_path):
  """A tiny own autoencoder (2 steps), then DiT + REPA on its latents (2 steps): each snapshot's samples decoded to
  8x8 digits and measured, beside the autoencoder's floor."""
  import latent_digits

  result = latent_digits.main(["--dry_run", "--runs", "dit_repa", "--out_dir", str(tmp_path / "out"), "--workdir",
                               str(tmp_path / "runs")])
  assert [(r["run"], r["step"]) for r in result["rows"]] == [("dit_repa", 1), ("dit_repa", 2)]
  assert all(r["digits_fd"] > 0 and r["parameters"] > 0 for r in result["rows"])
  assert result["autoencoder_floor_fd"] > 0 and result["autoencoder"] == str(tmp_path / "runs" / "autoencoder")
  assert (tmp_path / "out" / "latent_digits.png").exists()
