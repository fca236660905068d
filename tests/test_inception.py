"""FID Inception-v3: topology (parameter count), weight mapping, pre-processing, a PyTorch cross-check, downloads.

The PyTorch network below is an independent, minimal re-implementation of the
pytorch-fid model (torchvision is not needed); its `state_dict()` has the names
of the released `pt_inception-2015-12-05` file. Torch tests skip without torch.
All forward passes use 32x32 uint8 inputs and `batch_size=2`: one compilation.
"""

import hashlib
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from score_jax.metrics import inception

PARAMS = 23_850_960        # trainable: convolutions, BatchNorm scale/bias, 2048 x 1008 fc + bias
BATCH_STATS = 34_432       # BatchNorm running mean/var: 2 x 17,216 channels in 94 BasicConv layers


def _num(tree):
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def _random_variables(seed=0):
  """Variables with the model's shapes (from `jax.eval_shape` of init), filled so activations stay O(1)."""
  rng = np.random.default_rng(seed)

  def fill(path, leaf):
    name = jax.tree_util.keystr(path)
    if name.endswith("['kernel']"):
      return rng.normal(0, np.sqrt(2.0 / np.prod(leaf.shape[:-1])), leaf.shape).astype(np.float32)
    if name.endswith("['scale']") or name.endswith("['var']"):
      return rng.uniform(0.5, 1.5, leaf.shape).astype(np.float32)
    return rng.uniform(-0.1, 0.1, leaf.shape).astype(np.float32)  # BN / fc bias, running mean
  return jax.tree_util.tree_map_with_path(fill, inception.variable_shapes())


def _to_state_dict(variables):
  """The inverse of `inception.state_dict_to_variables`, for a torch-free round trip."""
  names = {"scale": "weight", "bias": "bias", "mean": "running_mean", "var": "running_var"}
  state_dict = {}
  for collection in ("params", "batch_stats"):
    for path, value in jax.tree_util.tree_leaves_with_path(variables[collection]):
      keys = [p.key for p in path]
      value = np.asarray(value)
      if keys[-1] == "kernel":
        value = value.T if keys[0] == "fc" else value.transpose(3, 2, 0, 1)
        keys[-1] = "weight"
      else:
        keys[-1] = names[keys[-1]]
      state_dict[".".join(keys)] = value
  return state_dict


@pytest.fixture(scope="module")
def images():
  return np.random.default_rng(1).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)


def test_shapes_and_parameter_count():
  shapes = inception.variable_shapes()
  assert _num(shapes["params"]) == PARAMS
  assert _num(shapes["batch_stats"]) == BATCH_STATS
  assert shapes["params"]["fc"]["kernel"].shape == (2048, 1008)
  assert len(jax.tree.leaves(shapes["batch_stats"])) == 2 * 94
  model = inception.InceptionV3()
  for x in (jnp.zeros((2, 32, 32, 3), jnp.uint8), jnp.zeros((1, 512, 384, 3), jnp.float32)):
    out = jax.eval_shape(model.apply, shapes, x)
    assert out.pool3.shape == (len(x), 2048) and out.logits.shape == (len(x), 1008)


def test_state_dict_round_trip_and_checks():
  variables = _random_variables()
  state_dict = _to_state_dict(variables)
  assert len(state_dict) == 94 * 5 + 2  # conv.weight + 4 BN entries per layer, fc weight and bias
  state_dict["Mixed_5b.branch1x1.bn.num_batches_tracked"] = np.array(0)  # ignored
  loaded = inception.state_dict_to_variables({"module." + k: v for k, v in state_dict.items()})
  jax.tree.map(np.testing.assert_array_equal, loaded, variables)

  with pytest.raises(ValueError, match="unexpected entry"):
    inception.state_dict_to_variables({**state_dict, "Mixed_5b.extra.weight": np.zeros(3)})
  bad = dict(state_dict)
  bad["Mixed_6b.branch7x7_2.conv.weight"] = bad["Mixed_6b.branch7x7_2.conv.weight"].transpose(0, 1, 3, 2)
  del bad["fc.bias"]
  with pytest.raises(ValueError, match=r"missing \['params'\]\['fc'\]\['bias'\].*\(7, 1, 128, 128\) != \(1, 7"):
    inception.state_dict_to_variables(bad)


