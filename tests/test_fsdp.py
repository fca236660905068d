"""FSDP (`training.fsdp`): the sharding rule, training sharded over 4 fake CPU devices against data parallelism,
checkpoints restored onto other meshes, and asynchronous checkpoints interrupted by kill -9.

The multi-device cases run in three subprocesses (4 devices; then 2 and 1 at once), started together with the
kill -9 one: each pays JAX's start and its compiles once."""

import json
import os
import signal
import subprocess
import sys

import jax
import numpy as np
import pytest

from score_jax import parallel, run_setup
from tests.helpers import tiny_toy_config
from tests.test_parallel import REPO, _child_env

STEPS = 2  # train steps of the equality runs (one block)


def network_config(name, fsdp=1):
  """The tiny configs of the equality runs: the toy MLP (widened to 64 so that its kernels are sharded), DDPM++
  and EDM2 (forced weight normalisation) on 8x8 images."""
  common = {"training.fsdp": fsdp, "training.n_jitted_steps": STEPS, "training.batch_size": 16}
  if name == "mlp":
    return tiny_toy_config(**common, **{"model.nf": 64})
  images = {"data.dim": 0, "data.dataset": "blobs", "data.image_size": 8, "data.num_channels": 1,
            "model.ch_mult": (1, 2), "model.num_res_blocks": 1, "model.attn_resolutions": (4,),
            "training.step_loop": "dispatch"}
  if name == "ddpmpp":
    from configs.vp import cifar10_ddpmpp_continuous
    config = cifar10_ddpmpp_continuous.get_config()
    config.model.init_scale = 1.0  # a visible output (the reference zero-initialises the last layers)
    config.training.snapshot_sampling = False
    for key, value in {**common, **images, "model.nf": 16, "model.attn_resolutions": ()}.items():
      config[key.split(".")[0]][key.split(".")[1]] = value
    return config
  return tiny_toy_config(**common, **images, **{"model.name": "edm2", "model.nf": 16, "training.objective": "edm",
                                                "model.parameterization": "edm", "training.loss_weighting":
                                                "uncertainty", "optim.lr": 0.01, "optim.warmup": 0,
                                                "model.ema_type": "power", "training.ema_snapshot_freq": STEPS})


RUN = {"training.n_iters": 20, "training.snapshot_freq": 10, "training.log_freq": 5, "training.eval_freq": 10,
       "training.async_checkpoint": True, "model.nf": 64}  # the checkpointed run (toy MLP)

FOUR_DEVICES = """
import sys, numpy as np, jax
from score_jax import parallel, run_setup
from score_jax.drivers import train
from tests.helpers import tiny_toy_config
from tests.test_fsdp import RUN, network_config
out, workdir = sys.argv[1], sys.argv[3]
assert jax.device_count() == 4
arrays = {}
for name in ("mlp", "ddpmpp", "edm2"):
  initial = None
  for fsdp in (1, 2, 4):
    run = run_setup.RunSetup(network_config(name, fsdp), companions=())
    initial = jax.device_get(run.init_state()) if initial is None else initial  # one init compiled per network
    state = jax.device_put(initial, run.state_shardings)
    shape = (STEPS, run.config.training.batch_size) + run.data_shape
    batches = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    sharded = [x for x in jax.tree_util.tree_leaves(state) if "fsdp" in str(x.sharding.spec)]
    arrays[f"{name}_{fsdp}_sharded_fraction"] = np.array(sum(x.size for x in sharded) / sum(
        x.size for x in jax.tree_util.tree_leaves(state)))
    if fsdp > 1:  # each device holds 1/fsdp of a sharded array
      big = max(sharded, key=lambda x: x.size)
      assert big.addressable_shards[0].data.size * fsdp == big.size, (name, big.sharding)
    state, losses = run.multi_step(state, parallel.shard_batch(run.mesh, batches, batch_axis=1))
    for i, x in enumerate(jax.tree_util.tree_leaves((state.params, state.ema_params, state.power_ema))):
      arrays[f"{name}_{fsdp}_{i}"] = np.asarray(x)
    arrays[f"{name}_{fsdp}_losses"] = np.asarray(losses)
config = tiny_toy_config(**RUN, **{"training.fsdp": 4})
state = train.train_and_evaluate(config, workdir)
for i, x in enumerate(jax.tree_util.tree_leaves(state)):
  arrays[f"run_{i}"] = np.asarray(x)
np.savez(out, **arrays)
""".replace("STEPS", str(STEPS))

