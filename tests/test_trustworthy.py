"""Trustworthy findings, runner side: what would bias them by construction, each pinned by a test.

- the fold that scores a trial is never handed to a fit (early stopping, epochs and rounds
  come from the fit's own training part);
- a fusion candidate's members combine member k of each input, so the inputs' disagreement
  reaches the fusion's uncertainty;
- calibration is fitted and applied on the same kind of prediction (every method runs);
- a failed fusion input gives that fusion candidate a failed row, not an aborted run.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.special import expit, logit
from sklearn.linear_model import LogisticRegression

from benchmark.candidates.calibration import Calibrator, bag_prediction, member_scale_ratio
from benchmark.evaluate.uncertainty import add_uncertainty
from benchmark.run.runner import RunConfig, run
from runner_helpers import PROBE_YAML, write_register_dataset, write_spaces

LATE = """
name: fused
family: late_average
modality: fusion
consumes: [probe, probe_b]
fixed: {scale: logit, weight: 0.5}
space: {}
"""
FAILING = PROBE_YAML.format(fixed="always_fail: true").replace("name: probe", "name: broken")
LATE_ON_BROKEN = LATE.replace("consumes: [probe, probe_b]", "consumes: [probe, broken]")


def _run(tmp_path: Path, candidates: list[str], extra: dict[str, str] | None = None, **kw) -> Path:
    data = write_register_dataset(tmp_path / "data", n=200, n_pos=40)
    extra = {"probe_b": PROBE_YAML.format(fixed="").replace("name: probe", "name: probe_b"), "fused": LATE,
             **(extra or {})}
    spaces = write_spaces(tmp_path / "spaces", n_trials=2, outer_folds=2, extra=extra)
    cfg = dict(candidates=candidates, data=str(data), profile="tiny", device="cpu", spaces=[str(spaces)],
               results_dir=str(tmp_path / "results"), seed=3)
    cfg.update(kw)
    return run(RunConfig(**cfg))


def test_the_scoring_fold_is_never_handed_to_a_fit(tmp_path, monkeypatch):
    log = tmp_path / "probe.jsonl"
    monkeypatch.setenv("AFF_PROBE_LOG", str(log))
    _run(tmp_path, ["probe"])
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    fits = [c for c in calls if c["phase"] == "fit"]
    assert fits and any(c["search"] for c in fits)
    assert not any(c["valid_given"] for c in fits), "a fit was handed its scoring fold"
    # the search scores its inner-validation folds without handing their labels over
    assert not any(c["labelled"] for c in calls if c["phase"] == "predict")


def test_fusion_members_carry_the_inputs_disagreement(tmp_path):
    """late_average learns nothing; its members still differ because member k reads member k of each input."""
    out = _run(tmp_path, ["probe", "probe_b", "fused"])
    pred = pd.read_parquet(out / "predictions.parquet")
    test = add_uncertainty(pred[pred["set"] == "test"])
    for name in ("probe", "probe_b", "fused"):
        rows = test[test["candidate"] == name]
        assert rows["members"].map(len).eq(2).all()          # K = inner_folds members for every candidate
        assert (rows["mutual_info"] > 0).mean() > 0.9, name
    # and member k of the fusion is the average (in logits) of member k of the inputs
    parts = out / "parts"
    a, b, f = (pd.read_parquet(parts / f"{n}__r0_f0.parquet").query("set == 'test'").set_index("position")
               for n in ("probe", "probe_b", "fused"))
    for k in (0, 1):
        mk = lambda d: logit(np.array([m[k] for m in d.loc[f.index, "members"]]))
        raw = expit(0.5 * mk(a) + 0.5 * mk(b))
        cal_in = np.array([m[k] for m in f["members_raw"]])
        np.testing.assert_allclose(cal_in, raw, rtol=1e-6)


def test_a_failed_input_gives_the_fusion_a_failed_row_and_the_run_finishes(tmp_path):
    out = _run(tmp_path, ["probe", "broken", "fused"], extra={"broken": FAILING, "fused": LATE_ON_BROKEN})
    board = pd.read_csv(out / "leaderboard.csv").set_index("candidate")
    assert board.loc["broken", "status"] == "failed"
    assert board.loc["fused", "status"] == "failed" and "input" in board.loc["fused", "info"]
    assert board.loc["probe", "status"] != "failed" and np.isfinite(board.loc["probe", "auc"])
    assert json.loads((out / "manifest.json").read_text())["status"] != "running"


@pytest.mark.parametrize("method", ["platt", "temperature", "isotonic", "none"])
def test_every_calibration_method_runs_through_a_run(tmp_path, method):
    out = _run(tmp_path, ["probe"], calibration=method)
    board = pd.read_csv(out / "leaderboard.csv").set_index("candidate")
    assert board.loc["probe", "status"] != "failed", board.loc["probe", "info"]
    pred = pd.read_parquet(out / "predictions.parquet")
    assert np.isfinite(pred["prob"]).all() and pred["prob"].between(0, 1).all()
    assert json.loads((out / "manifest.json").read_text()).get("calibration", method) == method


def _slope(y, p):
    z = logit(np.clip(p, 1e-6, 1 - 1e-6))
    return float(LogisticRegression(C=1e6).fit(z[:, None], y).coef_[0, 0])


@pytest.mark.parametrize("method", ["platt", "isotonic"])
def test_a_diverse_bag_is_calibrated_on_a_large_test_set(method):
    """Members = signal + independent noise (var 1, signal var 2.25); calibrator fitted on one member each."""
    rng = np.random.default_rng(0)
    n, K = 120_000, 3
    s = rng.normal(-3.5, 1.5, n)
    y = (rng.random(n) < expit(s)).astype(int)
    z = s[:, None] + rng.normal(0, 1.0, (n, K))
    half = n // 2
    single = z[np.arange(half), rng.integers(0, K, half)]         # OOF: one member per patient
    cal = Calibrator(method).fit(expit(single), y[:half])
    prob, prob_raw, members = bag_prediction(cal, expit(z[half:]).T)
    assert abs(_slope(y[half:], prob) - 1.0) < 0.1
    # the old scheme (calibrate the mean as if it were one member) is under-confident here
    assert _slope(y[half:], cal.transform(expit(z[half:]).mean(axis=1))) > 1.15
    assert members.shape == (K, n - half) and np.allclose(members[0], cal.transform(expit(z[half:, 0])))


def test_identical_members_are_left_alone():
    z = np.tile(np.linspace(-3, 1, 50), (3, 1))
    assert member_scale_ratio(z) == 1.0
    cal = Calibrator("platt")
    cal.fitted_method, cal.a, cal.b = "platt", 0.8, -0.2
    prob, _, _ = bag_prediction(cal, expit(z))
    np.testing.assert_allclose(prob, cal.transform(expit(z[0])))


def test_studies_carry_the_learning_curve_of_iterative_bags(tmp_path):
    out = _run(tmp_path, ["probe", "xgboost", "mlp"])
    st = pd.read_csv(out / "studies.csv").set_index("candidate")
    assert st.loc["probe", ["curve_25", "curve_50", "curve_100", "at_budget"]].isna().all().all()
    for name in ("xgboost", "mlp"):
        rows = st.loc[[name]]
        assert rows[["curve_25", "curve_50", "curve_100"]].notna().all().all(), name
        np.testing.assert_allclose(rows["curve_100"], rows["best_value"], atol=1e-9)
    assert st.loc[["xgboost"], "at_budget"].between(0, 1).all()
    # the tiny profile's 2-epoch cap is within the MLP's patience (20): early stopping could not have
    # fired, so it says nothing (NaN) and the curve alone tells whether the MLP was still improving
    assert st.loc[["mlp"], "at_budget"].isna().all()


def test_early_stopping_tells_nothing_where_the_budget_is_within_its_patience():
    """A fit of no more epochs than its patience cannot stop early: "it did not stop" is then true by
    construction and is no evidence that the network was still improving (None: the curve decides)."""
    from benchmark.candidates.base import TrialContext, get_family
    from test_fusion import toy_cohort

    data, _ = toy_cohort(n=200)
    ctx = TrialContext(seed=0, extra={"n_threads": 1})
    kw = dict(batch_size=32, hidden=8, n_layers=1)
    short = get_family("mlp")(max_epochs=3, patience=3, **kw).fit(data, None, ctx)
    assert short.stopped_early_ is None and short.still_improving() is None
    longer = get_family("mlp")(max_epochs=4, patience=3, **kw).fit(data, None, ctx)
    assert longer.stopped_early_ is not None and longer.still_improving() in (True, False)


def test_a_one_epoch_network_keeps_its_learning_curve_in_steps(tmp_path):
    """25 / 50 % of the budget are optimiser steps, so a one-epoch fit still has a curve;
    a budget of one step has no earlier point (None, not the final model)."""
    from benchmark.candidates.base import TrialContext, get_family
    from test_fusion import toy_cohort

    data, _ = toy_cohort(n=300)
    ctx = TrialContext(seed=0, extra={"n_threads": 1})
    fam = get_family("mlp")(max_epochs=1, batch_size=16, patience=None, hidden=8, n_layers=1).fit(data, None, ctx)
    assert set(fam.snapshots_) == {0.25, 0.5}
    final = fam.predict_proba(data)
    assert not np.allclose(fam.predict_at(data, 0.25), final)
    np.testing.assert_array_equal(fam.predict_at(data, 1.0), final)
    np.testing.assert_array_equal(fam.predict_proba(data), final)         # the snapshot did not replace the model
    one_step = get_family("mlp")(max_epochs=1, batch_size=0, patience=None, hidden=8, n_layers=1).fit(data, None, ctx)
    assert one_step.predict_at(data, 0.25) is None
