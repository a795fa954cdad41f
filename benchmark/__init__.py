"""AFF/NFF multimodal benchmark harness: ``python -m benchmark --help``."""

import os as _os

# OpenMP threads (PyTorch, XGBoost, LightGBM) spin while they wait by default. On a machine
# whose cores are shared with anything else, that makes 2 threads 5-20x slower than 1
# (measured here: resnet18 step 6.2 s vs 0.28 s with PASSIVE). Must be set before torch loads.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"


def load_model(path, device: str = "cpu"):
    """The exported model in a bundle folder (``python -m benchmark export``); see ``benchmark.export``.

        from benchmark import load_model
        m = load_model("results/<run>/bundles/late_stacking")
        table = m.predict("new-hospital.yaml")       # or a Cohort from benchmark.data.dataset.load_dataset
    """
    from benchmark.export.bundle import load_model as _load

    return _load(path, device=device)
