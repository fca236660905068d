"""The `classifier` section of every config: the noise-conditional WideResNet of class-conditional sampling.

`python main.py --mode=train_classifier` trains it on the config's data set, perturbed by the config's
SDE (`score_jax.classifier`), into `<workdir>/classifier/`. The defaults are the reference's network
(`models/wideresnet_noise_conditional.py`): WRN-28-10 with 128 Fourier features (scale 16) of log sigma and a 512-d noise
embedding, 38,913,242 weights. The reference shipped neither its training code nor its checkpoint,
so the training hyper-parameters below are ours.
"""

import ml_collections


def get_classifier_config():
  classifier = ml_collections.ConfigDict()
  classifier.blocks_per_group = 4           # residual blocks per group: WRN-(6 b + 4), 4 -> WRN-28
  classifier.channel_multiplier = 10        # widening factor k: groups of 16k, 32k, 64k channels
  classifier.num_classes = 10               # outputs (labels 0 .. num_classes - 1)
  classifier.embedding_size = 128           # Fourier features of log sigma
  classifier.fourier_scale = 16.0           # std of their frequencies
  classifier.temb_dim = 512                 # noise-embedding width
  classifier.dtype = "float32"              # compute dtype (float32 | bfloat16); parameters stay float32
  classifier.batch_size = 128               # training batch (eval uses eval.batch_size)
  classifier.n_iters = 100_000              # optimisation steps
  classifier.log_freq = 100                 # steps between training loss / accuracy lines
  classifier.eval_freq = 5000               # steps between held-out accuracies by noise level
  classifier.checkpoint_freq = 5000         # steps between checkpoints (and at the end)
  classifier.keep_checkpoints = 2           # checkpoints kept in <workdir>/classifier/checkpoints
  classifier.num_noise_bins = 5             # held-out accuracy in this many equal bins of t in [eps, T]
  classifier.num_eval_batches = 0           # held-out batches per evaluation (0: all of them)

  classifier.optim = optim = ml_collections.ConfigDict()  # the keys of config.optim
  optim.optimizer = "Adam"                  # Adam (score_jax.optim.get_optimizer)
  optim.lr = 2e-4                           # peak learning rate
  optim.beta1 = 0.9                         # Adam beta1 (beta2 = 0.999)
  optim.eps = 1e-8                          # Adam epsilon
  optim.weight_decay = 0.0                  # decoupled weight decay
  optim.warmup = 1000                       # linear warm-up steps
  optim.grad_clip = 1.0                     # global-norm clipping (< 0 disables)
  return classifier
