"""Runs `main.py` and kills it with SIGKILL at a chosen checkpoint save (for the kill -9 test).

    KILL_AT_STEP=50 KILL_WHEN=after python tests/kill_main.py --config=... --workdir=...

`KILL_WHEN=after` kills right after the checkpoint of that step is written, `before` right before
(so the steps since the previous checkpoint are lost). Deterministic: no timing is involved.
"""

import os
import runpy
import signal
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from score_jax import checkpoint  # noqa: E402

KILL_AT_STEP, KILL_WHEN = int(os.environ["KILL_AT_STEP"]), os.environ.get("KILL_WHEN", "after")
_save = checkpoint.save


def save(manager, step, *args, **kwargs):
  if step == KILL_AT_STEP and KILL_WHEN == "before":
    os.kill(os.getpid(), signal.SIGKILL)
  result = _save(manager, step, *args, **kwargs)
  if step == KILL_AT_STEP:
    os.kill(os.getpid(), signal.SIGKILL)
  return result


checkpoint.save = save
sys.argv[0] = "main.py"
runpy.run_path("main.py", run_name="__main__")