def test_features_fn_batches_without_retracing(images):
  features_fn = inception.get_inception_fn(variables=_random_variables(), batch_size=2)
  pool3, logits = features_fn(images)                 # chunks [0, 1], [2, pad]
  permuted = features_fn(images[[2, 0, 1]])            # chunks [2, 0], [1, pad]
  assert pool3.shape == (3, 2048) and logits.shape == (3, 1008) and pool3.dtype == np.float32
  assert np.all(np.isfinite(logits)) and np.all(pool3 >= 0) and pool3.std() > 1e-3
  np.testing.assert_allclose(permuted.pool3, pool3[[2, 0, 1]], rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(permuted.logits, logits[[2, 0, 1]], rtol=1e-5, atol=1e-4)
  assert inception._jitted_apply("pytorch", None)._cache_size() == 1
  # uint8 input means x / 255: the same pre-processed image as float input in [0, 1].
  np.testing.assert_allclose(inception.preprocess(images), inception.preprocess(images / np.float32(255)),
                             atol=1e-6)


def test_tf1_resize_has_no_half_pixel_offset():
  x = jnp.arange(4, dtype=jnp.float32).reshape(1, 4, 1, 1)
  out = inception.resize_bilinear(x, (8, 1), half_pixel_centers=False)
  np.testing.assert_allclose(out.ravel(), [0, 0.5, 1, 1.5, 2, 2.5, 3, 3])
  out = inception.resize_bilinear(x, (8, 1))  # half-pixel centres, clamped at both ends
  np.testing.assert_allclose(out.ravel(), [0, 0.25, 0.75, 1.25, 1.75, 2.25, 2.75, 3])
  with pytest.raises(ValueError, match="unknown resize"):
    inception.preprocess(x, resize="area")


# --------------------------------------------------------------------------- downloads

def test_missing_path_and_offline_errors(tmp_path):
  url = (tmp_path / "offline" / "pt_inception-2015-12-05-6726825d.pth").as_uri()  # nothing there: a failed fetch
  target = tmp_path / "cache" / "pt_inception-2015-12-05-6726825d.pth"
  with pytest.raises(OSError, match=f"download {url} to {target} and pass eval.inception_path={target}"):
    inception.get_inception_fn(url=url, cache_dir=str(tmp_path / "cache"))
  assert not target.exists() and not list((tmp_path / "cache").iterdir())  # no partial file left behind
  with pytest.raises(FileNotFoundError, match="pass eval.inception_path="):
    inception.resolve_weights(path=str(tmp_path / "nope.pth"))


def test_download_once_and_hash_check(tmp_path):
  payload = b"not really weights"
  prefix = hashlib.sha256(payload).hexdigest()[:8]
  source = tmp_path / f"weights-{prefix}.pth"
  source.write_bytes(payload)
  cache = tmp_path / "cache"
  target = inception.resolve_weights(url=source.as_uri(), cache_dir=str(cache))
  assert pathlib.Path(target) == cache / source.name and pathlib.Path(target).read_bytes() == payload
  source.unlink()  # a second call uses the cached copy
  assert inception.resolve_weights(url=source.as_uri(), cache_dir=str(cache)) == target

  wrong = tmp_path / "weights-deadbeef.pth"
  wrong.write_bytes(payload)
  with pytest.raises(OSError, match="does not start with deadbeef"):
    inception.resolve_weights(url=wrong.as_uri(), cache_dir=str(cache))
  assert not (cache / wrong.name).exists()


# --------------------------------------------------------------------------- PyTorch cross-checks

def _torch_inception(torch):
  """pytorch-fid's FID Inception, written from its description (names match the released state dict)."""
  nn, F = torch.nn, torch.nn.functional

  class Conv(nn.Module):
    def __init__(self, cin, cout, kernel, stride=1, padding=0):
      super().__init__()
      self.conv = nn.Conv2d(cin, cout, kernel, stride, padding, bias=False)
      self.bn = nn.BatchNorm2d(cout, eps=0.001)

    def forward(self, x):
      return F.relu(self.bn(self.conv(x)))

  def avg(x):
    return F.avg_pool2d(x, 3, 1, 1, count_include_pad=False)

  class A(nn.Module):
    def __init__(self, cin, pool):
      super().__init__()
      self.branch1x1 = Conv(cin, 64, 1)
      self.branch5x5_1, self.branch5x5_2 = Conv(cin, 48, 1), Conv(48, 64, 5, padding=2)
      self.branch3x3dbl_1 = Conv(cin, 64, 1)
      self.branch3x3dbl_2, self.branch3x3dbl_3 = Conv(64, 96, 3, padding=1), Conv(96, 96, 3, padding=1)
      self.branch_pool = Conv(cin, pool, 1)

    def forward(self, x):
      return torch.cat([self.branch1x1(x), self.branch5x5_2(self.branch5x5_1(x)),
                        self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
                        self.branch_pool(avg(x))], 1)

  class B(nn.Module):
    def __init__(self, cin):
      super().__init__()
      self.branch3x3 = Conv(cin, 384, 3, stride=2)
      self.branch3x3dbl_1, self.branch3x3dbl_2 = Conv(cin, 64, 1), Conv(64, 96, 3, padding=1)
      self.branch3x3dbl_3 = Conv(96, 96, 3, stride=2)

    def forward(self, x):
      return torch.cat([self.branch3x3(x), self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
                        F.max_pool2d(x, 3, 2)], 1)

  class C(nn.Module):
    def __init__(self, cin, c7):
      super().__init__()
      row, col = dict(kernel=(1, 7), padding=(0, 3)), dict(kernel=(7, 1), padding=(3, 0))
      self.branch1x1 = Conv(cin, 192, 1)
      self.branch7x7_1, self.branch7x7_2, self.branch7x7_3 = Conv(cin, c7, 1), Conv(c7, c7, **row), Conv(
          c7, 192, **col)
      self.branch7x7dbl_1, self.branch7x7dbl_2 = Conv(cin, c7, 1), Conv(c7, c7, **col)
      self.branch7x7dbl_3, self.branch7x7dbl_4 = Conv(c7, c7, **row), Conv(c7, c7, **col)
      self.branch7x7dbl_5 = Conv(c7, 192, **row)
      self.branch_pool = Conv(cin, 192, 1)

    def forward(self, x):
      dbl = x
      for i in range(1, 6):
        dbl = getattr(self, f"branch7x7dbl_{i}")(dbl)
      return torch.cat([self.branch1x1(x), self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x))), dbl,
                        self.branch_pool(avg(x))], 1)

  class D(nn.Module):
    def __init__(self, cin):
      super().__init__()
      self.branch3x3_1, self.branch3x3_2 = Conv(cin, 192, 1), Conv(192, 320, 3, stride=2)
      self.branch7x7x3_1, self.branch7x7x3_2 = Conv(cin, 192, 1), Conv(192, 192, (1, 7), padding=(0, 3))
      self.branch7x7x3_3, self.branch7x7x3_4 = Conv(192, 192, (7, 1), padding=(3, 0)), Conv(192, 192, 3, stride=2)

    def forward(self, x):
      seven = x
      for i in range(1, 5):
        seven = getattr(self, f"branch7x7x3_{i}")(seven)
      return torch.cat([self.branch3x3_2(self.branch3x3_1(x)), seven, F.max_pool2d(x, 3, 2)], 1)

  class E(nn.Module):
    def __init__(self, cin, max_pool):
      super().__init__()
      self.max_pool = max_pool
      self.branch1x1 = Conv(cin, 320, 1)
      self.branch3x3_1 = Conv(cin, 384, 1)
      self.branch3x3_2a, self.branch3x3_2b = Conv(384, 384, (1, 3), padding=(0, 1)), Conv(384, 384, (3, 1),
                                                                                            padding=(1, 0))
      self.branch3x3dbl_1, self.branch3x3dbl_2 = Conv(cin, 448, 1), Conv(448, 384, 3, padding=1)
      self.branch3x3dbl_3a = Conv(384, 384, (1, 3), padding=(0, 1))
      self.branch3x3dbl_3b = Conv(384, 384, (3, 1), padding=(1, 0))
      self.branch_pool = Conv(cin, 192, 1)

    def forward(self, x):
      a = self.branch3x3_1(x)
      b = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
      pooled = F.max_pool2d(x, 3, 1, 1) if self.max_pool else avg(x)
      return torch.cat([self.branch1x1(x), self.branch3x3_2a(a), self.branch3x3_2b(a), self.branch3x3dbl_3a(b),
                        self.branch3x3dbl_3b(b), self.branch_pool(pooled)], 1)

  class Net(nn.Module):
    def __init__(self):
      super().__init__()
      self.Conv2d_1a_3x3, self.Conv2d_2a_3x3 = Conv(3, 32, 3, stride=2), Conv(32, 32, 3)
      self.Conv2d_2b_3x3, self.Conv2d_3b_1x1, self.Conv2d_4a_3x3 = Conv(32, 64, 3, padding=1), Conv(64, 80, 1), Conv(
          80, 192, 3)
      self.Mixed_5b, self.Mixed_5c, self.Mixed_5d = A(192, 32), A(256, 64), A(288, 64)
      self.Mixed_6a = B(288)
      self.Mixed_6b, self.Mixed_6c, self.Mixed_6d, self.Mixed_6e = C(768, 128), C(768, 160), C(768, 160), C(768, 192)
      self.Mixed_7a, self.Mixed_7b, self.Mixed_7c = D(768), E(1280, False), E(2048, True)
      self.fc = nn.Linear(2048, 1008)

    def forward(self, images01):
      x = 2 * F.interpolate(images01, size=(299, 299), mode="bilinear", align_corners=False) - 1
      x = F.max_pool2d(self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x))), 3, 2)
      x = F.max_pool2d(self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x)), 3, 2)
      for name in ("5b", "5c", "5d", "6a", "6b", "6c", "6d", "6e", "7a", "7b", "7c"):
        x = getattr(self, f"Mixed_{name}")(x)
      pool3 = x.mean((2, 3))
      return pool3, self.fc(pool3)

  return Net()


