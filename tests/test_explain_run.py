"""Explanations inside a run: each unit's risk factors and missing-image predictions, gathered and reported."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from benchmark.candidates.base import TrialContext, get_family
from benchmark.data.dataset import load_dataset
from benchmark.data.synth import SynthConfig, write_cohort
from benchmark.explain.feature_cache import image_feature_cache
from benchmark.explain.missing import withheld_view
from benchmark.explain.permutation import shuffled, shuffles
from benchmark.run.runner import RunConfig, run
from runner_helpers import LATE, TINY_CNN, write_spaces

LOGREG = "name: lr\nfamily: logreg\nmodality: register\nspace:\n  C: {type: float, low: 0.1, high: 10, log: true}\n"


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    path = write_cohort(tmp_path_factory.mktemp("s") / "c",
                        SynthConfig(n_patients=160, n_aff=40, image_size=32, sparse_columns=10, workers=1))
    return path


@pytest.mark.parametrize("family", ["joint_concat", "gated", "attention", "film"])
def test_the_image_feature_cache_changes_no_prediction_and_skips_the_backbone(synth, family):
    cohort = load_dataset(synth)
    fam = get_family(family)(arch="test_resnet", epochs=1, batch_size=16, register_epochs=1, warm_start=False,
                             **({"n_heads": 2, "fusion_dim": 32} if family == "attention" else {}))
    fam.fit(cohort.view(np.arange(100), labels=True, image_size=32), None,
            TrialContext(seed=0, max_epochs=1, extra={"n_threads": 2}))
    view = cohort.view(np.arange(100, 160), labels=False, image_size=32)
    frames = [shuffled(view.register, c, p) for c in ("age", "bisfo") for p in shuffles(len(view), 0)]
    plain = [fam.predict_proba(replace(view, register=f)) for f in frames]
    calls = []
    conv = next(m for m in fam.model_.backbone.layer1.modules() if isinstance(m, torch.nn.Conv2d))
    handle = conv.register_forward_hook(lambda *a: calls.append(1))   # runs only when layer1 computes
    try:
        with image_feature_cache(fam):
            cached = [fam.predict_proba(replace(view, register=f)) for f in frames]
    finally:
        handle.remove()
    for a, b in zip(plain, cached):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    n_batches = -(-len(view.images) // fam.eval_batch_size_)
    assert len(calls) <= 2 * n_batches            # the first pass (and FiLM's check) only, not once per frame


def test_withheld_images_reach_a_fusion_family_as_missing(synth):
    cohort = load_dataset(synth)
    view = cohort.view(np.arange(10), labels=False, image_size=32,
                       upstream=pd.DataFrame({"img:prob": np.linspace(0.1, 0.9, 10), "img:prob_raw": 0.5,
                                              "reg:prob": 0.3, "reg:prob_raw": 0.3}, index=np.arange(10)))
    gone = np.zeros(10, bool)
    gone[[1, 4]] = True
    out = withheld_view(view, gone, ["img"])
    assert not np.isin([1, 4], out.image_owner).any() and set(out.image_owner) == set(range(10)) - {1, 4}
    assert out.upstream["img:prob"].isna().tolist() == gone.tolist() and out.upstream["reg:prob"].notna().all()
    late = get_family("late_average")()
    late.sources_, late.prior_ = ["img", "reg"], 0.1
    p = late.predict_proba(out)
    assert p[1] == pytest.approx(0.3) and p[0] != pytest.approx(0.3)   # without its image: the register input


def test_a_run_gathers_risk_factors_missing_images_and_the_truth(synth, tmp_path):
    spaces = write_spaces(tmp_path / "spaces", n_trials=1, outer_folds=2,
                          extra={"tiny_cnn": TINY_CNN, "late": LATE, "lr": LOGREG})
    out = Path(run(RunConfig(candidates=["lr", "tiny_cnn", "late"], data=str(synth), profile="tiny", device="cpu",
                             spaces=[str(spaces)], results_dir=str(tmp_path / "results"), run="why")))
    imp = pd.read_csv(out / "importance.csv")
    assert set(imp["candidate"]) == {"lr", "late"}                     # the image model reads no register
    assert imp.groupby(["candidate", "outer_fold"]).size().nunique() == 1   # every register column, every fold
    lr = imp[imp["candidate"].eq("lr")].set_index(["outer_fold", "column"])["auc_drop"]
    late = imp[imp["candidate"].eq("late")].set_index(["outer_fold", "column"])["auc_drop"]
    assert (late != 0).sum() > 0 and late.corr(lr, method="spearman") > 0.5   # through its register input
    assert "patient" not in imp.columns and not imp.astype(str).isin(["P00001"]).any().any()
    missing = pd.read_csv(out / "missing_modality.csv")
    assert set(missing["scenario"]) == {"images", "none", "half"} and set(missing["candidate"]) == {"late"}
    none = missing.set_index("scenario").loc["none"]
    assert none["reference"] == "lr" and none["auc"] == pytest.approx(none["ref_auc"], abs=0.01)   # late: its lr input
    truth = json.loads((out / "risk_truth.json").read_text())
    assert truth["signal"] and "noise" in truth
    assert not list((out / "parts").glob("*.permuted.npz"))          # read by the late fusion, then removed
    findings = (out / "findings.md").read_text()
    assert "## Risk factors" in findings and "Recovery of the generator's truth (lr)" in findings
    assert "## Images missing" in findings
    html = (out / "leaderboard.html").read_text()
    assert "fig-risk" in html and "fig-missing" in html and "patient_data/" not in html.replace("`patient_data/`", "")


def test_importance_none_writes_no_risk_factors_and_says_so(tmp_path):
    from runner_helpers import write_register_dataset

    ds = write_register_dataset(tmp_path / "d")
    spaces = write_spaces(tmp_path / "spaces", n_trials=1, outer_folds=2)
    out = Path(run(RunConfig(candidates=["probe"], data=str(ds), profile="tiny", device="cpu", importance="none",
                             spaces=[str(spaces)], results_dir=str(tmp_path / "results"), run="none")))
    assert not (out / "importance.csv").exists()
    assert "Not computed: the run has no importance.csv" in (out / "findings.md").read_text()


def test_importance_tables_leaves_out_the_fusion_networks_and_says_why(synth, tmp_path):
    joint = ("name: joint\nfamily: joint_concat\nmodality: fusion\n"
             "fixed: {arch: test_resnet, epochs: 1, batch_size: 8, warm_start: false}\n"
             "space:\n  lr: {type: float, low: 0.0005, high: 0.005, log: true}\n")
    spaces = write_spaces(tmp_path / "spaces", n_trials=1, outer_folds=2, extra={"lr": LOGREG, "joint": joint})
    out = Path(run(RunConfig(candidates=["lr", "joint"], data=str(synth), profile="tiny", device="cpu",
                             importance="tables", spaces=[str(spaces)], results_dir=str(tmp_path / "results"),
                             run="tables")))
    assert set(pd.read_csv(out / "importance.csv")["candidate"]) == {"lr"}
    notes = json.loads((out / "importance_notes.json").read_text())
    assert "--importance tables" in notes["joint"] and "--importance auto" in notes["joint"]
    assert json.loads((out / "manifest.json").read_text())["config"]["importance"] == "tables"
    assert set(pd.read_csv(out / "missing_modality.csv")["candidate"]) == {"joint"}   # still made
