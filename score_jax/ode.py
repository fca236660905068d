"""A jittable adaptive Dormand-Prince 5(4) ODE solver (no host round trips).

The reference integrates the probability-flow ODE with `scipy.integrate.solve_ivp(method='RK45')`
on the host, one device round trip per function evaluation. `odeint` is the same algorithm inside
`jax.lax.while_loop`: the Dormand-Prince tableau (Dormand & Prince 1980), an RMS error norm over the
whole state, scipy's initial-step heuristic (Hairer, Norsett & Wanner 1993, Sec. II.4) and scipy's
step-size controller (safety 0.9, factors in [0.2, 10], no growth right after a rejection). So its
steps and its count of function evaluations (2 + 6 per attempted step) follow `solve_ivp`.

The six stages of a step run in a `fori_loop`, so the vector field (a whole U-Net for images) is
traced three times (first derivative, initial step, loop body) instead of eight: compile time
stays that of a few network evaluations.

Why not diffrax. Measured against diffrax 0.7.2 (`Dopri5` + `PIDController`, dt0=None), probability-
flow ODE T -> 1e-3 at rtol = atol = 1e-5, float32, 2 shared CPU cores, the untrained toy MLP of
`configs/toy/checkerboard.py` (VP, N = 1000); `benchmarks/sampling.py --diffrax` reproduces it:

  problem                      solver   compile   run      NFE   run / NFE
  2-D toy, batch 512           own      1.6 s     1.40 s   620   2.25 ms
                               diffrax  2.1 s     1.13 s   518   2.18 ms
  3x8x8 state, batch 64, MLP   own      1.3 s     0.069 s  464   0.149 ms
                               diffrax  2.6 s     0.096 s  398   0.242 ms

(one jitted score evaluation: 2.65 ms and 0.23 ms). Per evaluation the two cost the same on the
toy and ours is 40% cheaper on the image-shaped state; ours compiles 0.5-1.2 s faster; diffrax's
controller takes ~15% fewer steps, but its end state differed from scipy's by up to 0.31 (toy)
and 0.38 (3x8x8) where ours differed by 0.0075 and 0.0004. Ours reproduces scipy's RK45 step for step (620, 464 and 602
evaluations, equal to `solve_ivp`'s), so NFE figures compare with the reference's, and it adds no
dependency (diffrax brings equinox, jaxtyping, lineax, optimistix). Kept.
"""

import flax
import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

# Dormand-Prince 5(4): nodes C, stage matrix A whose last row is the 5th-order weights B (FSAL),
# and E = B - B_hat, the weights of the embedded error estimate.
_C = np.array([0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1, 1])
_B = np.array([35 / 384, 0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84, 0])
_A = np.array([
    [0, 0, 0, 0, 0, 0, 0],
    [1 / 5, 0, 0, 0, 0, 0, 0],
    [3 / 40, 9 / 40, 0, 0, 0, 0, 0],
    [44 / 45, -56 / 15, 32 / 9, 0, 0, 0, 0],
    [19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729, 0, 0, 0],
    [9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656, 0, 0],
    _B,
])
_E = np.array([71 / 57600, 0, -71 / 16695, 71 / 1920, -17253 / 339200, 22 / 525, -1 / 40])
_ORDER = 4  # order of the error estimate: step factors scale as error_norm^(-1/5)
_SAFETY, _MIN_FACTOR, _MAX_FACTOR = 0.9, 0.2, 10.0


@flax.struct.dataclass
class ODESolution:
  """Final state (same pytree as `y0`), function evaluations, accepted/rejected steps, success flag."""

  y: object
  nfe: jax.Array
  num_accepted: jax.Array
  num_rejected: jax.Array
  success: jax.Array


def _rms(v):
  return jnp.sqrt(jnp.mean(jnp.square(v)))


