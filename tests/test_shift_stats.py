"""Development aggregates in a bundle, the shift comparison, honest calibration intervals and the answers' wording."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest

from benchmark import load_model
from benchmark.data.cohort import Cohort
from benchmark.errors import UserError
from benchmark.export.shift_stats import check_shift_stats, development_stats, summary, window_quantile
from benchmark.export.limits import BundleFormatError
from benchmark.report.shift_compare import compare_shift, shifted
from benchmark.report.validation import validation_figures
from benchmark.report.validation_answers import caveat, validation_answers
from benchmark.tools import hostile_corpus as hc


def _cohort(register: pd.DataFrame, y=None) -> Cohort:
    n = len(register)
    cats = [c for c in register.columns if isinstance(register[c].dtype, pd.CategoricalDtype)]
    return Cohort(name="c", y=np.zeros(n, dtype=np.int8) if y is None else y, register=register, images=None,
                  keys=np.array([f"P{i + 1:05d}" for i in range(n)]), categorical=cats)


def _schema(register: pd.DataFrame) -> dict:
    from benchmark.export.schema import schema_of

    return schema_of(_cohort(register), reads_register=True, image_size=None)


def test_quantiles_are_means_of_five_patients_never_one_patients_value():
    evenly = np.arange(40, dtype=float) * 0.37 + 1.0          # the mean of 5 evenly spaced values is the middle one
    s = summary(evenly)
    for q in s["quantiles"].values():
        assert not np.isclose(evenly, q, rtol=0, atol=1e-12).any()
    assert window_quantile(np.full(20, 3.0), 0.5) == 3.0       # a value 20 patients share is no one's
    assert summary(np.arange(7.0)).keys() == {"n", "mean", "sd"}   # too few for quantiles
    assert summary(np.arange(4.0)) is None                     # too few for anything


def test_category_levels_of_fewer_than_five_patients_are_pooled_and_missing_shares_kept():
    reg = pd.DataFrame({"site": pd.Categorical(["a"] * 10 + ["b"] * 6 + ["c"] * 3 + [None]),
                        "bmi": [20.5 + i for i in range(19)] + [np.nan]})
    stats = development_stats(_cohort(reg), _schema(reg))
    site = next(r for r in stats["register"] if r["name"] == "site")
    assert site["shares"] == pytest.approx({"a": 10 / 19, "b": 6 / 19})   # c (3 patients) is not named
    assert site["missing"] == pytest.approx(0.05)
    assert json.loads(json.dumps(stats)) == check_shift_stats(json.loads(json.dumps(stats)))


def test_the_shift_names_the_moved_variable_and_not_the_noise_of_many():
    rng = np.random.default_rng(0)
    cols = {f"x{i}": rng.normal(size=1200) for i in range(60)}
    dev = pd.DataFrame(cols | {"age": rng.normal(80, 7, 1200),
                               "sex": pd.Categorical(rng.choice(["F", "M"], 1200, p=[0.7, 0.3]))})
    stats = development_stats(_cohort(dev), _schema(dev))
    new = pd.DataFrame({f"x{i}": rng.normal(size=900) for i in range(60)}
                       | {"age": rng.normal(86, 7, 900), "sex": pd.Categorical(rng.choice(["F", "M"], 900, p=[0.4, 0.6]))})
    new.loc[:200, "x3"] = np.nan                               # recorded less often here
    rows = compare_shift(stats, _cohort(new), _schema(dev))
    moved = [r["variable"] for r in shifted(rows)]
    assert moved[0] == "age" and set(moved) == {"age", "sex", "x3 (missing)"}
    age = next(r for r in rows if r["variable"] == "age")
    assert 0.7 < age["smd"] < 1.0


def test_image_measures_move_with_the_exposure(tiny_cohort):
    schema = {"register": None, "images": {"size": 16, "kinds": ["dicom", "png"], "decoding": ""}}
    stats = development_stats(tiny_cohort, schema)
    assert stats["images"]["intensity"]["n"] == len(tiny_cohort.images)
    assert stats["images"]["rows"]["mean"] > 0 and stats["images"]["views"]["mean"] == 2.0
    brighter = dataclasses.replace(tiny_cohort, _pixels={16: np.clip(tiny_cohort.pixels(16).astype(int) + 60, 0, 255)
                                                         .astype(np.uint8)})
    rows = {r["variable"]: r for r in compare_shift(stats, brighter, schema)}
    assert rows["image mean intensity"]["smd"] > 1 and rows["images per patient"]["smd"] == 0


@pytest.fixture(scope="module")
def genuine(tmp_path_factory):
    """A logistic-regression bundle of the hostile corpus (with its shift_stats.json)."""
    root = tmp_path_factory.mktemp("shift-bundle")
    data = hc.base_dataset(root)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(hc, "GENUINE", {"logreg": hc.GENUINE["logreg"]})
        return hc.genuine_bundles(root, data)["logreg"]


@pytest.mark.parametrize("name, change, fragment", [
    ("few", lambda t: t["register"][0].update(n=2), "a summary of fewer than 5 patients"),
    ("values", lambda t: t["register"][0].update(values=[1.5, 2.5]), "unexpected key 'values'"),
    ("huge", lambda t: t.update(register=[{"name": "a", "kind": "numeric", "missing": 0, "n": 0}] * 100_001),
     "at most 100,000 variables"),
    ("nan", lambda t: t["register"][0].update(mean="NaN"), "expected"),
    ("share", lambda t: next(r for r in t["register"] if r["kind"] == "categorical")["shares"].update(F=7.0),
     "outside [0, 1]"),
])
def test_a_hostile_shift_stats_file_is_refused_in_one_line(genuine, tmp_path, name, change, fragment):
    assert load_model(genuine).shift is not None
    bad = hc.variant(genuine, tmp_path / name, hc.edit_tree(change, "shift_stats.json"))
    with pytest.raises(UserError) as info:
        load_model(bad)
    assert "shift_stats.json" in str(info.value) and fragment in str(info.value) and "\n" not in str(info.value)


def test_a_hostile_update_or_history_is_refused_in_one_line(genuine, tmp_path):
    def huge_slope(tree):
        tree["update"] = {"kind": "intercept", "intercept": 0.0, "slope": 1e9}

    with pytest.raises(UserError, match="update.slope"):
        load_model(hc.variant(genuine, tmp_path / "slope", hc.edit_tree(huge_slope)))

    def history(b):
        man = json.loads((b / "bundle.json").read_text())
        man["meta"]["updates"] = [{"kind": "intercept", "site": "x" * 50}]
        (b / "bundle.json").write_text(json.dumps(man))

    with pytest.raises(UserError, match="meta.updates"):
        load_model(hc.variant(genuine, tmp_path / "history", history))
    with pytest.raises(BundleFormatError, match="format"):
        check_shift_stats({"format": 9, "register": [], "images": None})


def test_the_oe_interval_covers_the_truth_about_95_percent_of_the_time():
    """A bootstrap that keeps the class sizes holds the events fixed: its O/E intervals covered ~30 %."""
    rng = np.random.default_rng(7)
    covered = {"oe_ratio": 0, "citl": 0, "cal_slope": 0}
    truth = {"oe_ratio": 1.0, "citl": 0.0, "cal_slope": 1.0}
    for _ in range(60):
        p = rng.beta(1, 10, 600)
        y = (rng.random(600) < p).astype(int)
        fig = validation_figures(y, p, threshold=0.3, conformal={}, n_boot=100, seed=0)
        for k in covered:
            covered[k] += fig[f"{k}_lo"] <= truth[k] <= fig[f"{k}_hi"]
    assert all(c >= 51 for c in covered.values()), covered        # >= 85 % of 60


def test_the_calibration_slope_of_an_overconfident_model_with_wide_logits_is_estimated():
    """Newton's method from slope 1 overshoots on such data; the fit halves its steps instead (it was NaN)."""
    from scipy.special import expit

    rng = np.random.default_rng(11)
    z = rng.normal(-3, 3, 400)
    y = (rng.random(400) < expit(2.0 + 0.5 * z)).astype(int)      # the truth: intercept 2, slope 0.5
    fig = validation_figures(y, expit(z), threshold=0.5, conformal={}, n_boot=50)
    assert fig["cal_slope_lo"] < 0.5 < fig["cal_slope_hi"] and fig["cal_slope_hi"] < 0.75


