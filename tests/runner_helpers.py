"""Tiny register-only datasets and run helpers for the runner's tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

PROBE_YAML = """
name: probe
family: fake_families:ProbeFamily
modality: register
fixed: {{{fixed}}}
space:
  C: {{type: float, low: 0.01, high: 10, log: true}}
"""

PROFILE_YAML = """
tiny:
  description: test profile
  outer_folds: {outer_folds}
  inner_folds: 2
  repeats: 1
  n_trials: {n_trials}
  study_timeout_s: 600
  max_epochs: 2
  image_size: 16
  max_patients: null
  bootstrap: 50
  mc_passes: 0
"""

# A tiny timm CNN and a late fusion of the best image and register candidates (tiny datasets with images).
TINY_CNN = """
name: tiny_cnn
family: timm_cnn
modality: image
fixed: {arch: test_resnet, epochs: 2, batch_size: 8, patience: 5}
space:
  lr: {type: float, low: 0.0005, high: 0.005, log: true}
"""
LATE = """
name: late
family: late_average
modality: fusion
consumes: [best_image, best_register]
space:
  weight: {type: float, low: 0.0, high: 1.0}
"""


def write_register_dataset(root: Path, *, n: int = 150, n_pos: int = 30, seed: int = 0,
                           shuffle_labels: bool = False) -> Path:
    """A register-only dataset with a planted signal in two of eight columns."""
    rng = np.random.default_rng(seed)
    y = np.zeros(n, dtype=int)
    y[rng.choice(n, n_pos, replace=False)] = 1
    x = rng.normal(size=(n, 8))
    x[:, 0] += 1.5 * y
    x[:, 1] -= 1.0 * y
    df = pd.DataFrame(x, columns=[f"v{i}" for i in range(8)])
    df.loc[rng.random(n) < 0.1, "v2"] = np.nan
    df.insert(0, "pid", [f"ID{1000 + i}" for i in range(n)])
    labels = rng.permutation(y) if shuffle_labels else y
    df.insert(1, "group", np.where(labels == 1, "AFF", "NFF"))
    root.mkdir(parents=True, exist_ok=True)
    df.to_csv(root / "register.csv", index=False)
    (root / "dataset.yaml").write_text(
        "name: tiny-register\nregister: register.csv\nid_column: pid\n"
        "label: {column: group, positive: AFF, negative: NFF}\n")
    return root / "dataset.yaml"


def write_spaces(root: Path, *, n_trials: int = 3, outer_folds: int = 3, extra: dict[str, str] | None = None) -> Path:
    """A spaces folder with the probe candidate, a ``tiny`` profile and ``extra`` candidate files."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "probe.yaml").write_text(PROBE_YAML.format(fixed=""))
    (root / "profiles.yaml").write_text(PROFILE_YAML.format(n_trials=n_trials, outer_folds=outer_folds))
    for name, text in (extra or {}).items():
        (root / f"{name}.yaml").write_text(text)
    return root
