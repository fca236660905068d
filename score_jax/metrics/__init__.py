"""Sample-quality metrics and the feature networks they use.

  distances.py  FID, KID, Inception score, sliced Wasserstein (host float64 formulas)
  inception.py  the FID Inception-v3 (pytorch-fid weights, no torch needed)
  digits.py     the small digits classifier shipped with score_jax and the Fréchet distance in its features
"""