def _fig(auc, lo, hi, **kw):
    base = {"auc": auc, "auc_lo": lo, "auc_hi": hi, "n": 1000, "n_pos": 90, "prevalence": 0.09, "mean_prob": 0.09,
            "oe_ratio": 1.0, "oe_ratio_lo": 0.85, "oe_ratio_hi": 1.2, "citl": 0.0, "citl_lo": -0.2, "citl_hi": 0.2,
            "cal_slope": 1.0, "cal_slope_lo": 0.8, "cal_slope_hi": 1.2, "threshold": 0.2,
            "sensitivity": 0.7, "sensitivity_lo": 0.6, "sensitivity_hi": 0.8,
            "specificity": 0.9, "specificity_lo": 0.88, "specificity_hi": 0.92,
            "conformal": {"90": {"coverage_aff": 0.9, "coverage_nff": 0.91, "singleton_rate": 0.6}}}
    return base | kw


def test_the_answers_say_what_the_intervals_allow():
    cv = _fig(0.82, 0.80, 0.84, prevalence=0.05)
    same = {a.key: a.text for a in validation_answers(_fig(0.84, 0.78, 0.90), cv)}
    assert same["discrimination"].startswith("As well as") and "includes 0" in same["discrimination"]
    assert same["calibration"].startswith("Yes") and same["conformal"].startswith("Yes")
    worse = _fig(0.70, 0.65, 0.75, oe_ratio=0.76, oe_ratio_lo=0.62, oe_ratio_hi=0.93,
                 conformal={"90": {"coverage_aff": 0.70, "coverage_nff": 0.91, "singleton_rate": 0.6}})
    row = {"kind": "numeric", "p": 1e-9, "p_holm": 1e-8, "shifted": True, "development": "", "new": ""}
    moved = [row | {"variable": "dx_A01", "smd": 0.9, "counterfactual_mean": 0.0901, "effect": 0.0001},
             row | {"variable": "age", "smd": 0.72, "counterfactual_mean": 0.12, "effect": 0.03},
             row | {"variable": "image mean intensity", "kind": "image", "smd": 0.4}]
    text = {a.key: a.text for a in validation_answers(worse, cv, moved)}
    assert text["discrimination"].startswith("Worse here")
    assert "predicts 32 % too many AFF" in text["calibration"]                 # 1 / 0.76 - 1
    assert "9.0 % of the patients here against 5.0 %" in text["calibration"]
    assert "predictions: age (SMD +0.72" in text["calibration"] and "dx_A01" not in text["calibration"]
    assert "the images differ too: image mean intensity" in text["calibration"]
    assert text["shift"].index("age") < text["shift"].index("image mean") < text["shift"].index("dx_A01")
    untried = {a.key: a.text for a in validation_answers(worse, cv, [moved[0] | {"effect": float("nan")}])}
    assert "the inputs that moved most: dx_A01" in untried["calibration"]       # an image-only model: by size
    assert text["conformal"].startswith("Not for AFF")
    assert "mean nothing" in caveat(worse, {"profile": "smoke"})
    assert "only 12 AFF" in caveat({"n_pos": 12}, {"profile": "paper"})
