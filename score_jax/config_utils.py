"""The checks of a run's config that span several keys or sections, and the numeric keys' ranges.

Each component checks its own keys where it is built from the config (`sde.get_sde`, `models.get_model`,
`optim.get_optimizer`, `datasets.get_dataset`, the objective, the sampler, the EMA); `RunSetup` builds
each of them once. What no single component can see is checked here, before anything compiles:
`check_config(config)`. `run_setup.validate_config(config)` runs both without loading data or compiling.
"""

import jax

from score_jax import datasets, likelihood, sampling, sde as sde_lib
from score_jax.utils import choice_error

BPD_DATASETS = ("train", "test")


def _check_choice(key, value, choices, lower=True):
  if (value.lower() if lower else value) not in choices:
    raise choice_error(key, value, choices)


def check_config(config):
  """Raises one `ValueError` naming the first bad key: keys that span components, numeric ranges."""
  training, sampling_config, model = config.training, config.sampling, config.model
  _check_choice("data.dataset", config.data.dataset, datasets.DATASETS, lower=False)
  _check_choice("sampling.method", sampling_config.method, sampling.SAMPLERS)
  _check_choice("sampling.predictor", sampling_config.predictor, sampling.PREDICTORS)
  _check_choice("sampling.corrector", sampling_config.corrector, sampling.CORRECTORS)
  _check_choice("eval.bpd_dataset", config.eval.bpd_dataset, BPD_DATASETS)
  _check_choice("eval.hutchinson", config.eval.hutchinson, likelihood.HUTCHINSON)
  check_numbers(config, NUMERIC_RULES)
  if not training.continuous and model.parameterization != "reference":
    raise ValueError("training.continuous=False (the reference's SMLD / DDPM losses) needs "
                     "model.parameterization='reference'")
  if sampling_config.predictor.lower() == "ancestral_sampling" and not hasattr(
      sde_lib.SDES.get(training.sde.lower()), "ancestral_step"):
    raise ValueError(f"sampling.predictor='ancestral_sampling' is defined for vesde and vpsde, not {training.sde}")

  devices = jax.device_count()
  for key in ("training.batch_size", "eval.batch_size", "sampling.batch_size"):
    section, name = key.split(".")
    value = config[section][name]
    if value <= 0 or value % devices:
      raise ValueError(f"{key}={value} must be a positive multiple of the device count ({devices})")
  n = training.n_jitted_steps
  if n <= 0:
    raise ValueError(f"training.n_jitted_steps={n} must be positive")
  for key in ("log_freq", "eval_freq", "snapshot_freq", "snapshot_freq_for_preemption"):
    value = training[key]
    if value <= 0 or value % n:
      raise ValueError(f"training.{key}={value} must be a positive multiple of training.n_jitted_steps ({n})")
  if training.n_iters <= 0:
    raise ValueError(f"training.n_iters={training.n_iters} must be positive")
  uses_ddpm_steps = not training.continuous or sampling_config.method.lower() == "pc" and (
      sampling_config.predictor.lower() in ("reverse_diffusion", "ancestral_sampling")
      or sampling_config.corrector.lower() in ("langevin", "ald"))
  if training.sde.lower() in ("vpsde", "subvpsde") and uses_ddpm_steps and model.beta_max > model.num_scales:
    raise ValueError(f"model.num_scales={model.num_scales} must be at least model.beta_max={model.beta_max}: "
                     "the DDPM discretisation (beta_i = beta / N) of this sampler and loss needs beta_max / N <= 1")
  if config.eval.end_ckpt < config.eval.begin_ckpt:
    raise ValueError(f"eval.end_ckpt={config.eval.end_ckpt} must be at least eval.begin_ckpt={config.eval.begin_ckpt}")
  _check_class_conditioning(config)
  if model.remat and model.name not in ("ncsnpp", "ddpm", "edm2", "dit"):
    raise ValueError(f"model.remat=True is implemented for ncsnpp, ddpm, edm2 and dit, not model.name={model.name!r}")


