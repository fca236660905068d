"""Score networks of the config catalogue: size, speed and memory.

  python benchmarks/models.py [--configs default|all|vp/cifar10_ddpmpp_continuous,...] [--batch 2]
                              [--nf 0] [--count_only] [--json benchmarks/results/models.json]
                              [--torch_port path/to/score_sde_pytorch]

For each config: parameter count of the full-size network (traced, no FLOPs),
then, on the network that is timed (full size, or with `model.nf` shrunk by
`--nf`), the compile and run time of a jitted forward pass (`train=False`)
and of forward + backward (gradient of a squared output with dropout on), at a
fixed batch of random inputs, and the peak resident memory of the process.
Each config runs in its own process, so compile times start cold and the peak
memory is that config's alone. The default set is one config per network
class at full size, which fits the 5-minute budget of a 2-core CPU box;
`--configs all` runs the whole catalogue (long on CPU; `--configs all
--count_only` lists every parameter count in a few minutes).
"""

import argparse
import json
import os
import pathlib
import resource
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# One config per network class: DDPM, NCSN++ (the DDPM++ configs use the same class), NCSNv2.
DEFAULT = ["vp/ddpm/cifar10", "ve/cifar10_ncsnpp_continuous", "ve/ncsnv2/cifar10"]


def catalogue():
  """Every image config under configs/{vp,subvp,ve} (the toy configs are benchmarked elsewhere)."""
  names = []
  for family in ("vp", "subvp", "ve"):
    for path in sorted((ROOT / "configs" / family).rglob("*.py")):
      if path.name != "__init__.py":
        names.append(str(path.relative_to(ROOT / "configs").with_suffix("")))
  return names


def _timed(fn, *args, repeats):
  import jax

  start = time.perf_counter()
  compiled = jax.jit(fn).lower(*args).compile()
  compile_s = time.perf_counter() - start
  jax.block_until_ready(compiled(*args))  # warm-up
  start = time.perf_counter()
  for _ in range(repeats):
    jax.block_until_ready(compiled(*args))
  return compile_s, (time.perf_counter() - start) / repeats


