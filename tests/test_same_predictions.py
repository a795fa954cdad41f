"""benchmark.tools.same_predictions: are two runs' predictions bit-identical, per candidate?"""

from __future__ import annotations

import numpy as np
import pandas as pd

from benchmark.tools.same_predictions import main


def _run(folder, prob_raw, patients=(0, 1, 2)):
    folder.mkdir()
    n = len(patients)
    pd.DataFrame({"candidate": ["resnet18"] * n, "family": "timm_cnn", "modality": "image", "repeat": 0,
                  "outer_fold": 0, "set": "outer_test", "inner_fold": np.nan, "patient": list(patients),
                  "y": [0, 1, 0][:n], "prob": prob_raw, "prob_raw": prob_raw}).to_parquet(folder / "predictions.parquet")
    return str(folder)


def test_identical_runs_exit_zero_and_a_last_digit_difference_is_found(tmp_path, capsys):
    a = _run(tmp_path / "a", [0.1, 0.7, 0.2])
    b = _run(tmp_path / "b", [0.1, 0.7, 0.2])
    c = _run(tmp_path / "c", [0.1, np.nextafter(0.7, 1.0), 0.2])
    assert main([a, b]) == 0 and capsys.readouterr().out.strip().endswith("identical")
    assert main([a, c]) == 1
    out = capsys.readouterr().out
    assert "not identical" in out and " 1 " in out.splitlines()[1]      # one row differs
    d = _run(tmp_path / "d", [0.1, 0.7], patients=(0, 1))              # a row missing: not identical
    assert main([a, d]) == 1
    assert main([a, str(tmp_path / "none")]) == 2