OTHER_MESH = """
import os, shutil, sys, numpy as np, jax
from score_jax import checkpoint, run_setup
from score_jax.drivers import train
from tests.helpers import tiny_toy_config
from tests.test_fsdp import RUN
out, devices, workdir = sys.argv[1], int(sys.argv[2]), sys.argv[3]
source = os.path.join(os.path.dirname(workdir), "run4")
assert jax.device_count() == devices
config = tiny_toy_config(**RUN, **{"training.fsdp": devices})
run = run_setup.RunSetup(config)
manager = checkpoint.get_manager(os.path.join(source, checkpoint.SNAPSHOT_DIR))
restored = checkpoint.restore(manager, 20, run.init_state())
arrays = {f"restored_{i}": np.asarray(x) for i, x in enumerate(jax.tree_util.tree_leaves(restored))}
arrays["restored_specs"] = np.array([str(x.sharding.spec) for x in jax.tree_util.tree_leaves(restored)])
shutil.copytree(source, workdir)  # resumed from step 10 on this mesh
shutil.rmtree(os.path.join(workdir, checkpoint.SNAPSHOT_DIR, "20"))
state = train.train_and_evaluate(config, workdir)
arrays.update({f"run_{i}": np.asarray(x) for i, x in enumerate(jax.tree_util.tree_leaves(state))})
np.savez(out, **arrays)
"""

KILLED_SAVE = """
import os, signal, sys, numpy as np, jax, jax.numpy as jnp
from orbax.checkpoint._src.path import atomicity
from score_jax import checkpoint
manager = checkpoint.get_manager(sys.argv[1], asynchronous=True)
checkpoint.save(manager, 1, {"w": jnp.full((64, 64), 1.0)})
checkpoint.wait(manager)
rename = atomicity.AtomicRenameTemporaryPath.finalize
async def killed(self):  # SIGKILL once the files of step 2 are written, before the save commits them
  if sys.argv[2] == "after_commit":  # the broken variant: the step committed first
    await rename(self)
  os.kill(os.getpid(), signal.SIGKILL)
atomicity.AtomicRenameTemporaryPath.finalize = killed
checkpoint.save(manager, 2, {"w": jnp.full((64, 64), 2.0)})
checkpoint.wait(manager)
"""


def _start(script, tmp_path, name, devices, *args):
  log = tmp_path / f"{name}.log"
  process = subprocess.Popen([sys.executable, "-c", script, *args], cwd=REPO, env=_child_env(devices),
                             stdout=log.open("w"), stderr=subprocess.STDOUT)
  return process, log


def _finish(started, timeout=600):
  try:
    codes = [process.wait(timeout=timeout) for process, _ in started]
  finally:
    for process, _ in started:
      process.kill()
  assert codes == [0] * len(started), "\n".join(f"{log}: {log.read_text()[-3000:]}" for _, log in started)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  """The 4-device run (and, meanwhile, the async save killed by SIGKILL), then the 2- and 1-device ones."""
  tmp_path = tmp_path_factory.mktemp("fsdp")
  four = _start(FOUR_DEVICES, tmp_path, "four", 4, str(tmp_path / "four.npz"), "4", str(tmp_path / "run4"))
  killed = _start(KILLED_SAVE, tmp_path, "killed", 1, str(tmp_path / "killed"), "before_commit")
  killed_code = killed[0].wait(timeout=300)
  _finish([four])
  others = [_start(OTHER_MESH, tmp_path, f"devices_{n}", n, str(tmp_path / f"out_{n}.npz"), str(n),
                   str(tmp_path / f"run{n}")) for n in (2, 1)]
  _finish(others)
  outputs = {n: dict(np.load(tmp_path / f"out_{n}.npz")) for n in (2, 1)}
  outputs[4] = dict(np.load(tmp_path / "four.npz"))
  return tmp_path, outputs, killed_code