def measure(name, batch, nf, repeats, count_only=False):
  """Measures one config in this process; returns a result dict."""
  import importlib

  import jax
  import jax.numpy as jnp
  import numpy as np

  from score_jax.models import get_data_shape, get_model

  config = importlib.import_module("configs." + name.replace("/", ".")).get_config()

  def init_shapes(config):
    x = jnp.zeros((1,) + get_data_shape(config), jnp.float32)
    labels = jnp.ones((1,), jnp.float32)
    rngs = {"params": jax.random.PRNGKey(0), "dropout": jax.random.PRNGKey(1)}
    return jax.eval_shape(lambda: get_model(config).init(rngs, x, labels, train=False))

  count = lambda shapes: int(sum(np.prod(s.shape) for s in jax.tree_util.tree_leaves(shapes)))
  result = {"config": name, "model": config.model.name, "image_size": config.data.image_size,
            "full_nf": config.model.nf, "params_full": count(init_shapes(config))}
  if count_only:
    return result
  if nf:
    config.model.nf = nf
  shapes = init_shapes(config)
  rng = np.random.default_rng(0)  # random weights without compiling `init`
  variables = jax.tree_util.tree_map(
      lambda s: jnp.asarray(0.02 * rng.standard_normal(s.shape), s.dtype), shapes)
  model = get_model(config)
  x = jnp.asarray(rng.standard_normal((batch,) + get_data_shape(config)), jnp.float32)
  if config.training.continuous:
    labels = jnp.full((batch,), 0.5, jnp.float32)
  else:
    labels = jnp.full((batch,), config.model.num_scales // 2, jnp.int32)

  def forward(variables, x, labels):
    return model.apply(variables, x, labels, train=False)

  def forward_backward(variables, x, labels):
    def loss(params):
      out = model.apply({**variables, "params": params}, x, labels, train=True,
                        rngs={"dropout": jax.random.PRNGKey(0)})
      return jnp.mean(out ** 2)
    return jax.grad(loss)(variables["params"])

  fwd_compile, fwd = _timed(forward, variables, x, labels, repeats=repeats)
  bwd_compile, bwd = _timed(forward_backward, variables, x, labels, repeats=repeats)
  result.update(nf=config.model.nf, params_timed=count(shapes), batch=batch,
                forward_s=fwd, forward_compile_s=fwd_compile,
                forward_backward_s=bwd, forward_backward_compile_s=bwd_compile,
                peak_rss_gib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
                device=jax.devices()[0].device_kind)
  return result


def measure_torch(port, name, batch, nf, repeats):
  """Times the PyTorch port's network of config `name` (run in a process whose cwd is the port)."""
  import importlib
  import types

  import numpy as np
  import torch

  sys.path.insert(0, port)
  op = types.ModuleType("op")  # the port's CUDA ops compile at import; FIR configs cannot run on CPU

  def unavailable(*args, **kwargs):
    raise NotImplementedError("the port's upfirdn2d is a CUDA extension")
  op.upfirdn2d = unavailable
  sys.modules["op"] = op
  from models import utils as port_utils
  for module in ("models.ncsnpp", "models.ddpm", "models.ncsnv2"):  # each registers its networks on import
    importlib.import_module(module)
  config = importlib.import_module("configs." + name.replace("/", ".")).get_config()
  if config.model.name == "ncsnpp" and config.model.get("fir", False):
    return {"config": name, "torch_error": "model.fir needs the port's CUDA upfirdn2d"}
  config.device = torch.device("cpu")
  if nf:
    config.model.nf = nf
  torch.manual_seed(0)
  model = port_utils.get_model(config.model.name)(config)
  with torch.no_grad():
    for parameter in model.parameters():
      parameter.copy_(0.02 * torch.randn_like(parameter))
  rng = np.random.default_rng(0)
  size = config.data.image_size
  x = torch.from_numpy(rng.standard_normal((batch, config.data.num_channels, size, size)).astype(np.float32))
  if config.training.continuous:
    labels = torch.full((batch,), 0.5)
  else:
    labels = torch.full((batch,), config.model.num_scales // 2, dtype=torch.long)

  def forward():
    model.eval()
    with torch.no_grad():
      return model(x, labels)

  def forward_backward():
    model.train()
    model.zero_grad(set_to_none=True)
    loss = torch.mean(model(x, labels) ** 2)
    loss.backward()

  def timed(fn):
    fn()  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
      fn()
    return (time.perf_counter() - start) / repeats

  return {"config": name, "torch_forward_s": timed(forward), "torch_forward_backward_s": timed(forward_backward),
          "torch": torch.__version__, "torch_threads": torch.get_num_threads()}


def run_isolated(name, args):
  command = [sys.executable, __file__, "--one", name, "--batch", str(args.batch), "--nf", str(args.nf),
             "--repeats", str(args.repeats)] + (["--count_only"] if args.count_only else [])
  done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
  if done.returncode != 0:
    return {"config": name, "error": (done.stderr.strip().splitlines() or ["?"])[-1][:200]}
  result = json.loads(done.stdout.strip().splitlines()[-1])
  if args.torch_port and not args.count_only:
    port = os.path.abspath(args.torch_port)
    command = [sys.executable, __file__, "--torch_one", name, "--torch_port", port, "--batch", str(args.batch),
               "--nf", str(args.nf), "--repeats", str(args.repeats)]
    done = subprocess.run(command, capture_output=True, text=True, cwd=port)
    if done.returncode != 0:
      result["torch_error"] = (done.stderr.strip().splitlines() or ["?"])[-1][:200]
    else:
      torch_result = json.loads(done.stdout.strip().splitlines()[-1])
      torch_result.pop("config")
      result.update(torch_result)
  return result


def table(results):
  if all("nf" not in r for r in results):  # --count_only
    return "\n".join([f"{'config':38} {'params':>14}"] + [
        f"{r['config']:38} {r.get('params_full', 0):>14,}" + (f" error: {r['error']}" if "error" in r else "")
        for r in results])
  with_torch = any("torch_forward_s" in r or "torch_error" in r for r in results)
  lines = [f"{'config':34} {'params (full)':>14} {'nf':>4} {'fwd ms':>8} {'fwd+bwd ms':>10} "
           f"{'compile fwd/bwd s':>18} {'peak RSS GiB':>12}"
           + (f" {'torch fwd':>9} {'torch fwd+bwd':>13} {'ours/torch fwd, fwd+bwd':>24}" if with_torch else "")]
  for r in results:
    if "error" in r:
      lines.append(f"{r['config']:34} error: {r['error']}")
      continue
    shrunk = "" if r["nf"] == r["full_nf"] else "*"
    lines.append(f"{r['config']:34} {r['params_full']:>14,} {r['nf']:>3}{shrunk:1} {1e3 * r['forward_s']:>8.0f} "
                 f"{1e3 * r['forward_backward_s']:>10.0f} "
                 f"{r['forward_compile_s']:>8.1f} / {r['forward_backward_compile_s']:>6.1f} {r['peak_rss_gib']:>12.2f}"
                 + _torch_columns(r, with_torch))
  if any(r.get("nf") != r.get("full_nf") for r in results if "error" not in r):
    lines.append("* nf shrunk for timing (params (full) is still the full-size count)")
  return "\n".join(lines)


def _torch_columns(result, with_torch):
  if not with_torch:
    return ""
  if "torch_forward_s" not in result:
    return f" torch: {result.get('torch_error', 'not run')}"
  fwd, bwd = result["torch_forward_s"], result["torch_forward_backward_s"]
  return (f" {1e3 * fwd:>9.0f} {1e3 * bwd:>13.0f} "
          f"{result['forward_s'] / fwd:>11.2f}, {result['forward_backward_s'] / bwd:>5.2f}")


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--configs", default="default", help="'default', 'all', or comma-separated config names")
  parser.add_argument("--batch", type=int, default=2)
  parser.add_argument("--nf", type=int, default=0, help="shrink model.nf to this for timing (0: full size)")
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--count_only", action="store_true", help="parameter counts only (fast; no timing)")
  parser.add_argument("--json", default=None, help="write the results here")
  parser.add_argument("--torch_port", default=None,
                      help="a checkout of yang-song/score_sde_pytorch: also time its networks (needs torch)")
  parser.add_argument("--one", default=None, help=argparse.SUPPRESS)  # internal: measure one config
  parser.add_argument("--torch_one", default=None, help=argparse.SUPPRESS)  # internal: time one in the port
  args = parser.parse_args()
  if args.torch_one:
    print(json.dumps(measure_torch(args.torch_port, args.torch_one, args.batch, args.nf, args.repeats)))
    return
  if args.one:
    print(json.dumps(measure(args.one, args.batch, args.nf, args.repeats, args.count_only)))
    return
  names = {"default": DEFAULT, "all": catalogue()}.get(args.configs) or args.configs.split(",")
  results = []
  for name in names:
    start = time.perf_counter()
    results.append(run_isolated(name, args))
    print(f"{name}: {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
  print(table(results))
  if args.json:
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w") as f:
      json.dump(results, f, indent=1)


if __name__ == "__main__":
  main()