CLASS_CONDITIONAL_MODELS = ("ncsnpp", "ddpm", "mlp", "edm2", "dit")


def _check_class_conditioning(config):
  """`model.num_classes` against the data set's classes, and the guidance keys against the model."""
  num_classes, name = config.model.num_classes, config.data.dataset
  if num_classes:
    if config.model.name not in CLASS_CONDITIONAL_MODELS:
      raise ValueError(f"model.num_classes={num_classes}: class-conditional networks are "
                       f"{', '.join(CLASS_CONDITIONAL_MODELS)}, not model.name={config.model.name!r}")
    if name == datasets.LABELLED_FOLDER:
      if config.data.labels_from == "none":
        raise ValueError(f"model.num_classes={num_classes} needs labelled data: set data.labels_from to "
                         "'dataset_json' or 'subfolders' for data.dataset='folder'")
    elif name not in datasets.NUM_CLASSES:
      raise ValueError(f"model.num_classes={num_classes} needs labelled data; data.dataset={name!r} has no "
                       f"labels (labelled: {', '.join(datasets.NUM_CLASSES)})")
    elif num_classes != datasets.NUM_CLASSES[name]:
      raise ValueError(f"model.num_classes={num_classes}, but data.dataset={name!r} has "
                       f"{datasets.NUM_CLASSES[name]} classes")
  scale = float(config.sampling.guidance_scale or 0.0)
  interval = tuple(config.sampling.guidance_interval) or None
  if scale < 0:
    raise ValueError(f"sampling.guidance_scale={scale} must be >= 0")
  if scale and not num_classes and not config.sampling.guidance_workdir:
    raise ValueError(f"sampling.guidance_scale={scale} needs a class-conditional model (model.num_classes > 0) "
                     "or a guiding model (sampling.guidance_workdir)")
  if interval is not None and (len(interval) != 2 or not 0.0 <= interval[0] < interval[1]):
    raise ValueError(f"sampling.guidance_interval={interval} must be noise levels (low, high) with "
                     "0 <= low < high, or () for every level")


def _between(low, high, closed_high=False):
  return (lambda v: low <= v <= high) if closed_high else (lambda v: low <= v < high)


# (key, rule, what the rule says): every numeric key whose wrong value would train or sample nonsense.
NUMERIC_RULES = (
    ("optim.lr", lambda v: v > 0, "must be > 0"),
    ("optim.warmup", lambda v: v >= 0, "must be >= 0"),
    ("optim.beta1", _between(0.0, 1.0), "must lie in [0, 1)"),
    ("optim.beta2", _between(0.0, 1.0), "must lie in [0, 1)"),
    ("optim.ref_steps", lambda v: v > 0, "must be > 0"),
    ("training.teacher_steps", lambda v: v >= 2, "must be >= 2"),
    ("training.scm_warmup_steps", lambda v: v >= 0, "must be >= 0"),
    ("sampling.guidance_step", lambda v: v >= 0, "must be >= 0 (0: the newest checkpoint)"),
    ("optim.eps", lambda v: v > 0, "must be > 0"),
    ("optim.weight_decay", lambda v: v >= 0, "must be >= 0"),
    ("training.eps", lambda v: 0 < v < 1, "must lie in (0, 1)"),
    ("training.keep_checkpoints", lambda v: v >= 0, "must be >= 0 (0 keeps all)"),
    ("model.ema_rate", _between(0.0, 1.0), "must lie in [0, 1)"),
    ("model.num_scales", lambda v: v >= 1, "must be >= 1"),
    ("model.nf", lambda v: v >= 1, "must be >= 1"),
    ("model.num_res_blocks", lambda v: v >= 1, "must be >= 1"),
    ("model.dropout", _between(0.0, 1.0), "must lie in [0, 1)"),
    ("model.sigma_min", lambda v: v > 0, "must be > 0"),
    ("model.beta_min", lambda v: v >= 0, "must be >= 0"),
    ("model.sigma_data", lambda v: v > 0, "must be > 0"),
    ("model.schedule_features", lambda v: v >= 1, "must be >= 1"),
    ("training.edm_p_std", lambda v: v > 0, "must be > 0"),
    ("eval.elbo_num_times", lambda v: v >= 1, "must be >= 1"),
    ("model.fourier_scale", lambda v: v > 0, "must be > 0"),
    ("model.embedding_dim", lambda v: v >= 2 and v % 2 == 0, "must be an even number >= 2"),
    ("sampling.snr", lambda v: v >= 0, "must be >= 0"),
    ("sampling.n_steps_each", lambda v: v >= 0, "must be >= 0"),
    ("eval.num_samples", lambda v: v >= 0, "must be >= 0"),
    ("eval.bpd_num_repeats", lambda v: v >= 1, "must be >= 1"),
    ("eval.num_eval_batches", lambda v: v >= 0, "must be >= 0 (0: the whole split)"),
    ("eval.checkpoint_timeout", lambda v: v >= 0, "must be >= 0"),
    ("eval.begin_ckpt", lambda v: v >= 1, "must be >= 1"),
    ("data.image_size", lambda v: v >= 1, "must be >= 1"),
    ("data.num_eval", lambda v: v >= 1, "must be >= 1"),
)


