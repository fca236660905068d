"""The GPU benchmark's plumbing, dry-run on CPU (tiny configs): what a short device loan will run."""

import json
import pathlib
import sys

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


def test_rows_are_ordered_by_value_and_validated():
  assert gpu_train.ROWS[:2] == [("train", "ddpmpp", "bf16"), ("train", "ddpmpp", "tf32")]
  try:
    gpu_train.main(["--dry_run", "--rows", "train:unet:bf16"])
  except SystemExit as exit:
    assert "unknown row train:unet:bf16" in str(exit)
  else:
    raise AssertionError("an unknown row must be refused")
