"""AFF/NFF multimodal benchmark harness: ``python -m benchmark --help``."""

import os as _os

# How OpenMP threads (PyTorch, XGBoost, LightGBM) wait for each other; must be set before torch
# loads. By default GNU OpenMP spins ~300k times before it sleeps: on cores shared with anything
# else 2 threads then run up to 24x slower than 1. Sleeping at once (OMP_WAIT_POLICY=PASSIVE)
# is safe but costs an idle machine 1.1-1.8x (the many short barriers of a small CNN). A short
# spin keeps most of both (2 cores, one 32 px training epoch, images/s resnet18 / densenet121:
# idle 634/239 passive, 726/435 with 1000 spins, 784/425 default; both cores busy with other
# work 407/240, 360/158, 17/-). Runtimes other than GNU's (Intel, LLVM) read KMP_BLOCKTIME, set
# to sleep at once as before. A user's own OMP_WAIT_POLICY / GOMP_SPINCOUNT / KMP_BLOCKTIME wins.
if "OMP_WAIT_POLICY" not in _os.environ:
    _os.environ.setdefault("GOMP_SPINCOUNT", "1000")
    _os.environ.setdefault("KMP_BLOCKTIME", "0")

__version__ = "0.1.0"


def load_model(path, device: str = "cpu", *, trust=None):
    """The exported model in a bundle folder (``python -m benchmark export``); see ``benchmark.export``.

        from benchmark import load_model
        m = load_model("results/<run>/bundles/late_stacking", trust=["site-a.pub"])   # trust: optional
        table = m.predict("new-hospital.yaml")       # or a Cohort from benchmark.data.dataset.load_dataset
    """
    from benchmark.export.bundle import load_model as _load

    return _load(path, device=device, trust=trust)