@pytest.mark.parametrize("name", ["mlp", "ddpmpp", "edm2"])
def test_fsdp_2_and_4_train_to_the_parameters_of_fsdp_1(runs, name):
  four = runs[1][4]
  reference = sorted(key for key in four if key.startswith(f"{name}_1_") and key[len(name) + 3:].isdigit())
  assert len(reference) > 5
  for fsdp in (2, 4):
    assert four[f"{name}_{fsdp}_sharded_fraction"] > 0.9, four[f"{name}_{fsdp}_sharded_fraction"]
    np.testing.assert_allclose(four[f"{name}_{fsdp}_losses"], four[f"{name}_1_losses"], rtol=1e-5)
    for key in reference:
      other = four[key.replace(f"{name}_1_", f"{name}_{fsdp}_")]
      scale = np.abs(four[key]).max()
      # float32 rounding of reductions in another order: relative to the array's scale (a leaf near zero, such as
      # a bias of 4e-8, differs by 5e-13 in an element of 5e-10), with a floor of 1e-10 for leaves that are
      # rounding noise themselves (an optimizer moment of 1e-15 whose exact gradient is zero)
      np.testing.assert_allclose(other, four[key], rtol=1e-5, atol=max(1e-4 * scale, 1e-10),
                                 err_msg=f"fsdp {fsdp}: {key}")
  assert four[f"{name}_1_sharded_fraction"] == 0


def _leaves(arrays, prefix):
  return [arrays[f"{prefix}_{i}"] for i in range(len([k for k in arrays if k.startswith(prefix + "_")
                                                          and k[len(prefix) + 1:].isdigit()]))]


def test_a_checkpoint_of_fsdp_4_restores_on_2_and_1_devices_and_training_resumes(runs):
  """Saved sharded over 4 devices (asynchronously, training.async_checkpoint), restored exactly onto fsdp 2 and
  onto 1 device; a run resumed from step 10 on those meshes logs the losses of the 4-device run and ends with
  its state to float32 rounding."""
  tmp_path, outputs, _ = runs
  saved = _leaves(outputs[4], "run")
  for devices in (2, 1):
    restored = _leaves(outputs[devices], "restored")
    assert len(restored) == len(saved) > 10
    for a, b in zip(restored, saved):
      np.testing.assert_array_equal(a, b)
    specs = set(outputs[devices]["restored_specs"])
    assert any("'fsdp'" in spec for spec in specs) == (devices == 2), specs  # sharded on 2, whole on 1
    for a, b in zip(_leaves(outputs[devices], "run"), saved):
      np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6 * max(np.abs(b).max(), 1e-3))
    records = [json.loads(line) for line in (tmp_path / f"run{devices}" / "metrics.jsonl").read_text().splitlines()]
    reference = [json.loads(line) for line in (tmp_path / "run4" / "metrics.jsonl").read_text().splitlines()]
    losses = lambda rows: [(r["step"], r["loss"]) for r in rows if "loss" in r]  # noqa: E731
    assert [s for s, _ in losses(records)] == [s for s, _ in losses(reference)] == [5, 10, 15, 20]
    np.testing.assert_allclose([v for _, v in losses(records)], [v for _, v in losses(reference)], rtol=1e-5)


def test_an_async_save_killed_before_its_commit_leaves_the_previous_checkpoint(runs):
  from score_jax import checkpoint
  tmp_path, _, code = runs
  assert code == -signal.SIGKILL
  directory = tmp_path / "killed"
  assert any(name.startswith("2.") for name in os.listdir(directory)), os.listdir(directory)  # killed mid-save
  manager = checkpoint.get_manager(str(directory))
  assert manager.all_steps() == [1]
  state, step = checkpoint.restore_latest([manager], {"w": np.zeros((64, 64), np.float32)})
  assert step == 1 and (np.asarray(state["w"]) == 1).all()
  checkpoint.save(manager, 2, {"w": np.full((64, 64), 2.0, np.float32)})  # the next save of step 2 succeeds
  assert manager.all_steps() == [1, 2]


