"""AFF/NFF multimodal benchmark harness: ``python -m benchmark --help``."""

import os as _os

# OpenMP threads (PyTorch, XGBoost, LightGBM) spin while they wait by default. On a machine
# whose cores are shared with anything else, that makes 2 threads 5-20x slower than 1
# (measured here: resnet18 step 6.2 s vs 0.28 s with PASSIVE). Must be set before torch loads.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
