"""Flow-map sampling (MeanFlow, Geng et al. 2025, Algorithm 2): jumps z_r = z_t - (t - r) u(z_t, r, t) along a
decreasing grid of times from T to 0, one network evaluation each."""

import dataclasses

import jax
import jax.numpy as jnp

from score_jax.parameterization import average_velocity_of
from score_jax.sampling.common import SampleOutput, Sampler, full, not_in_config, sample_function, start
from score_jax.sampling.schedules import check_steps
from score_jax.utils import batch_mul


@dataclasses.dataclass(frozen=True)
class FlowMapSampler(Sampler):
  """A flow map's samples in `steps` jumps: from x_T, x_r = x_t - (t - r) u(x_t, r, t) between consecutive times of
  the grid T > t_1 > ... > t_{steps - 1} > 0. u is the model's average velocity over [r, t]
  (`ScoreFunction.average_velocity`: a model of the `average_velocity` parameterization, which
  `training.objective = "meanflow"` trains); any other model's u is its probability-flow velocity at t, which
  makes each jump an Euler step. The last jump ends at t = 0, the data of the rectified-flow path (m(0) = 1,
  std(0) = 0), not at `eps`.

  Options:
    steps: network evaluations (jumps), >= 1.
    times: the `steps - 1` intermediate times, decreasing, in (0, T) (`sampling.consistency_times`); empty:
      equal steps in t, T (1 - i / steps).
    eps: unused (every family takes the SDE's end time; a flow map jumps to 0).
  """

  steps: int = 1
  times: tuple = ()
  eps: float = not_in_config(1e-3)

  def __post_init__(self):
    object.__setattr__(self, "times", tuple(float(t) for t in (self.times or ())))  # a config's list, hashable

  def check(self):
    """Raises `ValueError` for a bad step count or intermediate times."""
    check_steps("flow_map", self.steps)
    if self.times:
      if len(self.times) != self.steps - 1:
        raise ValueError(f"flow_map: times={list(self.times)} must hold steps - 1 = {self.steps - 1} intermediate "
                         "times (sampling.consistency_times; or be empty for equal steps)")
      bounds = (1.0,) + self.times + (0.0,)
      if any(later >= earlier for earlier, later in zip(bounds, bounds[1:])):
        raise ValueError(f"flow_map: times={list(self.times)} must decrease strictly within (0, T)")

  def grid(self, sde):
    """`(steps + 1,)` times from T down to 0."""
    if self.times:
      return jnp.asarray((sde.T,) + self.times + (0.0,), jnp.float32)
    return jnp.linspace(sde.T, 0.0, self.steps + 1).at[-1].set(0.0)

  def run(self, rng, z, score_fn, sde, shape):
    x, _ = start(rng, sde, shape, z)
    u_fn = average_velocity_of(score_fn, sde)
    grid = self.grid(sde)

    def jump(i, x):
      t, r = full(x, grid[i]), full(x, grid[i + 1])
      return x - batch_mul(t - r, u_fn(x, r, t))

    return SampleOutput(samples=jax.lax.fori_loop(0, self.steps, jump, x), nfe=self.steps)


flow_map_sample = sample_function(FlowMapSampler, "flow_map_sample")
