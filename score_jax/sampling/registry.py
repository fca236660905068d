"""The sampler registry, `sample(..., method=...)`, and `get_sampling_fn(config, ...)`."""

import inspect
import types

import jax
import jax.numpy as jnp

from score_jax import parallel
from score_jax.models import check_guidance, get_score_fn, num_classes_of
from score_jax.rng import gaussian_noise
from score_jax.sampling import adaptive_sde, ddim, dpm_solver, heun, pc, probability_flow
from score_jax.sampling.common import SampleOutput, count_network_evaluations, prior_draw
from score_jax.utils import choice_error

# name -> the sampler's module: its public `<name>_sample`, its un-jitted `run` and its `check_options`.
FAMILIES = {
    "pc": types.SimpleNamespace(module=pc, sample=pc.pc_sample),
    "ode": types.SimpleNamespace(module=probability_flow, sample=probability_flow.ode_sample),
    "ddim": types.SimpleNamespace(module=ddim, sample=ddim.ddim_sample),
    "dpm_solver": types.SimpleNamespace(module=dpm_solver, sample=dpm_solver.dpm_solver_sample),
    "heun": types.SimpleNamespace(module=heun, sample=heun.heun_sample),
    "adaptive_sde": types.SimpleNamespace(module=adaptive_sde, sample=adaptive_sde.adaptive_sde_sample),
}
SAMPLERS = {name: family.sample for name, family in FAMILIES.items()}


def keyword_options(sampler):
  return [name for name, p in inspect.signature(sampler).parameters.items() if p.kind == p.KEYWORD_ONLY]


def sample(rng, score_fn, sde, shape, *, method="pc", **options):
  """Dispatches to `SAMPLERS[method]`; unknown methods or options raise `ValueError`."""
  if method not in SAMPLERS:
    raise choice_error("method", method, SAMPLERS)
  valid = keyword_options(SAMPLERS[method])
  unknown = sorted(set(options) - set(valid))
  if unknown:
    raise ValueError(f"unknown option(s) {unknown} for method={method!r}; valid: {', '.join(valid)}")
  return SAMPLERS[method](rng, score_fn, sde, shape, **options)


def guidance_options(config):
  """`(guidance_scale, guidance_interval)` of `config.sampling` (0 and None by default)."""
  interval = config.sampling.get("guidance_interval", None)
  return float(config.sampling.get("guidance_scale", 0.0) or 0.0), (tuple(interval) if interval else None)


def default_class_labels(num_classes, batch_size):
  """The classes of a batch of samples from a class-conditional model when none are asked for: sample i
  is of class i mod num_classes (every class equally often, whatever the device count)."""
  return jnp.arange(batch_size, dtype=jnp.int32) % max(num_classes, 1)


# Option name -> its `config.sampling` key, where the reference named it otherwise.
CONFIG_KEYS = {"n_steps": "n_steps_each", "denoise": "noise_removal"}
_NOT_FROM_CONFIG = ("z", "noise_fn", "eps", "t_end")
_LOWER_CASE = ("predictor", "corrector")  # the reference's configs spell these in any case


def config_options(method, sampling_config, eps):
  """`(run, options)` of `config.sampling` for `method`: each option from `config.sampling.<key>`
  unless that is missing or None (then the sampler's default); the end time is `eps`.

  Raises:
    ValueError: the method or an option is invalid (the sampler's own `check_options`).
  """
  if method not in FAMILIES:
    raise choice_error("sampling.method", method, SAMPLERS)
  family = FAMILIES[method]
  options = {}
  for name, p in inspect.signature(family.sample).parameters.items():
    if p.kind != p.KEYWORD_ONLY or name in _NOT_FROM_CONFIG:
      continue
    value = sampling_config.get(CONFIG_KEYS.get(name, name))
    value = p.default if value is None else value
    options[name] = value.lower() if name in _LOWER_CASE else value
  family.module.check_options(options)
  return family.module.run, dict(options, eps=eps, noise_fn=gaussian_noise)


def get_sampling_fn(config, sde, model, shape, inverse_scaler, eps, *, mesh=None):
  """Builds the sampler of `config.sampling` for `model`.

  `config.sampling.method` is "pc" (predictor, corrector, snr, n_steps_each, probability_flow,
  noise_removal), "ode" (rtol, atol, noise_removal, max_steps) or a fast sampler ("ddim",
  "dpm_solver", "heun", "adaptive_sde"), each option read from `config.sampling.<name>`. All score
  functions use `config.training.continuous`: the reference's ODE sampler always used continuous
  labels (B6), which feeds sigma to discrete VE networks that expect an index; ours gives every
  network the labels it was trained on. `config.sampling.rtol/atol` reach the ODE sampler (B19).

  The batch is split over the devices of `mesh` (default: every device of every process) and
  `variables` are replicated: x_T is drawn sharded and every step runs on each device's slice.
  Sample i depends on (rng, i) only, so the samples are those of a single-device run (the
  Langevin and ODE step sizes use global-batch norms, reduced across devices inside jit).

  A class-conditional model (`model.num_classes`) samples the classes `class_labels` (default: sample i
  of class i mod num_classes), with classifier-free guidance `sampling.guidance_scale` on the noise
  levels `sampling.guidance_interval` (`models.get_score_fn`).

  Returns:
    `sample_fn(rng, variables, class_labels=None) -> SampleOutput`, jitted; samples pass through
    `inverse_scaler` and come back split over the mesh (`parallel.gather` fetches them on every
    process); `nfe` counts network evaluations per sample (two per guided score evaluation).

  Raises:
    ValueError: for an unknown method or option, or a batch `shape[0]` that is not a multiple of
      the device count (before anything compiles).
  """
  mesh = mesh if mesh is not None else parallel.make_mesh()
  parallel.check_batch("sampling batch size shape[0]", shape[0], mesh)
  run, options = config_options(config.sampling.method.lower(), config.sampling, eps)
  continuous = config.training.continuous
  shape = tuple(shape)
  batch_sharding = parallel.data_sharded(mesh)

  num_classes = num_classes_of(model)
  guidance_scale, guidance_interval = guidance_options(config)
  check_guidance(model, 0 if num_classes else None, guidance_scale, guidance_interval)

  def sample_fn(rng, variables, class_labels):
    bound_sde = sde.bind(variables)  # a learned schedule's parameters are the model's
    score_fn = get_score_fn(bound_sde, model, variables, train=False, continuous=continuous,
                            class_labels=class_labels if num_classes else None, guidance_scale=guidance_scale,
                            guidance_interval=guidance_interval)
    z = jax.lax.with_sharding_constraint(prior_draw(rng, bound_sde, shape), batch_sharding)  # the draw of z=None
    output = count_network_evaluations(run(rng, z, score_fn=score_fn, sde=bound_sde, shape=shape, **options),
                                       score_fn)
    return output.replace(samples=inverse_scaler(output.samples))

  run_parallel = parallel.data_parallel(sample_fn, mesh, in_batch=(False, False, True),
                                        out_batch=SampleOutput(samples=True, nfe=False))
  default_labels = default_class_labels(num_classes, shape[0])

  def call(rng, variables, class_labels=None):
    if class_labels is None:
      class_labels = default_labels
    elif not num_classes:
      raise ValueError("class_labels need a class-conditional model (model.num_classes > 0)")
    class_labels = jnp.asarray(class_labels, jnp.int32)
    if class_labels.shape != (shape[0],):
      raise ValueError(f"class_labels of shape {class_labels.shape}; the batch needs ({shape[0]},)")
    return run_parallel(rng, variables, class_labels)

  call.jitted = run_parallel.jitted
  return call