def test_the_rule_shards_every_large_leaf_of_each_network():
  """The rule's specs cover every leaf of the train state of each network family at its configs' widths (shapes
  only, nothing allocated); for fsdp 8 the largest replicated leaf of each is listed and kept small."""
  from configs.edm2 import imagenet64_s
  from configs.latent import digits_autoencoder, imagenet256_dit_xl2
  from configs.ve import cifar10_ncsnpp_continuous
  from configs.ve.ncsn import cifar10 as ncsn
  from configs.ve.ncsnv2 import cifar10 as ncsnv2
  from configs.vp import cifar10_ddpmpp_continuous
  from configs.vp.ddpm import cifar10 as ddpm
  configs = {"mlp": tiny_toy_config(**{"model.nf": 256}), "ddpm": ddpm.get_config(), "ncsn": ncsn.get_config(),
             "ncsnv2": ncsnv2.get_config(), "ncsnpp": cifar10_ncsnpp_continuous.get_config(),
             "ddpmpp": cifar10_ddpmpp_continuous.get_config(), "edm2": imagenet64_s.get_config(),
             "dit": imagenet256_dit_xl2.get_config(), "autoencoder_kl": digits_autoencoder.get_config()}
  largest = {}
  for name, config in configs.items():
    run = run_setup.RunSetup(config, companions=())
    state = jax.eval_shape(lambda: run.initial_state(jax.random.PRNGKey(0)))  # noqa: B023
    specs = parallel.fsdp_partition_specs(state, 8)
    flat_specs = jax.tree_util.tree_leaves(specs, is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec))
    leaves = jax.tree_util.tree_flatten_with_path(state)[0]
    assert len(flat_specs) == len(leaves)
    replicated = [(x.size * x.dtype.itemsize, jax.tree_util.keystr(path)) for (path, x), spec
                  in zip(leaves, flat_specs) if spec == jax.sharding.PartitionSpec()]
    total = sum(x.size * x.dtype.itemsize for _, x in leaves)
    largest[name] = max(replicated) + (sum(b for b, _ in replicated) / total, total)
  print("\n".join(f"{name}: largest replicated leaf {size} bytes ({path}); replicated {fraction:.2%} of the "
                  f"{total / 2**20:.1f} MiB state" for name, (size, path, fraction, total) in largest.items()))
  for name, (size, path, fraction, total) in largest.items():  # under 1% of any state over 16 MiB
    assert size <= 64 * 1024 and (fraction < 0.01 or total < 2**24), (name, size, path, fraction)


def test_fsdp_must_divide_the_device_count():
  for value in (2, 0, -1):
    with pytest.raises(ValueError, match=r"training\.fsdp=.* must be a positive divisor of the device count \(1\)"):
      run_setup.validate_config(tiny_toy_config(**{"training.fsdp": value}))


def test_fsdp_spec_takes_the_largest_divisible_axis():
  P = jax.sharding.PartitionSpec
  assert parallel.fsdp_spec((3, 3, 128, 256), 8) == P(None, None, None, "fsdp")
  assert parallel.fsdp_spec((3, 3, 256, 100), 8) == P(None, None, "fsdp")  # 100 is not a multiple of 8
  assert parallel.fsdp_spec((1024, 1024), 4) == P("fsdp")                   # ties: the first
  assert parallel.fsdp_spec((1000, 7), 16) == P()                           # no axis divides
  assert parallel.fsdp_spec((512,), 8) == P()                               # small: replicated
  assert parallel.fsdp_spec((), 8) == P()
  assert parallel.fsdp_spec((4096, 4096), 1) == P()
