"""Evaluation: metrics, uncertainty, conformal sets and paired comparisons on predictions.

Everything here is a pure function of the predictions table (``predictions.parquet``);
no model is ever loaded. Entry points:

- ``uncertainty.add_uncertainty(pred)``: entropy, expected entropy, mutual information, member spread;
- ``leaderboard.build_leaderboard(pred, studies=..., n_boot=..., seed=...)``: leaderboard and fold metrics;
- ``compare.compare_candidates(pred, leaderboard, n_boot=..., seed=...)``: paired tests;
- ``metrics`` (one set of predictions: summary numbers and the curves the report draws),
  ``weighted`` (the same metrics for many bootstrap resamples at once) and ``conformal``:
  what the leaderboard and the comparisons are built from.
"""
