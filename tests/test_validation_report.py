"""External validation figures, validation.csv and validation.html (report/validation.py)."""

import csv
import json
import math
import re

import numpy as np
import pytest
from scipy.special import expit, logit
from scipy.stats import norm

from benchmark.evaluate import conformal as C
from benchmark.report.validation import validation_figures
from benchmark.report.validation_page import CSV_COLUMNS, write_validation

LEVELS = {"90": [0.6, 0.7], "95": [0.8, float("inf")]}


def _calibrated(n=20000, seed=0):
    rng = np.random.default_rng(seed)
    p = rng.beta(2, 5, n)
    return (rng.random(n) < p).astype(int), p


def test_well_calibrated_predictions_give_slope_one_and_citl_zero():
    y, p = _calibrated()
    fig = validation_figures(y, p, threshold=0.4, conformal=LEVELS, n_boot=200, seed=0)
    assert abs(fig["cal_slope"] - 1) < 0.05
    assert abs(fig["citl"]) < 0.05
    assert fig["cal_slope_lo"] < fig["cal_slope"] < fig["cal_slope_hi"]
    assert fig["citl_lo"] < fig["citl"] < fig["citl_hi"]
    assert abs(fig["oe_ratio"] - 1) < 0.03
    assert fig["brier_lo"] < fig["brier"] < fig["brier_hi"]


def test_shifted_and_overconfident_predictions_are_flagged_by_citl_and_slope():
    y, p = _calibrated()
    shifted = validation_figures(y, p ** 2, threshold=0.4, conformal={}, n_boot=100)
    assert shifted["citl"] > 0.5 and shifted["citl_lo"] > 0.3   # predictions too low: risk under-estimated
    assert shifted["oe_ratio"] > 1.3
    overconfident = validation_figures(y, expit(2 * logit(p)), threshold=0.4, conformal={}, n_boot=100)
    assert abs(overconfident["cal_slope"] - 0.5) < 0.05
    assert overconfident["cal_slope_hi"] < 0.7


def test_auc_interval_contains_the_true_binormal_auc():
    rng = np.random.default_rng(3)
    d, n = 1.0, 1000
    score = np.r_[rng.normal(0, 1, n), rng.normal(d, 1, n)]
    y = np.r_[np.zeros(n), np.ones(n)].astype(int)
    fig = validation_figures(y, expit(score), threshold=0.5, conformal={}, n_boot=50)
    true_auc = norm.cdf(d / math.sqrt(2))
    assert fig["auc_lo"] < true_auc < fig["auc_hi"]
    assert fig["auc_hi"] - fig["auc_lo"] < 0.1


def test_one_class_gives_nan_auc_and_a_note_without_an_exception():
    rng = np.random.default_rng(1)
    fig = validation_figures(np.zeros(40, dtype=int), rng.random(40), threshold=0.5, conformal=LEVELS, n_boot=50)
    assert math.isnan(fig["auc"]) and math.isnan(fig["cal_slope"]) and math.isnan(fig["sensitivity"])
    assert any("only one class" in note for note in fig["notes"])
    json.dumps(fig)


def test_no_patients_gives_nan_figures_without_an_exception():
    fig = validation_figures([], [], threshold=0.5, conformal=LEVELS, n_boot=50)
    assert fig["n"] == 0 and math.isnan(fig["brier"]) and fig["reliability"] == []
    json.dumps(fig)


def _wilson(k, n, z=1.959963984540054):
    centre = (k + z * z / 2) / (n + z * z)
    half = z / (n + z * z) * math.sqrt(k * (n - k) / n + z * z / 4)
    return centre - half, centre + half


def test_sensitivity_specificity_ppv_npv_match_a_hand_count():
    y = [0, 0, 0, 1, 1, 1, 1]
    p = [0.1, 0.5, 0.7, 0.2, 0.5, 0.6, 0.9]  # positive when p >= 0.5: patients 2, 3, 5, 6, 7
    fig = validation_figures(y, p, threshold=0.5, conformal={}, n_boot=20)
    # TP = 3 (of 4 AFF), TN = 1 (of 3 NFF), FP = 2, FN = 1
    assert fig["sensitivity"] == pytest.approx(3 / 4)
    assert fig["specificity"] == pytest.approx(1 / 3)
    assert fig["ppv"] == pytest.approx(3 / 5)
    assert fig["npv"] == pytest.approx(1 / 2)
    assert (fig["sensitivity_lo"], fig["sensitivity_hi"]) == pytest.approx(_wilson(3, 4))
    assert (fig["specificity_lo"], fig["specificity_hi"]) == pytest.approx(_wilson(1, 3))


