"""AFF/NFF multimodal benchmark harness: ``python -m benchmark --help``."""

import os as _os

# How OpenMP threads (PyTorch, XGBoost, LightGBM) wait for each other; must be set before torch
# loads. By default GNU OpenMP spins ~300k times before it sleeps: on cores shared with anything
# else, 2 threads then run many times slower than 1. Sleeping at once (OMP_WAIT_POLICY=PASSIVE) is
# safe but leaves an idle machine's cores waiting at every barrier of a small CNN. A short spin keeps
# most of both (docs/profiles.md, "CPU threads"). Runtimes other than GNU's (Intel, LLVM)
# read KMP_BLOCKTIME, set to sleep at once. A user's own OMP_WAIT_POLICY / GOMP_SPINCOUNT /
# KMP_BLOCKTIME wins.
if "OMP_WAIT_POLICY" not in _os.environ:
    _os.environ.setdefault("GOMP_SPINCOUNT", "1000")
    _os.environ.setdefault("KMP_BLOCKTIME", "0")

__version__ = "0.2.0"


def load_model(path, device: str = "cpu", *, trust=None):
    """The exported model in a bundle folder written by ``python -m benchmark export``.

    Every file of the bundle is checked against its SHA-256 in ``bundle.json`` before anything
    is read; a changed, missing or unlisted file is refused by name, and every part is read
    through checked, bounded fields (docs/security.md). ``device`` is where the networks run
    (``"cpu"`` or ``"cuda"``). ``trust``: public key files or folders; the bundle must then be
    signed by one of them (``python -m benchmark keys``).

    ```python
    from benchmark import load_model

    model = load_model("results/my-run/bundles/late_stacking", trust=["site-a.pub"])   # trust: optional
    table = model.predict("new-hospital.yaml")   # or a Cohort from benchmark.data.dataset.load_dataset
    ```
    """
    from benchmark.export.bundle import load_model as _load

    return _load(path, device=device, trust=trust)
