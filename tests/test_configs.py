"""Every image config loads, defines the base keys, and builds the reference's network (its parameter count).

Networks are only traced (`jax.eval_shape`), so the 100M-parameter ones cost no memory.
"""

import importlib
import pathlib

import jax
import ml_collections
import numpy as np
import pytest

from score_jax import base_config
from score_jax.models import init_model

CONFIGS = pathlib.Path(__file__).resolve().parents[1] / "configs"

# The reference networks' counts (counted on score_sde_pytorch@cb1f359): params (+ constants: the frozen Fourier W) of the reference networks.
PARAM_COUNTS = {
    "subvp/cifar10_ddpm_continuous": 35_218_947,
    "vp/ddpm/cifar10": 35_218_947,
    "vp/ddpm/cifar10_continuous": 35_218_947,
    "ve/cifar10_ddpm": 35_218_947,
    "vp/ddpm/cifar10_unconditional": 32_329_347,
    "vp/ddpm/bedroom": 111_569_923,
    "vp/ddpm/church": 111_569_923,
    "vp/ddpm/celebahq": 111_569_923,
    "vp/cifar10_ddpmpp": 61_804_419,
    "vp/cifar10_ddpmpp_continuous": 61_804_419,
    "subvp/cifar10_ddpmpp_continuous": 61_804_419,
    "vp/cifar10_ddpmpp_deep_continuous": 106_632_579,
    "subvp/cifar10_ddpmpp_deep_continuous": 106_632_579,
    "vp/cifar10_ncsnpp": 62_693_251,
    "vp/cifar10_ncsnpp_continuous": 62_693_251,
    "subvp/cifar10_ncsnpp_continuous": 62_693_251,
    "ve/cifar10_ncsnpp": 62_693_251,
    "ve/celeba_ncsnpp": 62_693_251,
    "ve/cifar10_ncsnpp_continuous": 62_758_787 + 128,
    "ve/cifar10_ncsnpp_deep_continuous": 107_586_947 + 128,
    "ve/bedroom_ncsnpp_continuous": 65_574_421 + 128,
    "ve/church_ncsnpp_continuous": 65_574_421 + 128,
    "ve/celebahq_256_ncsnpp_continuous": 65_574_421 + 128,
    "ve/ffhq_256_ncsnpp_continuous": 65_574_421 + 128,
    "ve/celebahq_ncsnpp_continuous": 105_785_880 + 16,
    "ve/ffhq_ncsnpp_continuous": 105_785_880 + 16,
    "ve/ncsnv2/cifar10": 33_970_563,  # the JAX original's ncsnv2_64, wider than the port's
    "vp_cifar10": 61_804_419,
    "ve_cifar10": 62_758_787 + 128,
    "subvp_cifar10": 61_804_419,
    # DiT-XL/2 at 256 px (32x32x4 latents, 1000 classes): the 674,834,720 of tests/test_dit.py's learned-sigma
    # network (the paper's 675M) less the second half of the output layer (1152 x 16 + 16) that
    # model.learn_sigma = False does not build.
    "latent/imagenet256_dit_xl2": 674_834_720 - (1152 * 16 + 16),
    "latent/imagenet256_sit_xl2": 674_834_720 - (1152 * 16 + 16),
}


def experiment_configs():
  paths = sorted(p for p in CONFIGS.rglob("*.py") if p.name != "__init__.py" and "toy" not in p.parts
                 and not p.name.startswith("default_") and "get_config" in p.read_text())
  return [str(p.relative_to(CONFIGS).with_suffix("")) for p in paths]


def load_config(name):
  return importlib.import_module("configs." + name.replace("/", ".")).get_config()


def count(tree):
  return sum(int(np.prod(leaf.shape)) for leaf in jax.tree_util.tree_leaves(tree))


def _flat_keys(config, prefix=""):
  keys = set()
  for key, value in config.items():
    if isinstance(value, ml_collections.ConfigDict):
      keys |= _flat_keys(value, prefix + key + ".")
    else:
      keys.add(prefix + key)
  return keys


@pytest.mark.parametrize("name", experiment_configs())
def test_config_builds_with_reference_parameter_count(name):
  config = load_config(name)
  assert config.data.dim is None or config.model.name == "mlp"  # images, or a toy of configs/fewstep/
  shapes = jax.eval_shape(lambda: init_model(jax.random.PRNGKey(0), config))
  assert set(shapes) <= {"params", "constants"}
  if name in PARAM_COUNTS:
    assert count(shapes) == PARAM_COUNTS[name]


def test_configs_only_override_base_keys():
  """Every base config extends the package's one base (`score_jax.base_config`) and adds no key but the
  classifier section; experiment files add none."""
  base_keys = _flat_keys(base_config.get_config())
  for base in ["toy.default", "default_cifar10_configs", "default_celeba_configs", "default_lsun_configs"]:
    keys = _flat_keys(importlib.import_module(f"configs.{base}").get_default_configs())
    keys = {key for key in keys if not key.startswith("classifier.")}
    assert keys == base_keys, f"{base}: {sorted(keys ^ base_keys)}"
  cifar10_keys = _flat_keys(importlib.import_module("configs.default_cifar10_configs").get_default_configs())
  for name in experiment_configs():
    extra = _flat_keys(load_config(name)) - cifar10_keys
    assert not extra, f"{name} adds keys {sorted(extra)}"


def test_headline_configs_are_the_reference_experiments():
  for headline, experiment in [("vp_cifar10", "vp/cifar10_ddpmpp_continuous"),
                               ("ve_cifar10", "ve/cifar10_ncsnpp_continuous"),
                               ("subvp_cifar10", "subvp/cifar10_ddpmpp_continuous")]:
    assert load_config(headline).to_dict() == load_config(experiment).to_dict()