def check_numbers(config, rules):
  """Raises a `ValueError` naming the first key of `rules` present in `config` whose value breaks its rule."""
  for key, rule, requirement in rules:
    section, name = key.split(".")
    if section not in config or name not in config[section] or config[section][name] is None:
      continue
    value = config[section][name]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not rule(value):
      raise ValueError(f"{key}={value!r} {requirement}")


_CLASSIFIER_POSITIVE = ("blocks_per_group", "channel_multiplier", "embedding_size", "temb_dim", "n_iters",
                        "log_freq", "eval_freq", "checkpoint_freq", "num_noise_bins")


def validate_classifier_config(config):
  """Raises one `ValueError` naming the first bad key of a `--mode=train_classifier` config."""
  if "classifier" not in config:
    raise ValueError("the config has no classifier section: build it on configs/default_cifar10_configs.py or add "
                     "configs.classifier.default_classifier_configs.get_classifier_config() as config.classifier")
  classifier = config.classifier
  _check_choice("training.sde", config.training.sde, sde_lib.SDES)
  _check_choice("data.dataset", config.data.dataset, datasets.LABELLED_DATASETS, lower=False)
  if classifier.optim.optimizer.lower() != "adam":
    raise choice_error("classifier.optim.optimizer", classifier.optim.optimizer, ["Adam"])
  for name in _CLASSIFIER_POSITIVE:
    if classifier[name] <= 0:
      raise ValueError(f"classifier.{name}={classifier[name]} must be positive")
  if classifier.num_classes < 2:
    raise ValueError(f"classifier.num_classes={classifier.num_classes} must be at least 2")
  k = classifier.channel_multiplier
  if k > 8 and k % 2:
    raise ValueError(f"classifier.channel_multiplier={k} must be at most 8 or even (GroupNorm of 32 groups)")
  if config.data.image_size % 4:
    raise ValueError(f"data.image_size={config.data.image_size} must be a multiple of 4 (two stride-2 groups)")
  devices = jax.device_count()
  for key, value in (("classifier.batch_size", classifier.batch_size), ("eval.batch_size", config.eval.batch_size)):
    if value <= 0 or value % devices:
      raise ValueError(f"{key}={value} must be a positive multiple of the device count ({devices})")
  if classifier.num_eval_batches < 0 or classifier.keep_checkpoints < 0:
    raise ValueError("classifier.num_eval_batches and classifier.keep_checkpoints must be >= 0 (0: all)")