def test_matches_pytorch_through_a_pth_file(tmp_path, images):
  torch = pytest.importorskip("torch")
  torch.manual_seed(0)
  net = _torch_inception(torch).eval()
  assert sum(p.numel() for p in net.parameters()) == PARAMS
  with torch.no_grad():  # random weights that keep activations O(1) through the 48 layers
    for name, tensor in net.state_dict().items():
      if name.endswith("conv.weight") or name == "fc.weight":
        tensor.normal_(0, float(np.sqrt(2.0 / np.prod(tensor.shape[1:]))))
      elif name.endswith(("bn.weight", "running_var")):
        tensor.uniform_(0.5, 1.5)
      elif tensor.is_floating_point():
        tensor.uniform_(-0.1, 0.1)
    path = tmp_path / "pt_inception.pth"
    torch.save(net.state_dict(), path)
    want_pool3, want_logits = net(torch.from_numpy(images[:2]).permute(0, 3, 1, 2).float() / 255)

  features_fn = inception.get_inception_fn(path=str(path), batch_size=2)
  pool3, logits = features_fn(images[:2])
  want_pool3, want_logits = want_pool3.numpy(), want_logits.numpy()
  assert want_pool3.std() > 1e-2 and want_logits.std() > 1e-2  # a meaningful comparison
  np.testing.assert_allclose(pool3, want_pool3, rtol=0, atol=2e-5 * np.abs(want_pool3).max())
  np.testing.assert_allclose(logits, want_logits, rtol=0, atol=2e-5 * np.abs(want_logits).max())


@pytest.mark.parametrize("size", [(32, 32), (64, 48), (17, 300), (512, 400)])
def test_resize_matches_torch_interpolate(size):
  torch = pytest.importorskip("torch")
  x = np.random.default_rng(2).uniform(0, 1, (2, *size, 3)).astype(np.float32)
  want = torch.nn.functional.interpolate(torch.from_numpy(x).permute(0, 3, 1, 2), size=(299, 299),
                                         mode="bilinear", align_corners=False).permute(0, 2, 3, 1).numpy()
  np.testing.assert_allclose(inception.resize_bilinear(jnp.asarray(x), (299, 299)), want, atol=1e-6)