def _initial_step(f, t0, y0, f0, direction, interval, rtol, atol):
  """scipy's `select_initial_step` (one extra evaluation of f)."""
  scale = atol + jnp.abs(y0) * rtol
  d0, d1 = _rms(y0 / scale), _rms(f0 / scale)
  h0 = jnp.where((d0 < 1e-5) | (d1 < 1e-5), 1e-6, 0.01 * d0 / d1)
  h0 = jnp.minimum(h0, interval)
  f1 = f(y0 + h0 * direction * f0, t0 + h0 * direction)
  d2 = _rms((f1 - f0) / scale) / h0
  h1 = jnp.where((d1 <= 1e-15) & (d2 <= 1e-15), jnp.maximum(1e-6, h0 * 1e-3),
                 (0.01 / jnp.maximum(d1, d2)) ** (1.0 / (_ORDER + 1)))
  return jnp.minimum(jnp.minimum(100 * h0, h1), interval)


def _dopri5_step(f, t, y, f0, h):
  """One Dormand-Prince step; returns (y_new, f(y_new), error estimate)."""
  a, c = jnp.asarray(_A, y.dtype), jnp.asarray(_C, y.dtype)
  k = jnp.zeros((7,) + y.shape, y.dtype).at[0].set(f0)

  def stage(i, k):
    return k.at[i].set(f(y + h * (a[i] @ k), t + c[i] * h))

  k = jax.lax.fori_loop(1, 7, stage, k)
  y_new = y + h * (a[6] @ k)
  return y_new, k[6], h * (jnp.asarray(_E, y.dtype) @ k)


def odeint(fn, y0, t0, t1, *, rtol=1e-5, atol=1e-5, max_steps=4096):
  """Integrates dy/dt = fn(y, t) from t0 to t1 (either direction) with adaptive Dormand-Prince 5(4).

  Args:
    fn: `fn(y, t) -> dy/dt`, `y` a pytree of arrays and `t` a scalar.
    y0: initial state (any pytree of float arrays).
    t0, t1: start and end times (Python or JAX scalars).
    rtol, atol: tolerances of the RMS error norm, as in `scipy.integrate.solve_ivp`.
    max_steps: most attempted steps; `success` is False if the solver stopped there.

  Returns:
    `ODESolution` with `y` the state at `t1` and `nfe` = 2 + 6 x attempted steps.
  """
  flat_y0, unravel = ravel_pytree(y0)
  dtype = flat_y0.dtype
  t0, t1 = jnp.asarray(t0, dtype), jnp.asarray(t1, dtype)
  direction = jnp.sign(t1 - t0)

  def f(y, t):
    return ravel_pytree(fn(unravel(y), t))[0].astype(dtype)

  f0 = f(flat_y0, t0)
  h_abs = _initial_step(f, t0, flat_y0, f0, direction, jnp.abs(t1 - t0), rtol, atol)

  def attempt(state):
    t, y, f_t, h_abs, rejected, accepted_count, rejected_count = state
    t_new = t + direction * h_abs
    t_new = jnp.where(direction * (t_new - t1) > 0, t1, t_new)  # do not step past t1
    h = t_new - t
    y_new, f_new, error = _dopri5_step(f, t, y, f_t, h)
    error_norm = _rms(error / (atol + jnp.maximum(jnp.abs(y), jnp.abs(y_new)) * rtol))
    accept = error_norm < 1
    factor = _SAFETY * error_norm ** (-1.0 / (_ORDER + 1))
    grow = jnp.where(error_norm == 0, _MAX_FACTOR, jnp.minimum(_MAX_FACTOR, factor))
    grow = jnp.where(rejected, jnp.minimum(1.0, grow), grow)
    factor = jnp.where(accept, grow, jnp.maximum(_MIN_FACTOR, factor))
    pick = lambda new, old: jnp.where(accept, new, old)
    return (pick(t_new, t), pick(y_new, y), pick(f_new, f_t), jnp.abs(h) * factor, ~accept,
            accepted_count + accept, rejected_count + ~accept)

  def not_done(state):
    t, *_, accepted_count, rejected_count = state
    return (t != t1) & (accepted_count + rejected_count < max_steps)

  zero = jnp.zeros((), jnp.int32)
  state = (t0, flat_y0, f0, h_abs, jnp.zeros((), bool), zero, zero)
  t, y, _, _, _, accepted_count, rejected_count = jax.lax.while_loop(not_done, attempt, state)
  return ODESolution(y=unravel(y), nfe=2 + 6 * (accepted_count + rejected_count),
                     num_accepted=accepted_count, num_rejected=rejected_count, success=t == t1)
