"""Fusion families: five ways to combine radiographs and register data (one module each).

Importing this module registers them all (the registry imports ``benchmark.candidates.fusion``):

- ``fusion_late``:  ``late_average``, ``late_stacking`` (the consumed candidates' out-of-fold predictions);
- ``fusion_embed``: ``embed_xgboost``, ``embed_lightgbm`` (PCA of CNN embeddings + register data -> trees);
- ``fusion_nets``:  ``joint_concat``, ``film``, ``gated``, ``attention`` (CNN + MLP trained end to end).
"""

from benchmark.candidates.fusion_embed import EmbedLightGBMFamily, EmbeddingReducer, EmbedXGBoostFamily
from benchmark.candidates.fusion_late import LateAverageFamily, LateStackingFamily
from benchmark.candidates.fusion_nets import (AttentionFamily, FiLMFamily, GatedFamily, JointConcatFamily,
                                              NeuralFusion)

__all__ = [
    "AttentionFamily", "EmbedLightGBMFamily", "EmbedXGBoostFamily", "EmbeddingReducer", "FiLMFamily",
    "GatedFamily", "JointConcatFamily", "LateAverageFamily", "LateStackingFamily", "NeuralFusion",
]
