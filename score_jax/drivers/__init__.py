"""The programs behind `main.py`: training, evaluation, image editing and classifier training.

  train.py             train_and_evaluate(config, workdir)          --mode=train
  evaluate.py          evaluate(...), compute_fid_stats(...)        --mode=eval, --mode=fid_stats
  edit.py              edit(config, workdir, mode, ...)              --mode=inpaint|colorize|conditional
  train_classifier.py  train_classifier(config, workdir)            --mode=train_classifier
"""
