"""The statistics behind the findings say "fusion helps" exactly when the cohort makes it true.

Cohorts are built with the synthetic generator's knobs (complementary, redundant, uninformative
register data) at small size; the three exact oracle posteriors stand in for a perfect image
model, a perfect register model and a perfect fusion model, so the test isolates the
evaluation, the paired comparisons and the findings text from model training.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from benchmark.data.synth import SynthConfig
from benchmark.data.synth_model import simulate
from benchmark.evaluate.compare import compare_candidates
from benchmark.evaluate.leaderboard import build_leaderboard
from benchmark.evaluate.uncertainty import add_uncertainty
from benchmark.report.findings import findings_markdown

ROLES = {"img": ("image", "oracle_image"), "reg": ("register", "oracle_register"), "fus": ("fusion", "oracle_both")}


def _run_dir(tmp_path, **knobs):
    _, latents, oracle = simulate(SynthConfig(n_patients=1500, n_aff=150, seed=4, **knobs))
    oracle = oracle.reset_index(drop=True)
    y = latents["y"].to_numpy().astype(int)
    fold = np.random.default_rng(0).integers(0, 5, len(y))
    rows = []
    for name, (modality, col) in ROLES.items():
        p = oracle[col].to_numpy(float)
        rows.append(pd.DataFrame({
            "candidate": name, "family": name, "modality": modality, "repeat": 0, "outer_fold": fold,
            "set": "test", "inner_fold": -1, "patient": [f"P{i:05d}" for i in range(len(y))], "y": y,
            "prob": p, "prob_raw": p, "members": [[float(v)] for v in p]}))
    pred = add_uncertainty(pd.concat(rows, ignore_index=True))
    studies = pd.DataFrame([{"candidate": n, "family": n, "modality": m, "repeat": 0, "outer_fold": f,
                             "best_value": {"img": 0.9, "reg": 0.8, "fus": 0.95}[n], "n_trials": 1, "n_failed": 0,
                             "status": "ok", "info": "", "wall_s": 0.0}
                            for n, (m, _) in ROLES.items() for f in range(5)])
    board, _ = build_leaderboard(pred, studies=studies, n_boot=300, seed=0)
    comp = compare_candidates(pred, board, n_boot=300, seed=0)
    board.to_csv(tmp_path / "leaderboard.csv", index=False)
    comp.to_csv(tmp_path / "comparisons.csv", index=False)
    (tmp_path / "manifest.json").write_text(json.dumps({"run": "t", "profile_name": "test", "seed": 0,
                                                        "dataset": {"name": "synthetic", "n_patients": len(y)}}))
    return comp, findings_markdown(tmp_path)


def _auc_vs(comp, ref):
    return comp[(comp.metric == "auc") & (comp.candidate == "fus") & (comp.reference == ref)].iloc[0]


def test_complementary_modalities_findings_say_fusion_helps(tmp_path):
    comp, text = _run_dir(tmp_path)
    row = _auc_vs(comp, "img")
    assert row["lo"] > 0 and row["verdict"] == "candidate_better"
    assert "Yes: fusion discriminates better than img" in text


@pytest.mark.parametrize("knobs", [{"relation": "redundant"}, {"register_strength": 0.0}])
def test_redundant_or_uninformative_register_findings_do_not_claim_fusion_helps(tmp_path, knobs):
    comp, text = _run_dir(tmp_path, **knobs)
    row = _auc_vs(comp, "img")
    assert row["verdict"] != "candidate_better"
    assert "Yes: fusion" not in text and "No: no fusion candidate has a higher AUC than img" in text
