"""Evaluation: metrics, uncertainty, conformal sets and paired comparisons on predictions.

Everything here is a pure function of the predictions table (``predictions.parquet``);
no model is ever loaded. Entry points:

- ``uncertainty.add_uncertainty(pred)``: entropy, expected entropy, mutual information, member spread;
- ``leaderboard.build_leaderboard(pred, studies=..., n_boot=..., seed=...)``: leaderboard and fold metrics;
- ``compare.compare_candidates(pred, leaderboard, n_boot=..., seed=...)``: paired tests;
- ``metrics`` and ``conformal``: the single metrics they are built from.
"""
