"""`--mode=fid` / `--mode=fid_stats --samples`: any images against any images or statistics."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import scipy.linalg
from PIL import Image

from score_jax import toy_data
from score_jax.drivers import sample_quality
from score_jax.metrics import distances

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_precision_recall_closed_forms():
  rng = np.random.default_rng(0)
  real = rng.normal(size=(200, 5))
  assert distances.precision_recall(real, real) == (1.0, 1.0)  # every point is inside its own sphere
  assert distances.precision_recall(real, real + 100.0) == (0.0, 0.0)  # disjoint manifolds
  # On a line at 0, 1, ..., 9 the 3rd neighbour of 9 is 3 away: 12.0 lies on the edge of its sphere, 13 and
  # 13.5 outside every sphere, 4.5 inside.
  line = np.arange(10.0)[:, None]
  fake = np.array([[4.5], [12.0], [13.0], [13.5]])
  precision, recall = distances.precision_recall(line, fake, k=3)
  assert precision == 0.5  # 4.5 and 12.0 inside, 13.0 and 13.5 outside
  # Fake radii (3rd neighbour among the fakes): 4.5 -> 9, so every real point lies within 4.5's sphere.
  assert recall == 1.0
  # Four fakes at one point: radius 0, so they cover no real point; they lie inside the real manifold.
  assert distances.precision_recall(line, fake[:1].repeat(4, 0), k=3) == (1.0, 0.0)


def write_pngs(folder, images):
  os.makedirs(folder, exist_ok=True)
  for i, image in enumerate(images):
    Image.fromarray(image[..., 0]).save(os.path.join(folder, f"{i:04d}.png"))
  return folder


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
  images = toy_data.load_digits(16)[0][:300]
  root = tmp_path_factory.mktemp("fid")
  brighter = np.clip(images.astype(np.int32) + 40, 0, 255).astype(np.uint8)
  return (write_pngs(str(root / "digits"), images), write_pngs(str(root / "brighter"), brighter),
          images, brighter, root)


@pytest.mark.filterwarnings("ignore::scipy.linalg.LinAlgWarning")  # the 64 features of 300 digits are rank-deficient
def test_fid_of_a_folder_against_itself_is_zero_and_against_a_shifted_copy_the_formula(folders):
  digits, brighter, images, shifted, _ = folders
  same = sample_quality.compare(digits, digits, features="digits")
  assert same["feature_network"] == "digits" and same["num_samples"] == same["num_reference"] == 300
  assert abs(same["fid"]) < 1e-4 and same["precision"] == same["recall"] == 1.0
  report = sample_quality.compare(brighter, digits, features="digits")
  features_fn = sample_quality.feature_network("digits")
  a, b = features_fn(shifted)[0].astype(np.float64), features_fn(images)[0].astype(np.float64)
  mu_a, mu_b, s_a, s_b = a.mean(0), b.mean(0), np.cov(a, rowvar=False), np.cov(b, rowvar=False)
  expected = np.sum((mu_a - mu_b) ** 2) + np.trace(s_a + s_b - 2 * scipy.linalg.sqrtm(s_a @ s_b).real)
  assert report["fid"] > 1.0
  np.testing.assert_allclose(report["fid"], expected, rtol=1e-4)
  assert "inception_score" not in report and 0 <= report["precision"] <= 1 and report["kid"] > 0


def test_inception_reports_its_score(folders):
  digits, brighter, *_ = folders
  fake = lambda images: (images.reshape(len(images), -1)[:, :8].astype(np.float32),  # noqa: E731
                         np.tile(np.eye(4)[None, 0], (len(images), 1)))
  report = sample_quality.compare(brighter, digits, features="inception", features_fn=fake)
  assert report["feature_network"] == "inception" and report["inception_score"] == pytest.approx(1.0)


def test_statistics_files_and_npz_samples(folders):
  digits, brighter, images, shifted, root = folders
  stats = sample_quality.write_statistics(digits, str(root / "stats.npz"), features="digits")
  from_stats = sample_quality.compare(brighter, stats, features="digits")
  from_folder = sample_quality.compare(brighter, digits, features="digits")
  for key in ("fid", "kid", "precision", "recall"):
    assert from_stats[key] == pytest.approx(from_folder[key], rel=1e-6), key
  np.savez(root / "brighter.npz", images=shifted)
  assert sample_quality.compare(str(root / "brighter.npz"), stats, features="digits")["fid"] == pytest.approx(
      from_folder["fid"], rel=1e-6)
  with np.load(stats) as data:
    np.savez(root / "moments.npz", mu=data["mu"], sigma=data["sigma"])
  moments_only = sample_quality.compare(brighter, str(root / "moments.npz"), features="digits")
  assert moments_only["fid"] == pytest.approx(from_folder["fid"], rel=1e-6) and "kid" not in moments_only
  with pytest.raises(ValueError, match="holds digits features; compare with --features=digits"):
    sample_quality.compare(brighter, stats, features="inception", features_fn=lambda x: None)


def run_main(*args):
  return subprocess.run([sys.executable, "main.py", *args], cwd=REPO, capture_output=True, text=True, timeout=300)


def test_command_line_needs_no_config_and_errors_are_one_line(folders):
  digits, brighter, *_, root = folders
  out = str(root / "report.json")
  result = run_main("--mode=fid", f"--samples={brighter}", f"--ref={digits}", "--features=digits", f"--out={out}")
  assert result.returncode == 0, result.stderr[-2000:]
  with open(out) as f:
    report = json.load(f)
  assert report["feature_network"] == "digits" and report["fid"] > 1.0
  for args, message in [
      ((f"--samples={brighter}", "--features=digits"), "main.py: --mode=fid needs --ref"),
      ((f"--samples={root / 'nowhere'}", f"--ref={digits}", "--features=digits"), "does not exist"),
      ((f"--samples={brighter}", f"--ref={digits}", "--features=vgg"), "--features='vgg' is not valid"),
  ]:
    bad = run_main("--mode=fid", *args)
    assert bad.returncode != 0 and "Traceback" not in bad.stderr, bad.stderr[-2000:]
    assert message in bad.stderr.strip().splitlines()[-1], bad.stderr[-500:]