def test_conformal_figures_match_evaluate_conformal():
    y = np.array([0, 0, 0, 1, 1, 1])
    p = np.array([0.05, 0.3, 0.55, 0.45, 0.8, 0.97])
    fig = validation_figures(y, p, threshold=0.5, conformal={"90": [0.35, "inf"], "95": [0.5, 0.5]}, n_boot=20)
    for level, q in (("90", [0.35, np.inf]), ("95", [0.5, 0.5])):
        sets = C.predict_sets(p, q)
        cov = C.class_coverage(y, sets)
        got = fig["conformal"][level]
        assert got["coverage_nff"] == pytest.approx(cov[0])
        assert got["coverage_aff"] == pytest.approx(cov[1])
        assert got["coverage"] == pytest.approx(sets[np.arange(6), y].mean())
        assert got["singleton_rate"] == pytest.approx(C.singleton_rate(sets))
        assert got["empty_rate"] == pytest.approx(C.empty_rate(sets))
        assert got["mean_set_size"] == pytest.approx(sets.sum(1).mean())
    assert fig["conformal"]["90"]["thresholds"] == [0.35, "inf"]   # infinite thresholds are stored as "inf"
    assert fig["conformal"]["90"]["target"] == pytest.approx(0.9)


def test_figures_are_plain_json_with_curves_of_the_stated_shape():
    y, p = _calibrated(3000, seed=2)
    fig = validation_figures(y, p, threshold=0.3, conformal=LEVELS, n_boot=50)
    back = json.loads(json.dumps(fig))
    assert back["conformal"]["95"]["thresholds"] == [0.8, "inf"]
    assert len(fig["reliability"]) == 10 and sum(b["n"] for b in fig["reliability"]) == 3000
    assert [c["threshold"] for c in fig["decision_curve"]] == [round(k / 100, 2) for k in range(1, 51)]
    assert set(fig["decision_curve"][0]) == {"threshold", "net_benefit_model", "net_benefit_all"}
    few = validation_figures(y[:50], p[:50], threshold=0.3, conformal={}, n_boot=20)
    assert 1 <= len(few["reliability"]) < 10


@pytest.fixture
def figures():
    y, p = _calibrated(1500, seed=4)
    ext = validation_figures(y[:500], p[:500] ** 1.3, threshold=0.35, conformal=LEVELS, n_boot=50)
    cv = validation_figures(y[500:], p[500:], threshold=0.35, conformal=LEVELS, n_boot=50)
    return ext, cv


META = {"candidate": "xgb_register <b>", "synthetic": True, "bundle_created": "2026-11-29 12:00",
        "training_summary": "1000 patients (280 AFF)", "threshold_text": "0.35, chosen for 90 % specificity on OOF data"}


def test_write_validation_writes_the_csv_and_an_offline_html_page(tmp_path, figures):
    ext, cv = figures
    csv_path, html_path = write_validation(tmp_path, ext, cv, META)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["validation.csv", "validation.html"]  # no temp files left
    with csv_path.open() as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == CSV_COLUMNS
    auc = next(r for r in rows if r["metric"] == "auc")
    assert float(auc["external_lo"]) < float(auc["external"]) < float(auc["external_hi"])
    assert float(auc["nested_cv"]) == pytest.approx(cv["auc"])
    assert any(r["metric"] == "conformal95_coverage_aff" for r in rows)
    text = html_path.read_text()
    assert not re.search(r"\bsrc\s*=\s*['\"]?\s*https?://", text, flags=re.I)
    refs = re.findall(r"<(?:script|link|img|iframe)\b[^>]*\b(?:src|href)\s*=", text, flags=re.I)
    assert refs == []
    assert len([s for s in re.findall(r"<script[^>]*>(.*?)</script>", text, flags=re.S) if len(s) > 1_000_000]) == 1
    assert 'id="synthetic-warning"' in text and "synthetic data" in text
    assert "xgb_register &lt;b&gt;" in text and "xgb_register <b>" not in text
    for div in ("fig-reliability", "fig-decision", "fig-conformal"):
        assert f'id="{div}"' in text


def test_write_validation_without_nested_cv_or_synthetic_flag(tmp_path, figures):
    ext, _ = figures
    csv_path, html_path = write_validation(tmp_path, ext, None, {"candidate": "m", "threshold_text": "0.5"})
    with csv_path.open() as fh:
        rows = list(csv.DictReader(fh))
    assert all(r["nested_cv"] == r["nested_cv_lo"] == r["nested_cv_hi"] == "" for r in rows)
    text = html_path.read_text()
    assert "synthetic-warning" not in text
    assert "external figures only" in text
