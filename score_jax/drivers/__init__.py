"""The programs behind `main.py`: training, evaluation, image editing, classifier training, sampling by
seed and sample-quality measurement of image files.

  train.py             train_and_evaluate(config, workdir)          --mode=train
  evaluate.py          evaluate(...), compute_fid_stats(...)        --mode=eval, --mode=fid_stats
  edit.py              edit(config, workdir, mode, ...)              --mode=inpaint|colorize|conditional
  train_classifier.py  train_classifier(config, workdir)            --mode=train_classifier
  generate.py          generate(config, workdir, seeds, out, ...)   --mode=sample
  sample_quality.py    compare(samples, ref), write_statistics(...) --mode=fid, --mode=fid_stats --samples=...
"""
