"""The sampler registry, `sample(..., method=...)`, and `get_sampling_fn(config, ...)`."""

import dataclasses

import jax
import jax.numpy as jnp

from score_jax import parallel
from score_jax.models import check_guidance, get_score_fn, num_classes_of
from score_jax.sampling import adaptive_sde, consistency, ddim, dpm_solver, flow_map, heun, pc, probability_flow
from score_jax.sampling.common import SampleOutput, count_network_evaluations, options_of, prior_draw, sample_function
from score_jax.utils import choice_error

# name -> the family: a `common.Sampler` whose fields are its options; its public function is `<name>_sample`.
FAMILIES = {
    "pc": pc.PCSampler,
    "ode": probability_flow.ODESampler,
    "ddim": ddim.DDIMSampler,
    "dpm_solver": dpm_solver.DPMSolverSampler,
    "heun": heun.HeunSampler,
    "adaptive_sde": adaptive_sde.AdaptiveSDESampler,
    "consistency": consistency.ConsistencySampler,
    "flow_map": flow_map.FlowMapSampler,
}
SAMPLERS = {name: sample_function(family, f"{name}_sample") for name, family in FAMILIES.items()}


def sample(rng, score_fn, sde, shape, *, method="pc", **options):
  """Dispatches to `SAMPLERS[method]`; unknown methods or options raise `ValueError`."""
  if method not in FAMILIES:
    raise choice_error("method", method, FAMILIES)
  valid = [option.name for option in options_of(FAMILIES[method])] + ["z"]
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
CONFIG_KEYS = {"n_steps": "n_steps_each", "denoise": "noise_removal", "times": "consistency_times",
               "grid": "consistency_grid"}


def config_key(option):
  """The `config.sampling` key of a sampler option (the reference's name where it had one)."""
  return CONFIG_KEYS.get(option, option)


def config_options(method, sampling_config, eps):
  """The sampler of `config.sampling` for `method`, checked: a `FAMILIES[method]` whose options are read
  from `config.sampling.<config_key(option)>` unless missing or None (then the family's default). Names
  (predictor, corrector, schedule, ...) may come in any case, as the reference's configs spell them; the
  end time is `eps`; options marked `not_in_config` keep their defaults.

  Raises:
    ValueError: the method or an option is invalid (the family's own `check`).
  """
  if method not in FAMILIES:
    raise choice_error("sampling.method", method, FAMILIES)
  options = {}
  for field in dataclasses.fields(FAMILIES[method]):
    value = sampling_config.get(config_key(field.name)) if field.metadata.get("in_config", True) else None
    if value is not None:
      options[field.name] = value.lower() if isinstance(value, str) else value
  sampler = FAMILIES[method](**dict(options, eps=eps))
  sampler.check()
  return sampler


def _sample_function(config, sde, model, shape, eps, guide=None):
  """`sample_fn(rng, variables, class_labels) -> SampleOutput` of `config.sampling` for a batch of `shape` (the
  samples in model space), not jitted, and the model's class count; checked before anything compiles. `guide`:
  the autoguidance guide (`models.GuidingModel`) of `sampling.guidance_workdir`, loaded by the caller (samplers
  open no files)."""
  sampler = config_options(config.sampling.method.lower(), config.sampling, eps)
  continuous = config.training.continuous
  shape = tuple(shape)
  num_classes = num_classes_of(model)
  guidance_scale, guidance_interval = guidance_options(config)
  if guide is None and config.sampling.get("guidance_workdir", ""):
    raise ValueError(f"sampling.guidance_workdir={config.sampling.guidance_workdir!r} is set but no guide was "
                     "passed: load it with score_jax.trained_model.guiding_model(config) and pass guide=")
  check_guidance(model, 0 if num_classes else None, guidance_scale, guidance_interval, guide)

  def sample_fn(rng, variables, class_labels, z_sharding=None):
    bound_sde = sde.bind(variables)  # a learned schedule's parameters are the model's
    score_fn = get_score_fn(bound_sde, model, variables, train=False, continuous=continuous,
                            class_labels=class_labels if num_classes else None, guidance_scale=guidance_scale,
                            guidance_interval=guidance_interval, guide=guide)
    z = prior_draw(rng, bound_sde, shape)  # the draw of z=None, placed where the batch is split
    if z_sharding is not None:
      z = jax.lax.with_sharding_constraint(z, z_sharding)
    return count_network_evaluations(sampler.run(rng, z, score_fn, bound_sde, shape), score_fn)

  return sample_fn, num_classes


