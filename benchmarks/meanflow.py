"""MeanFlow on the checkerboard, from scratch: the fraction of one-, two- and four-step flow-map samples on the board,
each square's share, and a MeanFlow training step's cost against a flow-matching step of the same network.

    python benchmarks/meanflow.py [--out_dir benchmarks/results/meanflow] [--train_steps 6000] [--dry_run]

Trains (through main.py; a finished run is reused) configs/fewstep/checkerboard_meanflow.py, draws 4096 samples with
`sampling.method = "flow_map"` at 1, 2 and 4 steps, and times (same process, CPU) one jitted training step of the
same MLP under `training.objective = "meanflow"` and under flow matching (`dsm` with the `flow` parameterization on
the same path), 20 steps each after compilation. Prints the table and writes `meanflow.json`. `--dry_run`: a tiny
network trained 2 steps in this process, 64 samples, 2 timed steps (tests/test_benchmarks.py).
"""

import argparse
import json
import pathlib
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from score_jax import run_setup, trained_model  # noqa: E402
from benchmarks.fewstep import DRY_RUN, on_board  # noqa: E402
from benchmarks.trained_runs import load_config, train  # noqa: E402

CONFIG = "configs/fewstep/checkerboard_meanflow.py"


def square_shares(samples):
  """The share of the on-board samples in each of the 8 squares (1/8 each for the data)."""
  x = np.asarray(samples)
  inside = np.all(np.abs(x) <= 2.0, axis=1) & ((np.floor(x[:, 0]) + np.floor(x[:, 1])) % 2 == 0)
  cells = np.floor(x[inside] + 2.0).astype(int)
  counts = np.zeros((4, 4))
  np.add.at(counts, (cells[:, 0].clip(0, 3), cells[:, 1].clip(0, 3)), 1)
  shares = counts[(np.add.outer(np.arange(4), np.arange(4)) % 2) == 0]
  return (shares / max(shares.sum(), 1)).tolist()


def step_seconds(overrides, repeats):
  """Seconds per jitted training step of the config with `overrides`, after one compiling step."""
  setup = run_setup.RunSetup(load_config(CONFIG, overrides), companions=())
  state = setup.init_state()
  batches = setup.train_batches(0)
  state, losses = setup.multi_step(state, batches)
  jax.block_until_ready(losses)
  start = time.perf_counter()
  for _ in range(repeats):
    state, losses = setup.multi_step(state, batches)
  jax.block_until_ready(losses)
  return (time.perf_counter() - start) / (repeats * setup.config.training.n_jitted_steps)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--train_steps", type=int, default=6000)
  parser.add_argument("--out_dir", default=str(ROOT / "benchmarks" / "results" / "meanflow"))
  parser.add_argument("--workdir", default=str(ROOT / "runs" / "benchmark_meanflow"))
  parser.add_argument("--dry_run", action="store_true", help="tiny network, 2 training steps, 64 samples")
  args = parser.parse_args(argv)
  out_dir = pathlib.Path(args.out_dir)
  out_dir.mkdir(parents=True, exist_ok=True)
  small = DRY_RUN if args.dry_run else {}
  workdir = pathlib.Path(args.workdir) / "meanflow"
  seconds = train(CONFIG, workdir, {"training.n_iters": args.train_steps, **small}, in_process=args.dry_run)
  config = trained_model.run_config(str(workdir))
  model, variables, step = trained_model.load_model(str(workdir))
  rows = []
  for steps in ([1] if args.dry_run else [1, 2, 4]):
    fraction, nfe, samples = on_board(config, model, variables, "flow_map", 64 if args.dry_run else 4096, steps=steps)
    rows.append({"model": "meanflow", "sampler": "flow_map", "steps": steps, "nfe": nfe, "on_board": fraction,
                 "square_shares": square_shares(samples), "train_steps": step, "train_seconds": seconds})
  timing = {"training.batch_size": 512, "training.n_jitted_steps": 5, **({k: v for k, v in small.items()
                                                                          if k.startswith("model.")})}
  repeats = 2 if args.dry_run else 4
  meanflow = step_seconds(timing, repeats)
  flow = step_seconds({**timing, "training.objective": "dsm", "model.parameterization": "flow"}, repeats)
  cost = {"meanflow_step_seconds": meanflow, "flow_matching_step_seconds": flow, "ratio": meanflow / flow,
          "device": jax.devices()[0].device_kind}
  (out_dir / "meanflow.json").write_text(json.dumps({"rows": rows, "step_cost": cost}, indent=1))
  print(f"{'steps':>6}{'NFE':>6}{'on board':>10}  square shares (min, max)")
  for row in rows:
    print(f"{row['steps']:>6}{row['nfe']:>6}{row['on_board']:>10.4f}  {min(row['square_shares']):.3f}, "
          f"{max(row['square_shares']):.3f}")
  print(f"training step (batch 512, CPU): MeanFlow {meanflow * 1e3:.2f} ms, flow matching {flow * 1e3:.2f} ms, "
        f"ratio {cost['ratio']:.2f}")
  print(f"wrote {out_dir / 'meanflow.json'}")


if __name__ == "__main__":
  main()