def _taking_class_labels(run_parallel, num_classes, batch_size, inverse_scaler):
  """`call(rng_or_keys, variables, class_labels=None)`: `run_parallel` with the labels checked, or the
  default ones (`default_class_labels`), its samples passed through `inverse_scaler` after it (outside its
  program: a latent run's decoder, `latent_data`, keeps its weights out of the sampler's compiled constants)."""
  default = default_class_labels(num_classes, batch_size)

  def call(rng, variables, class_labels=None):
    if class_labels is None:
      class_labels = default
    elif not num_classes:
      raise ValueError("class_labels need a class-conditional model (model.num_classes > 0)")
    class_labels = jnp.asarray(class_labels, jnp.int32)
    if class_labels.shape != (batch_size,):
      raise ValueError(f"class_labels of shape {class_labels.shape}; the batch needs ({batch_size},)")
    output = run_parallel(rng, variables, class_labels)
    return output.replace(samples=inverse_scaler(output.samples))

  call.jitted = run_parallel.jitted
  return call


def get_sampling_fn(config, sde, model, shape, inverse_scaler, eps, *, mesh=None, guide=None):
  """Builds the sampler of `config.sampling` for `model`.

  `config.sampling.method` is "pc" (predictor, corrector, snr, n_steps_each, probability_flow,
  noise_removal), "ode" (rtol, atol, noise_removal, max_steps) or a fast sampler ("ddim",
  "dpm_solver", "heun", "adaptive_sde"), each option read from `config.sampling.<name>` (`config_options`).
  All score functions use `config.training.continuous`: the reference's ODE sampler always used
  continuous labels, which feeds sigma to discrete VE networks that expect an index; ours gives every
  network the labels it was trained on. `config.sampling.rtol/atol` reach the ODE sampler (the
  reference's kept its fixed tolerances).

  The batch is split over the devices of `mesh` (default: every device of every process) and
  `variables` are replicated: x_T is drawn sharded and every step runs on each device's slice.
  Sample i depends on (rng, i) only, so the samples are those of a single-device run (the
  Langevin and ODE step sizes use global-batch norms, reduced across devices inside jit).
  `get_seed_sampling_fn` makes each sample depend on its own seed alone.

  A class-conditional model (`model.num_classes`) samples the classes `class_labels` (default: sample i
  of class i mod num_classes), with classifier-free guidance `sampling.guidance_scale` on the noise
  levels `sampling.guidance_interval` (`models.get_score_fn`). With `sampling.guidance_workdir` (or `guide`, a
  `models.GuidingModel`) the guidance is autoguidance instead: (1 + w) D_main - w D_guide with the second
  model, for unconditional models too (Karras et al. 2024b).

  Returns:
    `sample_fn(rng, variables, class_labels=None) -> SampleOutput`, jitted; samples pass through
    `inverse_scaler` (after the jitted program, `sample_fn.jitted`, which returns them in model space) and come
    back split over the mesh (`parallel.gather` fetches them on every process); `nfe` counts network evaluations
    per sample (two per guided score evaluation).

  Raises:
    ValueError: for an unknown method or option, or a batch `shape[0]` that is not a multiple of
      the device count (before anything compiles).
  """
  mesh = mesh if mesh is not None else parallel.make_mesh()
  parallel.check_batch("sampling batch size shape[0]", shape[0], mesh)
  sample_fn, num_classes = _sample_function(config, sde, model, shape, eps, guide)
  batch_sharding = parallel.data_sharded(mesh)
  run_parallel = parallel.data_parallel(
      lambda rng, variables, class_labels: sample_fn(rng, variables, class_labels, batch_sharding), mesh,
      in_batch=(False, False, True), out_batch=SampleOutput(samples=True, nfe=False))
  return _taking_class_labels(run_parallel, num_classes, shape[0], inverse_scaler)


def get_seed_sampling_fn(config, sde, model, shape, inverse_scaler, eps, *, mesh=None, guide=None):
  """The sampler of `config.sampling` with one key per sample: sample i is what a batch of one gives from
  `keys[i]` (its noise, and any batch-wide quantity such as the Langevin step size or the adaptive ODE
  solver's error norm, are its own), so it depends on its key and class alone, whatever the batch size,
  the device count or the other samples in the batch (`main.py --mode=sample --seeds=...`).

  `shape` is the batch's, `(B,) + data shape`; B must be a multiple of the device count of `mesh`.

  Returns:
    `sample_fn(keys, variables, class_labels=None) -> SampleOutput` for `(B,)` keys (`jax.random.PRNGKey(s)`
    stacked); `nfe` is per sample, `(B,)`. Without `class_labels`, sample i of a class-conditional model
    is of class i mod num_classes.
  """
  mesh = mesh if mesh is not None else parallel.make_mesh()
  parallel.check_batch("sampling batch size shape[0]", shape[0], mesh)
  one = (1,) + tuple(shape[1:])
  sample_fn, num_classes = _sample_function(config, sde, model, one, eps, guide)

  def per_seed(key, variables, label):
    output = sample_fn(key, variables, label[None])
    return output.replace(samples=output.samples[0], nfe=jnp.asarray(output.nfe))

  run_parallel = parallel.data_parallel(jax.vmap(per_seed, in_axes=(0, None, 0)), mesh,
                                        in_batch=(True, False, True), out_batch=SampleOutput(samples=True, nfe=True))
  return _taking_class_labels(run_parallel, num_classes, shape[0], inverse_scaler)
